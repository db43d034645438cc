"""`refresh-crl` end to end on real masters (Puppet 5.5 in PE 3.7's layout, Puppet Server 7 and 8): a CRL
due in days, holding an entry Puppet itself revoked, is re-signed for its full new period with the
same entries; a fault after the re-signing rolls the master back byte for byte; the agent still runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conftest import describe, fab_on, failing_command
from pe_remote.commands.certs import pem_blocks
from pe_remote.commands.shell import join

pytestmark = pytest.mark.container
AGENT = "old-agent.pe-remote.test"

# Puppet's own way, per generation, to sign and then revoke an agent's cert.
REVOKE = {
    "pe37": lambda layout: f"{layout.puppet} cert generate {AGENT} >/dev/null && {layout.puppet} cert revoke {AGENT}",
    "oss7": lambda layout: f"puppetserver ca generate --certname {AGENT} >/dev/null && "
                           f"puppetserver ca revoke --certname {AGENT}",
}
REVOKE["oss8"] = REVOKE["oss7"]
# Puppet Server 8 re-signs a CRL near its end by itself when it starts: after a rollback (which starts
# it) the CRLs are its new ones, the rest byte for byte.
RENEWS_ITS_OWN_CRL = {"oss8"}

# Test setup, not a stand-in for a Puppet command (Puppet has none that sets a CRL's end date): the CA's
# CRL re-signed, unchanged otherwise, to end in 3 days, as a CRL issued long ago would.
NEAR_END = r'''
require "openssl"
path, key = ARGV
blocks = File.read(path).scan(/-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n?/m)
crl = OpenSSL::X509::CRL.new(blocks[0])
crl.next_update = Time.now + 3 * 86400
crl.sign(OpenSSL::PKey.read(File.read(key)), OpenSSL::Digest.new("SHA256"))
File.write(path, crl.to_pem + blocks.drop(1).join)
'''


def _crls(master, path: str) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(block) for block in pem_blocks(master.check(f"cat {path}").encode(), b"X509 CRL")]


def _without_crls(checksums: str) -> list[str]:
    return [line for line in checksums.splitlines() if not line.endswith("crl.pem")]


def _number(crl) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.mark.parametrize("fresh_master", ["pe37", "oss7", "oss8"], indirect=True)
def test_refresh_crl_renews_a_crl_due_in_days_and_rolls_back_on_a_fault(fresh_master, tmp_path):
    master, layout = fresh_master, fresh_master.flavor
    ca_crl, host_crl, ca_key = f"{layout.cadir}/ca_crl.pem", f"{layout.ssldir}/crl.pem", f"{layout.cadir}/ca_key.pem"
    master.check(REVOKE[layout.name](layout))
    master.check(f"/usr/bin/ruby -e {join([NEAR_END])} {join([ca_crl, ca_key])} && cat {ca_crl} > {host_crl}")
    before = _crls(master, ca_crl)
    revoked = {entry.serial_number for entry in before[0]}
    assert revoked, "Puppet's revoke left no entry in the CRL"
    assert before[0].next_update_utc < datetime.now(timezone.utc) + timedelta(days=4)

    proc = fab_on(master, "verify")
    assert proc.returncode == 9 and "CA CRL" in proc.stderr and "ends in 3 days" in proc.stderr, describe(proc)

    # A fault after the CRL was re-signed (the copy's check cannot pass): rolled back, byte for byte.
    checksums = master.ssl_checksums()
    with failing_command(master, "cmp"):
        proc = fab_on(master, "refresh-crl", "--yes", "--backup-dir", str(tmp_path / "b1"))
    assert proc.returncode == 7 and "rolled back" in proc.stderr and "Copy it to the host" in proc.stderr, \
        describe(proc)
    if layout.name in RENEWS_ITS_OWN_CRL:
        # Byte for byte but the CRLs, which the server re-signed itself when the rollback started it.
        assert _without_crls(master.ssl_checksums()) == _without_crls(checksums)
        renewed = _crls(master, ca_crl)[0]
        assert {e.serial_number for e in renewed} == revoked and _number(renewed) > _number(before[0])
        before = _crls(master, ca_crl)
    else:
        assert master.ssl_checksums() == checksums

    proc = fab_on(master, "refresh-crl", "--yes", "--backup-dir", str(tmp_path / "b2"))
    assert proc.returncode == 0, describe(proc)
    assert f"{len(revoked)} entries kept" in proc.stdout + proc.stderr
    after = _crls(master, ca_crl)
    new, ca = after[0], x509.load_pem_x509_certificate(pem_blocks(master.check(f"cat {layout.cadir}/ca_crt.pem")
                                                                  .encode())[0])
    assert new.is_signature_valid(ca.public_key()) and new.issuer == before[0].issuer
    assert {e.serial_number for e in new} == revoked
    assert _number(new) == _number(before[0]) + 1
    assert new.next_update_utc > datetime.now(timezone.utc) + timedelta(days=5 * 365 - 1)
    # The root CA's CRL (Puppet 6+ keeps it after the signing CA's) is kept byte for byte.
    assert [c.fingerprint(hashes.SHA256()) for c in after[1:]] == [c.fingerprint(hashes.SHA256()) for c in before[1:]]
    assert master.check(f"cat {host_crl}") == master.check(f"cat {ca_crl}")
    # Asked as an agent asks, with a cert (Puppet 5's auth.conf refuses the CRL to anonymous clients).
    served = master.check(f"curl -sk --cert {layout.hostcert(master.certname)} "
                          f"--key {layout.ssldir}/private_keys/{master.certname}.pem "
                          "'https://127.0.0.1:8140/puppet-ca/v1/certificate_revocation_list/ca?environment=production'")
    served_crl = x509.load_pem_x509_crl(pem_blocks(served.encode(), b"X509 CRL")[0])
    assert served_crl.fingerprint(hashes.SHA256()) == new.fingerprint(hashes.SHA256())
    code, out = master.agent_run()
    assert code in (0, 2), out[-2000:]
    proc = fab_on(master, "verify")
    assert proc.returncode == 0, describe(proc)
