"""Validation of the names that end up in remote commands: certnames and alt names.

Everything that reaches a shell on the master is validated here first and then
shell-quoted where the command is built; a master that reports a name outside
these rules (say `x;reboot`) is refused before anything changes.
"""

from __future__ import annotations

import ipaddress
import re

from pe_remote.errors import InvalidName

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"\A{_LABEL}(?:\.{_LABEL})*\Z")


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def validate_certname(value: str, *, source: str = "certname") -> str:
    """A Puppet certname: a lower-case host name (Puppet refuses upper case)."""
    if not value or len(value) > 253 or not _HOSTNAME.match(value):
        raise InvalidName(
            f"{source} {value!r} is not a valid certname: use a lower-case host name "
            "(letters, digits, '-', '_' and '.')"
        )
    return value


def validate_alt_name(value: str, *, source: str = "alt name") -> str:
    """A DNS alt name: a host name or an IP address; Puppet's `DNS:`/`IP:` prefixes are accepted."""
    bare = value.strip()
    for prefix in ("DNS:", "IP:"):
        if bare.upper().startswith(prefix):
            bare = bare[len(prefix):]
    if is_ip_address(bare):
        return bare
    lowered = bare.lower()
    if not lowered or len(lowered) > 253 or not _HOSTNAME.match(lowered):
        raise InvalidName(
            f"{source} {value!r} is not a host name or IP address: "
            "give names like puppet,puppet.example.com (comma-separated, no spaces or wildcards)"
        )
    return lowered


def parse_alt_names(value: str | list[str] | tuple[str, ...] | None, *, source: str = "dns_alt_names") -> tuple[str, ...]:
    """`a, b,c` (or a list) -> validated, de-duplicated names in the order given."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        name = validate_alt_name(str(item), source=source)
        if name not in names:
            names.append(name)
    return tuple(names)


def openssl_ip_text(address: str) -> str:
    """An IP as `openssl x509 -text` prints it: IPv6 uncompressed, upper-case groups without leading zeros."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return str(ip)
    return ":".join(f"{int(group, 16):X}" for group in ip.exploded.split(":"))


def san_entries(certname: str, alt_names: tuple[str, ...]) -> frozenset[str]:
    """The SANs Puppet puts in a cert for `certname` with `alt_names` (it adds the certname itself)."""
    entries = {f"DNS:{certname}"}
    for name in alt_names:
        entries.add(f"IP Address:{openssl_ip_text(name)}" if is_ip_address(name) else f"DNS:{name}")
    return frozenset(entries)
