"""Discovery: one read-only remote command that describes the master.

The remote script (commands/discovery.py) prints sections; `parse_discovery` turns them into an
immutable `MasterFacts`. Nothing the master reports is trusted: names are validated (see names.py)
before any plan is built from them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass

from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import CertInfo, load_cert
from pe_remote.commands.discovery import REMOTE_STATE_DIR, SETTINGS, discovery_script
from pe_remote.commands.facts import read_cert_with_key
from pe_remote.commands.steps import CA_WRITABLE
from pe_remote.errors import DiscoveryError, InvalidName, Refused
from pe_remote.flavors import FLAVORS, PUPPET_PATHS, PUPPETSERVER_PATHS, SERVER_SERVICES, Flavor, UnknownFlavor, \
    detect_flavor
from pe_remote.names import parse_alt_names, validate_certname

__all__ = ["CertInfo", "MasterFacts", "ServiceState", "REMOTE_STATE_DIR", "discover", "discovery_script",
           "parse_discovery"]


@dataclass(frozen=True)
class ServiceState:
    name: str
    exists: bool
    active: bool
    state: str


@dataclass(frozen=True)
class MasterFacts:
    """A read-only description of one master at one moment."""

    uid: int
    hostname: str
    init_system: str
    puppet: str
    puppet_version: str
    pe_version: str | None
    puppetserver: str | None
    flavor: Flavor
    certname: str
    dns_alt_names: tuple[str, ...]
    ssldir: str
    cadir: str
    client_datadir: str
    hostcert: str
    hostprivkey: str
    ca_key_present: bool
    services: tuple[ServiceState, ...]
    cert: CertInfo | None
    ca_subject: str = ""  # subject of the CA cert that signs (first in ca_crt.pem)
    ssl_kb: int = 0  # size of the ssldir (and cadir) on disk
    backup_free_kb: int = 0  # free space where the backup goes
    monolithic_markers: tuple[str, ...] = ()  # PuppetDB/console services or SSL folders on this host
    # The systemd unit whose process listens on 8140: "" when nothing listens, None when unknown
    # (no systemd, no `ss`, or a listener outside any service).
    serving_unit: str | None = None
    copy_dirs: tuple[str, ...] = ()  # the generation's credential-copy folders that exist here
    unfinished_journals: tuple[tuple[str, str], ...] = ()  # (path, content) of runs that did not finish
    reloadable: tuple[str, ...] = ()  # server services whose unit can reload in place (CanReload=yes)
    # The CA's files (CA_WRITABLE) writable by their group or by anyone: the reload path cannot freeze them.
    ca_unfreezable: tuple[str, ...] = ()
    # A regen's freeze of those files was cut off before its thaw: they are still root's (live state,
    # like unfinished_journals: not recorded in a journal).
    ca_freeze_left: bool = False

    @property
    def catalog_path(self) -> str:
        return f"{self.client_datadir}/catalog/{self.certname}.json"

    @property
    def running_services(self) -> list[str]:
        """The generation's services that exist here and run, in its stop order."""
        running = {s.name for s in self.services if s.exists and s.active}
        return [name for name in self.flavor.services if name in running]

    def service(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def server_reloads(self) -> bool:
        """The server runs, its generation reads a new cert on a reload, and its unit can reload."""
        return (self.flavor.reloads_in_place and self.server_service in self.reloadable
                and self.server_service in self.running_services)

    @property
    def server_service(self) -> str:
        """The service that serves 8140 here: the generation's first server service the host has."""
        present = {s.name for s in self.services if s.exists}
        return next((name for name in self.flavor.server_services if name in present),
                    self.flavor.server_services[0])

    @property
    def credential_copies(self):
        """The generation's credential copies whose folder exists on this host."""
        return tuple(c for c in self.flavor.credential_copies if c.folder in self.copy_dirs)

    @property
    def cadir_inside_ssldir(self) -> bool:
        return self.cadir == self.ssldir or self.cadir.startswith(self.ssldir.rstrip("/") + "/")


def _value(line: str) -> str:
    """A value the discovery script printed behind `v=` (see commands.discovery); bare in older output."""
    line = line.strip()
    return line[2:].strip() if line.startswith("v=") else line


def parse_settings(lines: list[str]) -> dict[str, str]:
    """`name = value` lines; an empty value may come without the space after `=`."""
    settings = {}
    for line in lines:
        match = re.fullmatch(r"\s*([\w.-]+) =(?: (.*))?", line.rstrip())
        if match:
            settings[match.group(1)] = (match.group(2) or "").strip()
    return settings


def parse_discovery(output: str, *, flavor_override: str | None = None) -> MasterFacts:
    found = protocol.parse(output)
    sections = protocol.split(output)
    if "id" not in sections:
        raise DiscoveryError(f"discovery printed nothing usable: {output.strip()[-300:] or 'no output'}")
    id_lines = sections["id"]
    try:
        uid = int(id_lines[0])
    except (IndexError, ValueError):
        raise DiscoveryError(f"could not read the remote user id from {id_lines!r}") from None
    if uid != 0:
        raise Refused(f"logged in with uid {uid}, not root: pe-remote must run as root on the master")
    binaries = parse_settings([line.replace("=", " = ", 1) for line in sections.get("binaries", [])])
    puppet = binaries.get("puppet", "")
    if not puppet:
        raise DiscoveryError(f"no puppet binary found on the master (looked in {', '.join(PUPPET_PATHS)})")
    puppet_version = _value((sections.get("puppet_version") or [""])[0])
    pe_version = next((_value(line) for line in sections.get("pe_version", []) if _value(line)), None)
    settings = parse_settings(sections.get("settings", []))
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise DiscoveryError(f"`{puppet} config print` did not report {', '.join(missing)}")
    try:
        flavor = FLAVORS[flavor_override] if flavor_override else detect_flavor(puppet_version, pe_version)
    except UnknownFlavor as exc:
        raise Refused(str(exc)) from None
    except KeyError:
        raise DiscoveryError(f"unknown flavor {flavor_override!r}; known: {', '.join(FLAVORS)}") from None
    try:
        certname = validate_certname(settings["certname"], source="the master's certname")
        alt_names = parse_alt_names(settings["dns_alt_names"], source="the master's dns_alt_names")
    except InvalidName as exc:
        raise Refused(f"{exc}; refusing to put it into commands on the master") from None
    for path_setting in ("ssldir", "cadir", "client_datadir", "hostcert", "hostprivkey", "agent_client_datadir"):
        if path_setting not in settings:
            continue
        problem = path_problem(settings[path_setting])
        if problem:
            raise Refused(f"the master's {path_setting} {settings[path_setting]!r} {problem}; refusing to use it "
                          "(a rollback moves these folders aside)")
    for inner in ("hostcert", "hostprivkey"):
        if not settings[inner].startswith(settings["ssldir"].rstrip("/") + "/"):
            raise Refused(f"the master's {inner} {settings[inner]!r} is not inside its ssldir "
                          f"{settings['ssldir']!r}; pe-remote handles only certs kept in the ssldir")
    space = dict(line.partition("=")[::2] for line in sections.get("space", []) if "=" in line)
    journals = [(s.arg, protocol.decoded(s.lines).decode(errors="replace")) for s in found if s.name == "journal"]
    services = []
    for line in sections.get("services", []):
        name, _, state = line.strip().partition(" ")
        if name:
            services.append(ServiceState(name, state != "absent", state == "active", state))
    present = {s.name for s in services if s.exists}
    found_dirs = {line.strip() for line in sections.get("dirs", [])}
    markers = tuple(f"service {name}" for name in flavor.monolithic_services if name in present) + tuple(
        f"folder {d}" for d in flavor.monolithic_dirs if d in found_dirs)
    listener = parse_settings([line.replace("=", " = ", 1) for line in sections.get("listener", [])])
    serving_unit = listener.get("unit")
    if serving_unit == "?" or (serving_unit and not re.fullmatch(r"[A-Za-z0-9@_.:-]{1,128}", serving_unit)):
        serving_unit = None
    facts = MasterFacts(
        uid=uid,
        hostname=(_value(id_lines[1]) if len(id_lines) > 1 else ""),
        init_system=(sections.get("init") or ["sysv"])[0].strip(),
        puppet=puppet,
        puppet_version=puppet_version,
        pe_version=pe_version,
        puppetserver=binaries.get("puppetserver") or None,
        flavor=flavor,
        certname=certname,
        dns_alt_names=alt_names,
        ssldir=settings["ssldir"].rstrip("/"),
        cadir=settings["cadir"].rstrip("/"),
        client_datadir=settings.get("agent_client_datadir", settings["client_datadir"]).rstrip("/"),
        hostcert=settings["hostcert"],
        hostprivkey=settings["hostprivkey"],
        ca_key_present=(sections.get("ca_key") or [""])[0].strip() == "present",
        services=tuple(services),
        cert=read_cert_with_key(sections, "cert")[0],
        ca_subject=_subject(protocol.decoded(sections.get("ca_cert", []))),
        ssl_kb=_kb(space, "ssl_kb", "the size of the SSL folders"),
        backup_free_kb=_kb(space, "free_kb", f"the free space in {REMOTE_STATE_DIR}"),
        monolithic_markers=markers,
        serving_unit=serving_unit if "listener" in sections else None,
        copy_dirs=tuple(c.folder for c in flavor.credential_copies if c.folder in found_dirs),
        unfinished_journals=tuple(journals),
        reloadable=tuple(name for name in (line.strip() for line in sections.get("reloadable", []))
                         if name in SERVER_SERVICES),
        ca_unfreezable=tuple(name for name in (line.strip() for line in sections.get("unfreezable", []))
                             if name in CA_WRITABLE),
        ca_freeze_left="left" in (line.strip() for line in sections.get("ca_freeze", [])),
    )
    try:
        check_facts(facts)
    except (TypeError, ValueError) as exc:
        raise Refused(f"the master's answer holds {exc}; refusing to use it") from None
    return facts


def _type_problem(value, hint) -> bool:
    """True when `value` is not of `hint` (the simple types facts are made of)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return all(_type_problem(value, arg) for arg in args)
    if origin in (tuple, frozenset):
        inner = args[0] if args else object
        return not isinstance(value, origin) or any(_type_problem(item, inner) for item in value)
    if hint is type(None):
        return value is not None
    if hint in (int, str, bool):
        # bool is an int to Python, not to a journal
        return type(value) is not hint
    if dataclasses.is_dataclass(hint):
        return not isinstance(value, hint)
    return False


def _check_types(obj) -> None:
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if _type_problem(value, hints[field.name]):
            raise TypeError(f"{field.name} {value!r:.80}")
        if dataclasses.is_dataclass(value):
            _check_types(value)
        elif isinstance(value, tuple):
            for item in value:
                if dataclasses.is_dataclass(item):
                    _check_types(item)


def check_facts(facts: MasterFacts) -> None:
    """What discovery and a journal read back must both hold before any of it reaches a command on the
    master: every field of its type, the binaries where discovery looks for them, the paths plain and
    the cert files inside the ssldir. Raises TypeError or ValueError naming the first field that does not."""
    _check_types(facts)
    if facts.init_system not in ("systemd", "sysv"):
        raise ValueError(f"init system {facts.init_system!r}")
    if facts.puppet not in PUPPET_PATHS:
        raise ValueError(f"puppet binary {facts.puppet!r} (not one of {', '.join(PUPPET_PATHS)})")
    if facts.puppetserver is not None and facts.puppetserver not in PUPPETSERVER_PATHS:
        raise ValueError(f"puppetserver binary {facts.puppetserver!r} (not one of {', '.join(PUPPETSERVER_PATHS)})")
    for setting in ("ssldir", "cadir", "client_datadir", "hostcert", "hostprivkey"):
        problem = path_problem(getattr(facts, setting))
        if problem:
            raise ValueError(f"{setting} {getattr(facts, setting)!r} {problem}")
    for inner in ("hostcert", "hostprivkey"):
        if not getattr(facts, inner).startswith(facts.ssldir.rstrip("/") + "/"):
            raise ValueError(f"{inner} {getattr(facts, inner)!r} outside the ssldir {facts.ssldir!r}")


# Folders that are never a Puppet SSL, CA or cache folder themselves (a rollback moves the ssldir
# and cadir aside and extracts the backup in their place).
SYSTEM_DIRS = frozenset({"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt",
                         "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                         "/etc/puppetlabs", "/opt/puppetlabs", "/usr/lib", "/usr/local", "/usr/share",
                         "/var/cache", "/var/lib", "/var/opt", "/var/opt/lib", "/var/log", "/var/tmp"})


def path_problem(value: str) -> str | None:
    """Why `value` is not a plausible Puppet path setting (None: it is)."""
    if not value.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./@+-]+", value):
        return "is not a plain absolute path"
    parts = value.rstrip("/").split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        return "is not a normalized path (empty, '.' or '..' parts)"
    if value.rstrip("/") in SYSTEM_DIRS or len(parts) < 2:
        return "is a system folder, not a Puppet one"
    return None


def _subject(pem: bytes) -> str:
    cert = load_cert(pem)
    return cert.subject.rfc4514_string() if cert is not None else ""


def _kb(space: dict[str, str], key: str, what: str) -> int:
    """A size the preflight compares: an answer that is missing or not a number is not zero."""
    value = (space.get(key) or "").strip()
    if not re.fullmatch(r"[0-9]+", value):
        raise DiscoveryError(f"could not read {what} on the master (got {value!r}); "
                             "check that du and df work there")
    return int(value)


def generation_problem(facts: MasterFacts, *, overridden: bool = False) -> str | None:
    """Why the chosen generation does not fit what the host runs (None: it fits).

    Detection reads version markers; this checks them against the host itself: the generation's
    services must exist, and the process serving 8140 must belong to its server service. A wrong
    guess would stop services that are not the ones running and then fail half-way.
    """
    flavor = facts.flavor
    if overridden:
        source = f"--flavor {flavor.name}"
    elif facts.pe_version:
        source = f"detected from the PE version marker {facts.pe_version}"
    else:
        source = f"detected from puppet --version {facts.puppet_version or '?'}"
    present = {s.name for s in facts.services if s.exists}
    servers = ", ".join(flavor.server_services)
    fitting = [f.name for f in FLAVORS.values() if facts.serving_unit in f.server_services
               and f.name != flavor.name]
    hint = (f"; if it is a {' or '.join(fitting)} master, say so with --flavor" if fitting else
            "; name the generation with --flavor if the detection is wrong")
    if not present & set(flavor.services):
        return (f"{flavor.title} ({source}), but none of its services ({', '.join(flavor.services)}) exist on "
                f"this host{hint}")
    if not present & set(flavor.server_services):
        return f"{flavor.title} ({source}), but its server service ({servers}) does not exist on this host{hint}"
    if facts.serving_unit and facts.serving_unit not in flavor.server_services:
        return (f"{flavor.title} ({source}), but port 8140 is served by {facts.serving_unit}.service, not by "
                f"{servers}{hint}")
    return None


def discover(remote, *, flavor_override: str | None = None, background: bool = False) -> MasterFacts:
    """Describe the master in one remote command; refuse a generation the host does not run.
    `background`: at the lowest CPU priority on the master (beside the backup command's stream)."""
    result = remote.run(discovery_script(background=background), check=False)
    if not result.ok and "id" not in protocol.split(result.stdout):
        raise DiscoveryError(f"discovery failed (exit {result.exit_status}): {(result.stdout + result.stderr).strip()[-300:]}")
    facts = parse_discovery(result.stdout, flavor_override=flavor_override)
    problem = generation_problem(facts, overridden=flavor_override is not None)
    if problem:
        raise Refused(f"{problem}. Nothing was changed")
    return facts
