"""Unit tests: end dates read from the PEM files themselves (parsed here with `cryptography`)."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pe_remote.expiry import dated_files_command, expiry_problems, read_dates, render_dates
from test_unit_trust import RECORDED

NOW = datetime.now(timezone.utc)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn, issuer_key, key, days, issuer_cn=None):
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn or cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=days))
            .sign(issuer_key, hashes.SHA256()))


def _crl(issuer_cn, key, days):
    return (x509.CertificateRevocationListBuilder().issuer_name(_name(issuer_cn))
            .last_update(NOW - timedelta(days=30)).next_update(NOW + timedelta(days=days))
            .sign(key, hashes.SHA256()))


def _pem(*objects) -> bytes:
    return b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objects)


def _master(tmp_path):
    """A Puppet 6+-style CA (root + intermediate) whose intermediate ends in 10 days."""
    ssl, ca = tmp_path / "lib" / "ssl", tmp_path / "lib" / "ca"
    (ssl / "certs").mkdir(parents=True)
    ca.mkdir(parents=True)
    root_key, int_key, host_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Puppet Root CA: x", root_key, root_key, 5000)
    intermediate = _cert("Puppet CA: x", root_key, int_key, 10, issuer_cn="Puppet Root CA: x")
    host = _cert(RECORDED.certname, int_key, host_key, 400, issuer_cn="Puppet CA: x")
    (ca / "ca_crt.pem").write_bytes(_pem(intermediate, root))
    (ca / "ca_crl.pem").write_bytes(_pem(_crl("Puppet CA: x", int_key, 30), _crl("Puppet Root CA: x", root_key, 300)))
    (ssl / "crl.pem").write_bytes(_pem(_crl("Puppet CA: x", int_key, -1)))  # a stale copy: already past
    (ssl / "certs" / f"{RECORDED.certname}.pem").write_bytes(_pem(host))
    return dataclasses.replace(RECORDED, ssldir=str(ssl), cadir=str(ca),
                               hostcert=f"{ssl}/certs/{RECORDED.certname}.pem")


def _read(facts):
    out = subprocess.run(["sh", "-c", dated_files_command(facts)], capture_output=True, text=True).stdout
    return read_dates(out, facts)


def test_every_cert_of_the_bundle_and_every_crl_is_dated(tmp_path):
    facts = _master(tmp_path)
    dates = {d.what: d for d in _read(facts)}
    assert set(dates) == {"master cert", "CA cert (Puppet CA: x)", "CA cert (Puppet Root CA: x)",
                          "CA CRL (Puppet CA: x)", "CA CRL (Puppet Root CA: x)", "host CRL (Puppet CA: x)"}
    assert round(dates["CA cert (Puppet CA: x)"].days_left(NOW)) == 10
    assert dates["host CRL (Puppet CA: x)"].status(NOW, 90) == "EXPIRED"


def test_what_ends_soon_or_has_ended_is_named(tmp_path):
    dates = _read(_master(tmp_path))
    problems = expiry_problems(dates, NOW, 90)
    assert any(p.startswith("the CA cert (Puppet CA: x) ends in 10 days") for p in problems), problems
    assert any(p.startswith("the CA CRL (Puppet CA: x) ends in 30 days") for p in problems)
    assert any(p.startswith("the host CRL (Puppet CA: x) EXPIRED") for p in problems)
    assert not any("master cert" in p or "Root" in p for p in problems)
    assert len(expiry_problems(dates, NOW, 5)) == 1  # only the expired one


def test_absent_or_damaged_files_are_left_out(tmp_path):
    facts = _master(tmp_path)
    (tmp_path / "lib" / "ssl" / "crl.pem").unlink()
    (tmp_path / "lib" / "ca" / "ca_crl.pem").write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    whats = {d.what for d in _read(facts)}
    assert not any("CRL" in w for w in whats) and "master cert" in whats


def test_the_table_lists_each_date(tmp_path):
    table = render_dates("m", _read(_master(tmp_path)), NOW, 90)
    assert "CA cert (Puppet CA: x)" in table and "WARN" in table and "EXPIRED" in table
