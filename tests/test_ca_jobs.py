"""`refresh-crl` and `extend-ca` end to end on real masters (Puppet 5.5 in PE 3.7's layout, Puppet Server 7
and 8), one master per generation for both jobs: its CA made by Puppet's own commands to end in 10 days, an
entry Puppet itself revoked, a CRL due in 3 days, and an agent host (its Debian suite's own puppet agent)
enrolled by the master's CA.

- `verify` names the CA cert and the CRL (exit 9);
- refresh-crl cut off after the re-signing (exit 8), then `--rollback`: the old files are back;
- refresh-crl: a CRL valid for its full new period, the same entries, number + 1, served on 8140;
- extend-ca with a fault after the renewal: rolled back, byte for byte;
- extend-ca cut off after the renewal (exit 8), then resumed by the next `extend-ca --agents`: the same keys
  and subjects for 15 years, the CRL valid, an agent that trusts only the OLD bundle still runs, and the
  agent host holds the new bundle (its old one kept aside) and runs against the master.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import cut_when, describe, fab_on, failing_command, journalled
from pe_remote.commands.certs import pem_blocks
from pe_remote.commands.shell import join
from pe_remote.testing.master import serving_check

pytestmark = pytest.mark.container
ALT = "puppet,puppet.pe-remote.test"
REVOKED_AGENT = "old-agent.pe-remote.test"

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


def _short_lived_ca(master) -> None:
    """A new CA, made by the generation's own command, that ends in 10 days (Puppet's ca_ttl)."""
    layout = master.flavor
    wait = f"for i in $(seq 120); do {serving_check(master)} && break; sleep 1; done"
    if layout.name == "pe37":
        master.check(f"systemctl stop pe-puppet pe-puppetserver && rm -rf {layout.ssldir} && "
                     f"{layout.puppet} cert generate {master.certname} --dns_alt_names={ALT} --ca_ttl 10d >/dev/null && "
                     f"systemctl start pe-puppetserver && {wait} && systemctl start pe-puppet")
    else:
        master.check(f"systemctl stop puppet puppetserver && rm -rf {layout.cadir} {layout.ssldir} && "
                     f"puppet config set ca_ttl 10d --section server && "
                     f"puppetserver ca setup --certname {master.certname} --subject-alt-names {ALT} >/dev/null && "
                     f"puppet config delete ca_ttl --section server && "
                     f"systemctl start puppetserver && {wait} && systemctl start puppet")


def _revoke_one(master) -> None:
    """Puppet's own way, per generation, to sign and then revoke an agent's cert."""
    layout = master.flavor
    master.check(layout.ca_generate.format(puppet=layout.puppet, certname=REVOKED_AGENT) + " >/dev/null && " +
                 (f"{layout.puppet} cert revoke {REVOKED_AGENT}" if layout.name == "pe37" else
                  f"puppetserver ca revoke --certname {REVOKED_AGENT}"))


def _bundle(master) -> list[x509.Certificate]:
    text = master.check(f"cat {master.flavor.cadir}/ca_crt.pem").encode()
    return [x509.load_pem_x509_certificate(block) for block in pem_blocks(text)]


def _crls(master, path: str) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(block) for block in pem_blocks(master.check(f"cat {path}").encode(), b"X509 CRL")]


def _spki(cert) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _number(crl) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _without_crls(checksums: str) -> list[str]:
    return [line for line in checksums.splitlines() if not line.endswith("crl.pem")]


def _cut_after(master, task: str, step: str, backup_dir) -> str:
    """Run `task` and cut its SSH connection once its step `step` is journalled done: exit 8, the
    journal kept."""
    with cut_when(master, journalled(step)):
        proc = fab_on(master, task, "--yes", "--backup-dir", str(backup_dir))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 8, describe(proc)
    assert f"Run `{task}` again on it to resume" in out and f"`{task} --rollback`" in out, describe(proc)
    return out


@pytest.mark.parametrize("fresh_master", ["pe37", "oss7", "oss8"], indirect=True)
def test_refresh_crl_and_extend_ca_on_a_ca_ending_in_days(fresh_master, agent_factory, tmp_path):
    master, layout = fresh_master, fresh_master.flavor
    ca_crl, host_crl, ca_key = f"{layout.cadir}/ca_crl.pem", f"{layout.ssldir}/crl.pem", f"{layout.cadir}/ca_key.pem"
    _short_lived_ca(master)
    agent = agent_factory(master)
    code, out = agent.agent_run()
    assert code in (0, 2), out[-2000:]
    with open(master.known_hosts_path, "a") as known_hosts:  # the agent host's key, known as the master's is
        known_hosts.write(agent.known_hosts_line + "\n")
    _revoke_one(master)
    master.check(f"/usr/bin/ruby -e {join([NEAR_END])} {join([ca_crl, ca_key])} && cat {ca_crl} > {host_crl}")
    crls_before = _crls(master, ca_crl)
    revoked = {entry.serial_number for entry in crls_before[0]}
    assert revoked, "Puppet's revoke left no entry in the CRL"
    bundle_before = _bundle(master)
    soon = datetime.now(timezone.utc) + timedelta(days=11)
    assert all(c.not_valid_after_utc < soon for c in bundle_before)
    assert crls_before[0].next_update_utc < datetime.now(timezone.utc) + timedelta(days=4)

    proc = fab_on(master, "verify")
    assert proc.returncode == 9, describe(proc)
    assert "CA cert" in proc.stderr and "CA CRL" in proc.stderr and "ends in 3 days" in proc.stderr, describe(proc)

    # refresh-crl cut off after the re-signing, then rolled back from its journal: the old files again.
    checksums = master.ssl_checksums()
    _cut_after(master, "refresh-crl", "resign-crl", tmp_path / "b1")
    proc = fab_on(master, "refresh-crl", "--yes", "--rollback", "--backup-dir", str(tmp_path / "b1"))
    assert proc.returncode == 7 and "rolled back" in proc.stderr, describe(proc)
    assert "Found an unfinished run" in proc.stdout and "of `refresh-crl`" in proc.stdout, describe(proc)
    if layout.name in RENEWS_ITS_OWN_CRL:
        # Byte for byte but the CRLs, which the server re-signed itself when the rollback started it.
        assert _without_crls(master.ssl_checksums()) == _without_crls(checksums)
        renewed = _crls(master, ca_crl)[0]
        assert {e.serial_number for e in renewed} == revoked and _number(renewed) > _number(crls_before[0])
        crls_before = _crls(master, ca_crl)
    else:
        assert master.ssl_checksums() == checksums

    # refresh-crl: valid for its full new period, the same entries, number + 1, served.
    proc = fab_on(master, "refresh-crl", "--yes", "--backup-dir", str(tmp_path / "b2"))
    assert proc.returncode == 0, describe(proc)
    assert f"{len(revoked)} entries kept" in proc.stdout + proc.stderr
    after = _crls(master, ca_crl)
    new = after[0]
    assert new.is_signature_valid(bundle_before[0].public_key()) and new.issuer == crls_before[0].issuer
    assert {e.serial_number for e in new} == revoked and _number(new) == _number(crls_before[0]) + 1
    assert new.next_update_utc > datetime.now(timezone.utc) + timedelta(days=5 * 365 - 1)
    # The root CA's CRL (Puppet 6+ keeps it after the signing CA's, and it ends too) is renewed by the root
    # CA's key beside the CA's: the same entries, number + 1, the same new period.
    assert len(after) == len(crls_before)
    for old, renewed in zip(crls_before[1:], after[1:]):
        root = next(c for c in bundle_before if c.subject == old.issuer)
        assert renewed.is_signature_valid(root.public_key()) and renewed.issuer == old.issuer
        assert {e.serial_number for e in renewed} == {e.serial_number for e in old}
        assert _number(renewed) == _number(old) + 1
        assert renewed.next_update_utc > datetime.now(timezone.utc) + timedelta(days=5 * 365 - 1)
    assert master.check(f"cat {host_crl}") == master.check(f"cat {ca_crl}")
    # Asked as an agent asks, with a cert (Puppet 5's auth.conf refuses the CRL to anonymous clients).
    served = master.check(f"curl -sk --cert {layout.hostcert(master.certname)} "
                          f"--key {layout.ssldir}/private_keys/{master.certname}.pem "
                          "'https://127.0.0.1:8140/puppet-ca/v1/certificate_revocation_list/ca?environment=production'")
    served_crl = x509.load_pem_x509_crl(pem_blocks(served.encode(), b"X509 CRL")[0])
    assert served_crl.fingerprint(hashes.SHA256()) == new.fingerprint(hashes.SHA256())

    # extend-ca with a fault after the renewal (the bundle's copy to the host cannot be checked): rolled back.
    checksums = master.ssl_checksums()
    with failing_command(master, "cmp"):
        proc = fab_on(master, "extend-ca", "--yes", "--backup-dir", str(tmp_path / "b3"))
    assert proc.returncode == 7 and "rolled back" in proc.stderr, describe(proc)
    assert master.ssl_checksums() == checksums

    # extend-ca cut off after the renewal, then resumed by the next run, which also pushes to the agent.
    old_agent_bundle = agent.check(f"cat {agent.ssldir}/certs/ca.pem")
    _cut_after(master, "extend-ca", "copy-host-ca", tmp_path / "b4")
    proc = fab_on(master, "extend-ca", "--yes", "--backup-dir", str(tmp_path / "b4"), "--agents", agent.target)
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout + proc.stderr
    assert "Found an unfinished run" in out and "Resuming" in out and "Renewed the CA cert" in out, describe(proc)
    assert len(list((tmp_path / "b4").rglob("*.tar.gz"))) == 1, "a resume takes no second backup"
    bundle_after = _bundle(master)
    assert len(bundle_after) == len(bundle_before)
    for old, renewed in zip(bundle_before, bundle_after):
        assert (renewed.subject, renewed.serial_number, _spki(renewed)) == (old.subject, old.serial_number, _spki(old))
        assert list(renewed.extensions) == list(old.extensions)
        assert renewed.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=14 * 365)
        renewed.verify_directly_issued_by(next(c for c in bundle_after if c.subject == renewed.issuer))
        assert renewed.fingerprint(hashes.SHA256()) != old.fingerprint(hashes.SHA256())
    new_bundle = master.check(f"cat {layout.cadir}/ca_crt.pem")
    assert master.check(f"cat {layout.ssldir}/certs/ca.pem") == new_bundle
    x509.load_pem_x509_certificate(master.check(f"cat {layout.hostcert(master.certname)}").encode()) \
        .verify_directly_issued_by(bundle_after[0])
    crl = _crls(master, ca_crl)[0]
    assert crl.is_signature_valid(bundle_after[0].public_key())
    assert crl.next_update_utc > datetime.now(timezone.utc) + timedelta(days=4 * 365)
    # An agent that still holds the OLD CA cert runs against the master (the tool ran one too).
    master.check(f"printf '%s' {join([''.join(c.public_bytes(serialization.Encoding.PEM).decode() for c in bundle_before)])}"
                 " > /root/old-ca.pem")
    code, out = master.exec(f"{layout.puppet} agent -t --noop --localcacert /root/old-ca.pem 2>&1")
    assert code in (0, 2), out[-2000:]
    # The agent host holds the new bundle, its old one kept aside, and runs against the master with it.
    assert "updated" in proc.stdout + proc.stderr and agent.target.split("@")[1] in proc.stdout + proc.stderr
    assert agent.check(f"cat {agent.ssldir}/certs/ca.pem") == new_bundle
    kept = agent.check(f"ls {agent.ssldir}/certs/ | grep '^ca.pem.pe-remote-'").split()
    assert len(kept) == 1 and agent.check(f"cat {agent.ssldir}/certs/{kept[0]}") == old_agent_bundle
    assert agent.check(f"stat -c %a {agent.ssldir}/certs/ca.pem").strip() == "644"
    code, out = agent.agent_run()
    assert code in (0, 2), out[-2000:]
    proc = fab_on(master, "verify")
    assert proc.returncode in (0, 9), describe(proc)
    assert "CA cert" not in proc.stderr and "CA CRL" not in proc.stderr, describe(proc)
