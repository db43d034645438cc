"""`extend-ca` end to end on real masters (Puppet 5.5 in PE 3.7's layout, Puppet Server 7 and 8) whose CA
was made by Puppet's own commands to end in 10 days: the CA certs are renewed with the same keys and
subjects for 15 years, the master serves, an agent that trusts only the OLD CA cert still runs, the CRL
is valid; a fault after the renewal rolls the master back to the old CA cert byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import describe, fab_on, failing_command
from pe_remote.commands.certs import pem_blocks
from pe_remote.testing.master import serving_check

pytestmark = pytest.mark.container
ALT = "puppet,puppet.pe-remote.test"


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


def _bundle(master) -> list[x509.Certificate]:
    text = master.check(f"cat {master.flavor.cadir}/ca_crt.pem").encode()
    return [x509.load_pem_x509_certificate(block) for block in pem_blocks(text)]


def _spki(cert) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("fresh_master", ["pe37", "oss7", "oss8"], indirect=True)
def test_extend_ca_renews_a_ca_ending_in_days_and_rolls_back_on_a_fault(fresh_master, tmp_path):
    master, layout = fresh_master, fresh_master.flavor
    _short_lived_ca(master)
    before = _bundle(master)
    assert all(c.not_valid_after_utc < datetime.now(timezone.utc) + timedelta(days=11) for c in before)

    proc = fab_on(master, "verify")
    assert proc.returncode == 9 and "CA cert" in proc.stderr and "ends in" in proc.stderr, describe(proc)

    # A fault after the renewal (copying the bundle to the host's copy cannot be checked): rolled back.
    checksums = master.ssl_checksums()
    with failing_command(master, "cmp"):
        proc = fab_on(master, "extend-ca", "--yes", "--backup-dir", str(tmp_path / "b1"))
    assert proc.returncode == 7 and "rolled back" in proc.stderr, describe(proc)
    assert master.ssl_checksums() == checksums

    proc = fab_on(master, "extend-ca", "--yes", "--backup-dir", str(tmp_path / "b2"))
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout + proc.stderr
    assert "Renewed the CA cert" in out and "Agents:" in out
    after = _bundle(master)
    assert len(after) == len(before)
    for old, new in zip(before, after):
        assert (new.subject, new.serial_number, _spki(new)) == (old.subject, old.serial_number, _spki(old))
        assert list(new.extensions) == list(old.extensions)
        assert new.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=14 * 365)
        issuer = next(c for c in after if c.subject == new.issuer)
        new.verify_directly_issued_by(issuer)
        assert new.fingerprint(hashes.SHA256()) != old.fingerprint(hashes.SHA256())
    assert master.check(f"cat {layout.ssldir}/certs/ca.pem") == master.check(f"cat {layout.cadir}/ca_crt.pem")
    hostcert = x509.load_pem_x509_certificate(master.check(f"cat {layout.hostcert(master.certname)}").encode())
    hostcert.verify_directly_issued_by(after[0])
    # The CRL still verifies against the new CA cert (same key), re-signed with a fresh end date.
    crl = x509.load_pem_x509_crl(pem_blocks(master.check(f"cat {layout.cadir}/ca_crl.pem").encode(), b"X509 CRL")[0])
    assert crl.is_signature_valid(after[0].public_key())
    assert crl.next_update_utc > datetime.now(timezone.utc) + timedelta(days=4 * 365)
    # An agent that still holds the OLD CA cert runs against the master (the tool ran one too).
    master.check(f"printf '%s' '{''.join(c.public_bytes(serialization.Encoding.PEM).decode() for c in before)}' "
                 "> /root/old-ca.pem")
    code, out = master.exec(f"{layout.puppet} agent -t --noop --localcacert /root/old-ca.pem 2>&1")
    assert code in (0, 2), out[-2000:]
    proc = fab_on(master, "verify")
    assert proc.returncode in (0, 9), describe(proc)
    assert "CA cert" not in proc.stderr, describe(proc)  # what is left to name is the 10-day master cert
