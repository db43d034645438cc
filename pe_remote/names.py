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
    """An IPv4 or IPv6 address; an IPv6 zone id (`fe80::1%eth0`) is not one a cert can carry."""
    if "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


# C0/C1 controls (escape sequences among them), and the invisible and bidirectional format characters
# that reorder or hide text on a terminal ("Trojan Source").
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """Text from a master (hostnames, paths, versions, error tails) made safe for a terminal:
    control characters (escape sequences among them) and bidirectional or invisible format characters
    are shown as `?`; newlines and tabs stay."""
    return _CONTROL.sub("?", text)


def file_safe(label: str) -> str:
    """A host label as a word of a local file name: what is not a letter, digit, `.`, `_` or `-` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", label)


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


def san_entries(certname: str, alt_names: tuple[str, ...]) -> frozenset[str]:
    """The SANs Puppet puts in a cert for `certname` with `alt_names` (it adds the certname itself)."""
    entries = {f"DNS:{certname}"}
    for name in alt_names:
        # The form commands/certs.py reads SANs in: the address's canonical text.
        entries.add(f"IP:{ipaddress.ip_address(name)}" if is_ip_address(name) else f"DNS:{name}")
    return frozenset(entries)


def sans_to_names(certname: str, sans: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The alt names a cert carries (its SAN entries less the certname), as `parse_alt_names` gives them."""
    names: list[str] = []
    for entry in sorted(sans):
        kind, _, value = entry.partition(":")
        value = value.strip()
        if kind.strip() == "DNS":
            name = value.lower()
        elif kind.strip() in ("IP Address", "IP"):
            try:
                name = str(ipaddress.ip_address(value))
            except ValueError:
                continue
        else:
            continue
        if name != certname and name not in names:
            names.append(name)
    return tuple(sorted(names))


def choose_alt_names(certname: str, configured: tuple[str, ...], current: tuple[str, ...],
                     given: tuple[str, ...] | None, drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The alt names of the new cert: never fewer than the current cert's unless dropped by name.

    By default they are the configured dns_alt_names together with every alt name the current cert
    carries (on Puppet 6+ masters set up with `puppetserver ca setup --subject-alt-names`, puppet.conf
    usually names none: the cert is the record). Names given explicitly replace that default, but
    a name of the current cert left out of them is an error unless it is dropped by name (`drop`).
    """
    base = given if given is not None else tuple(dict.fromkeys((*configured, *current)))
    unknown = [name for name in drop if name not in current and name not in base]
    if unknown:
        raise InvalidName(f"--drop-alt-names {', '.join(unknown)}: not an alt name of the current cert "
                          f"({', '.join(current) or 'none'}) nor of the new one; check the spelling")
    chosen = tuple(name for name in base if name != certname and name not in drop)
    left_out = [name for name in current if name not in chosen and name not in drop]
    if left_out:
        raise InvalidName(f"the current cert also carries {', '.join(left_out)}, which --dns-alt-names leaves "
                          f"out: add {'it' if len(left_out) == 1 else 'them'} to --dns-alt-names, or drop "
                          f"{'it' if len(left_out) == 1 else 'them'} explicitly with --drop-alt-names "
                          f"{','.join(left_out)}")
    return chosen
