"""Certificates, public keys and CRLs, parsed here from their PEM bytes with `cryptography`
(installed with paramiko), never by scraping `openssl -text` on the master: that text differs
between OpenSSL 1.0, 1.1 and 3 (IPv6 addresses, field names, spacing)."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass

from pe_remote.errors import UnreadableCert

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says."""

    serial: str  # upper-case hex, no leading zeros
    subject: str  # RFC 4514
    issuer: str
    not_after: str  # as openssl prints it: "Nov 24 00:38:59 2041 GMT"
    sha256: str  # colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it
    sans: frozenset[str]  # "DNS:name", "IP:address" (canonical form)
    pubkey_sha256: str = ""  # sha256 hex of the SubjectPublicKeyInfo (DER)


def pem_blocks(data: bytes, kind: bytes = b"CERTIFICATE") -> list[bytes]:
    return [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == kind]


def serial_text(number: int) -> str:
    return f"{number:X}"


def fingerprint(cert) -> str:
    from cryptography.hazmat.primitives import hashes

    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _spki_sha256(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return sha256_hex(public_key.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def san_entry_of(general_name) -> str | None:
    from cryptography import x509

    if isinstance(general_name, x509.DNSName):
        return f"DNS:{general_name.value}"
    if isinstance(general_name, x509.IPAddress):
        return f"IP:{general_name.value}"
    return None


def normalize_san(entry: str) -> str:
    """A SAN entry in this module's form, also from openssl's text ("IP Address:0:0:0:0:0:0:0:1")."""
    kind, _, value = entry.partition(":")
    if kind.strip() in ("IP", "IP Address"):
        try:
            return f"IP:{ipaddress.ip_address(value.strip())}"
        except ValueError:
            return entry
    return entry.strip()


def load_pem_cert(block: bytes):
    """One PEM certificate block, or None where it is not one cryptography can load (a malformed one,
    or one of an X.509 version that does not exist: InvalidVersion is no ValueError)."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(block)
    except (ValueError, x509.InvalidVersion):
        return None


def load_certs(data: bytes):
    """Every certificate in `data` (PEM) that cryptography can load, in order (lazily)."""
    return filter(None, map(load_pem_cert, pem_blocks(data)))


def load_cert(data: bytes):
    """The first certificate in `data` (PEM), or None."""
    return next(load_certs(data), None)


@contextlib.contextmanager
def _reading(what: str):
    """`cryptography` parses a cert's parts when they are first read: one it cannot read (a malformed
    extension, an unknown key type) is an UnreadableCert naming `what`, not a traceback."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        yield
    # The two x509 errors are not ValueErrors: a cert with one extension twice, a SAN of a name type
    # cryptography does not read (x400Address, EDIPartyName).
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UnreadableCert(f"{what} cannot be read ({why}); replace it on the master, or put a backup back") \
            from None


def cert_info(cert) -> CertInfo:
    from cryptography import x509

    with _reading(f"the cert with serial {serial_text(cert.serial_number)}"):
        try:
            extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans = frozenset(e for e in map(san_entry_of, extension.value) if e)
        except x509.ExtensionNotFound:
            sans = frozenset()
        ends = cert.not_valid_after_utc
        return CertInfo(serial=serial_text(cert.serial_number), subject=cert.subject.rfc4514_string(),
                        issuer=cert.issuer.rfc4514_string(),
                        not_after=f"{ends:%b} {ends.day:2d} {ends:%H:%M:%S %Y} GMT",
                        sha256=fingerprint(cert), sans=sans, pubkey_sha256=_spki_sha256(cert.public_key()))


def read_cert(data: bytes) -> CertInfo | None:
    cert = load_cert(data)
    return cert_info(cert) if cert is not None else None


def public_key_sha256(data: bytes) -> str:
    """sha256 of the public key in `data` (PEM `PUBLIC KEY`), "" when there is none."""
    from cryptography.hazmat.primitives import serialization

    for block in pem_blocks(data, b"PUBLIC KEY"):
        try:
            return _spki_sha256(serialization.load_pem_public_key(block))
        except ValueError:
            continue
    return ""


def crl_serials(data: bytes) -> frozenset[str] | None:
    """The serials the first CRL in `data` revokes (None: no readable CRL)."""
    crls = read_crls(data)
    return crls[0].serials if crls else None


def common_name(name) -> str:
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


@dataclass(frozen=True)
class CrlInfo:
    """What a CRL says, and whether the CA cert given signed it."""

    issuer: str
    number: int | None
    last_update: object  # datetime (UTC)
    next_update: object  # datetime (UTC) or None
    entries: frozenset[tuple[str, str]]  # (serial, revocation date ISO)
    signed_by_ca: bool
    der_sha256: str

    @property
    def serials(self) -> frozenset[str]:
        return frozenset(serial for serial, _ in self.entries)


def read_crls(data: bytes, ca_cert_pem: bytes = b"") -> list[CrlInfo]:
    """Every CRL in `data` (PEM), each checked against the first cert of `ca_cert_pem` that names its issuer."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cas = list(load_certs(ca_cert_pem))
    found = []
    for block in pem_blocks(data, b"X509 CRL"):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError:
            continue
        with _reading("a CRL"):
            try:
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            except x509.ExtensionNotFound:
                number = None
            issuer = next((ca for ca in cas if ca.subject == crl.issuer), None)
            signed = False
            if issuer is not None:
                try:
                    signed = crl.is_signature_valid(issuer.public_key())
                except (TypeError, ValueError):
                    signed = False
            entries = frozenset((serial_text(e.serial_number), e.revocation_date_utc.isoformat()) for e in crl)
            found.append(CrlInfo(crl.issuer.rfc4514_string(), number, crl.last_update_utc, crl.next_update_utc,
                                 entries, signed,
                                 hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest()))
    return found


@dataclass(frozen=True)
class CaCertInfo:
    """One cert of a CA bundle: what must stay the same when it is renewed, and its end."""

    subject: str
    serial: str
    pubkey_sha256: str
    extensions: tuple[tuple[str, bool, bytes], ...]  # (oid, critical, DER value)
    not_after: object  # datetime (UTC)
    sha256: str
    issued_by_bundle: bool  # its signature verifies with its issuer's key (itself, for a root)


def read_bundle(data: bytes) -> list[CaCertInfo]:
    """Every cert of a CA bundle (PEM), each checked against its issuer in the same bundle."""
    certs = list(load_certs(data))
    found = []
    for cert in certs:
        with _reading(f"the CA cert with serial {serial_text(cert.serial_number)}"):
            issuer = next((c for c in certs if c.subject == cert.issuer), None)
            issued = issuer is not None and _verifies(cert, issuer)
            extensions = tuple((e.oid.dotted_string, e.critical, e.value.public_bytes()) for e in cert.extensions)
            found.append(CaCertInfo(cert.subject.rfc4514_string(), serial_text(cert.serial_number),
                                    _spki_sha256(cert.public_key()), extensions, cert.not_valid_after_utc,
                                    fingerprint(cert), issued))
    return found


def issued_by(cert_pem: bytes, issuer_pem: bytes) -> bool:
    """Whether the first cert of `cert_pem` verifies with the first cert of `issuer_pem`."""
    cert, issuer = load_cert(cert_pem), load_cert(issuer_pem)
    return cert is not None and issuer is not None and _verifies(cert, issuer)


def _verifies(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: not issued by it
        return False
