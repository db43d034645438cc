"""Remote facts, each a command beside its parser: the master's cert and key, the cert served on
8140, the CA's CRL, the state of services. Discovery, verification and restore compose them."""

from __future__ import annotations

from pe_remote.commands.certs import CertInfo, crl_serials, public_key_sha256, read_cert
from pe_remote.commands.sections import decoded, encoded, file_encoded, mark
from pe_remote.commands.shell import q


def _cert_with_key(name: str, cert: str, key: str | None) -> str:
    lines = [mark(name), f"[ ! -f {cert} ] || base64 < {cert}"]
    if key:
        lines += [mark(name + "_key"), f"[ ! -f {key} ] || openssl pkey -in {key} -pubout 2>/dev/null | base64"]
    return "\n".join(lines)


def cert_with_key(name: str, cert_path: str, key_path: str | None = None) -> str:
    """Shell: section `name` carries the cert file; `name`_key the public half of its private key."""
    return _cert_with_key(name, q(cert_path), q(key_path) if key_path else None)


def cert_with_key_from(name: str, cert_var: str, key_var: str) -> str:
    """`cert_with_key` for paths the script finds out itself, in shell variables (`HC`, `HK`)."""
    return _cert_with_key(name, f'"${cert_var}"', f'"${key_var}"')


def read_cert_with_key(sections: dict[str, list[str]], name: str) -> tuple[CertInfo | None, bool]:
    """(the cert, whether the private key is the cert's) from `cert_with_key`'s sections."""
    cert = read_cert(decoded(sections.get(name, [])))
    key = public_key_sha256(decoded(sections.get(name + "_key", [])))
    return cert, bool(cert and key and key == cert.pubkey_sha256)


def served_cert(name: str, certname: str) -> str:
    """Shell: section `name` carries what a TLS handshake on 127.0.0.1:8140 presents."""
    return "\n".join([mark(name), encoded(f"openssl s_client -connect 127.0.0.1:8140 -servername {q(certname)} "
                                          "</dev/null 2>/dev/null")])


def read_served_cert(sections: dict[str, list[str]], name: str) -> CertInfo | None:
    return read_cert(decoded(sections.get(name, [])))


def crl_file(name: str, path: str) -> str:
    return "\n".join([mark(name), file_encoded(path)])


def read_crl_serials(sections: dict[str, list[str]], name: str) -> frozenset[str]:
    return crl_serials(decoded(sections.get(name, []))) or frozenset()


def freeze_left(name: str, state: str) -> str:
    """Whether a freeze of the CA files was cut off before its thaw: its saved owners are still there."""
    return "\n".join([mark(name), f"[ ! -f {q(state)} ] || echo left"])


def read_freeze_left(sections: dict[str, list[str]], name: str) -> bool:
    return "left" in sections.get(name, [])


def service_is_active(init_system: str, name: str) -> str:
    """Shell that exits 0 only while service `name` runs."""
    if init_system == "systemd":
        return f"systemctl is-active --quiet {q(name + '.service')}"
    return f"/etc/init.d/{q(name)} status >/dev/null 2>&1"


def service_states(name: str, init_system: str, services: list[str]) -> str:
    """Shell: section `name` has one `service active|inactive` line per service."""
    checks = [f"if {service_is_active(init_system, s)}; then echo {q(s)} active; else echo {q(s)} inactive; fi"
              for s in services]
    return "\n".join([mark(name), *checks])


def read_inactive(sections: dict[str, list[str]], name: str) -> tuple[str, ...]:
    return tuple(line.split()[0] for line in sections.get(name, []) if line.endswith(" inactive"))
