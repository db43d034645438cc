"""Targets: `user@host:port` strings and named hosts from inventory.toml.

    default = "staging"

    [hosts.staging]
    address = "puppet-staging.example.com"   # required
    port = 22                                # default 22
    user = "root"                            # default root; anything else is refused
    key_file = "~/.ssh/id_ed25519"           # default: ssh-agent and ~/.ssh keys
    known_hosts = "~/.ssh/known_hosts"       # default ~/.ssh/known_hosts
    dns_alt_names = ["puppet", "puppet.example.com"]  # default: what the master says
    backup_dir = "backups"                   # default backups
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from pe_remote.errors import InputError, InventoryError, InvalidName
from pe_remote.names import is_ip_address, parse_alt_names

DEFAULT_INVENTORY = "inventory.toml"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_BACKUP_DIR = "backups"

_HOST_KEYS = {"address", "port", "user", "key_file", "known_hosts", "dns_alt_names", "backup_dir"}
_ADDRESS = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


@dataclass(frozen=True)
class Target:
    """Where and how to log in to one master, and the per-host settings."""

    address: str
    port: int = 22
    user: str = "root"
    key_files: tuple[str, ...] = ()
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    alt_names: tuple[str, ...] | None = None
    backup_dir: str = DEFAULT_BACKUP_DIR
    alias: str | None = None

    @property
    def label(self) -> str:
        return self.alias or (self.address if self.port == 22 else f"{self.address}:{self.port}")

    def with_overrides(self, **changes) -> "Target":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, Target] = field(default_factory=dict)
    default: str | None = None


def _check_address(address: str, where: str) -> str:
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    if not (is_ip_address(bare) or _ADDRESS.match(bare)):
        raise InputError(f"{where}: {address!r} is not a host name or IP address")
    return bare


_TARGET = re.compile(r"\A(?:(?P<user>[^@]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]@]+))(?::(?P<port>[0-9]{1,5}))?\Z")


def parse_target(spec: str) -> Target:
    """`[user@]host[:port]` (IPv6 as `[::1]:22`, or bare without a port) -> Target."""
    user, _, bare = spec.rpartition("@")
    if ":" in bare and is_ip_address(bare):
        return Target(address=bare, user=user or "root")
    match = _TARGET.match(spec)
    if not match:
        raise InputError(f"target {spec!r} is not [user@]host[:port] (an IPv6 address goes in brackets: [::1]:22)")
    port = int(match["port"]) if match["port"] else 22
    if not 0 < port < 65536:
        raise InputError(f"target {spec!r}: port {match['port']!r} is not a number from 1 to 65535")
    host = match["v6"] or match["host"]
    return Target(address=_check_address(host, f"target {spec!r}"), port=port, user=match["user"] or "root")


def _entry(path: Path, alias: str, raw: object) -> Target:
    where = f"{path}: host {alias!r}"
    if not isinstance(raw, dict):
        raise InventoryError(f"{where}: must be a table ([hosts.{alias}])")
    unknown = sorted(set(raw) - _HOST_KEYS)
    if unknown:
        raise InventoryError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_HOST_KEYS))})")
    if "address" not in raw:
        raise InventoryError(f"{where}: key 'address' is missing")

    def typed(key: str, kind: type, default):
        value = raw.get(key, default)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise InventoryError(f"{where}: key {key!r} must be a {kind.__name__}, got {value!r}")
        return value

    port = typed("port", int, 22)
    if not 0 < port < 65536:
        raise InventoryError(f"{where}: key 'port' must be from 1 to 65535, got {port}")
    alt = raw.get("dns_alt_names")
    if alt is not None and not (isinstance(alt, list) and all(isinstance(a, str) for a in alt)):
        raise InventoryError(f"{where}: key 'dns_alt_names' must be a list of strings, got {alt!r}")
    try:
        alt_names = parse_alt_names(alt, source=f"{where}: key 'dns_alt_names'") if alt is not None else None
        address = _check_address(typed("address", str, ""), f"{where}: key 'address'")
    except InputError as exc:
        raise InventoryError(str(exc)) from None
    key_file = typed("key_file", str, "")
    return Target(
        address=address,
        port=port,
        user=typed("user", str, "root"),
        key_files=(key_file,) if key_file else (),
        known_hosts=typed("known_hosts", str, DEFAULT_KNOWN_HOSTS),
        alt_names=alt_names,
        backup_dir=typed("backup_dir", str, DEFAULT_BACKUP_DIR),
        alias=alias,
    )


def load_inventory(path: str | os.PathLike) -> Inventory:
    """Read and check inventory.toml; a missing file is an empty inventory."""
    path = Path(path)
    if not path.exists():
        return Inventory(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"default", "hosts"})
    if unknown:
        raise InventoryError(f"{path}: unknown top-level key {unknown[0]!r} (known: default, hosts)")
    hosts_raw = data.get("hosts", {})
    if not isinstance(hosts_raw, dict):
        raise InventoryError(f"{path}: 'hosts' must be a table of [hosts.NAME] entries")
    hosts = {alias: _entry(path, alias, raw) for alias, raw in hosts_raw.items()}
    default = data.get("default")
    if default is not None and default not in hosts:
        raise InventoryError(f"{path}: default host {default!r} is not defined under [hosts]")
    return Inventory(path, hosts, default)


def _looks_like_alias(name: str) -> bool:
    # A bare word (no dot, no user@, no :port, not an IP, not localhost) is taken
    # as an inventory alias, so a typo is an error rather than a DNS lookup.
    return not ("." in name or "@" in name or ":" in name or is_ip_address(name) or name == "localhost")


def resolve_target(name: str | None, inventory: Inventory) -> Target:
    """An alias from the inventory, a literal `user@host:port`, or the inventory's default."""
    if not name:
        if inventory.default is None:
            raise InputError(
                f"no host given and {inventory.path} names no default host: "
                "pass --host ALIAS or user@host[:port], or set default = \"ALIAS\" in the inventory"
            )
        return inventory.hosts[inventory.default]
    if name in inventory.hosts:
        return inventory.hosts[name]
    if _looks_like_alias(name):
        known = ", ".join(sorted(inventory.hosts)) or "none"
        raise InputError(
            f"unknown host alias {name!r} in {inventory.path} (known: {known}); "
            "add it under [hosts], or give a full host name or user@host[:port]"
        )
    try:
        return parse_target(name)
    except InvalidName as exc:  # pragma: no cover - parse_target raises InputError itself
        raise InputError(str(exc)) from None
