"""Discovery: one read-only remote command that describes the master.

The remote script prints `==> section <==` blocks; `parse_discovery` turns them
into an immutable `MasterFacts`. Nothing the master reports is trusted: names are
validated (see names.py) before any plan is built from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pe_remote.errors import DiscoveryError, InvalidName, Refused
from pe_remote.flavors import (ALL_SERVICES, COPY_DIRS, FLAVORS, MONOLITHIC_DIRS, PE_VERSION_FILES, PUPPET_PATHS,
                               PUPPETSERVER_PATHS, Flavor, UnknownFlavor, detect_flavor)
from pe_remote.names import parse_alt_names, validate_certname
from pe_remote.shell import q

# Where backups and run journals live on the master (root-only).
REMOTE_STATE_DIR = "/root/pe-remote-backups"
SETTINGS = ("cadir", "certname", "client_datadir", "dns_alt_names", "hostcert", "hostprivkey", "ssldir")


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says, as `openssl x509` printed it."""

    serial: str
    subject: str
    issuer: str
    not_after: str
    sha256: str
    sans: frozenset[str]
    pubkey_sha256: str = ""


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
    settings_raw: dict = field(default_factory=dict, compare=False, repr=False)

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


def cert_info_script(cert_var: str, key_var: str | None = None) -> str:
    """Shell that prints a cert's facts (and its key's public-key hash) from shell variables."""
    key_part = (f'[ -f "${key_var}" ] && printf "keypub=%s\\n" "$(openssl pkey -in "${key_var}" -pubout '
                f'2>/dev/null | sha256sum | cut -d" " -f1)"; ') if key_var else ""
    return (
        f'if [ -f "${cert_var}" ]; then '
        f'openssl x509 -in "${cert_var}" -noout -serial -subject -issuer -enddate -fingerprint -sha256 '
        f'-nameopt RFC2253; '
        f'printf "certpub=%s\\n" "$(openssl x509 -in "${cert_var}" -noout -pubkey | sha256sum | cut -d" " -f1)"; '
        f'{key_part}'
        f'openssl x509 -in "${cert_var}" -noout -text | sed -n "/Subject Alternative Name/{{n;s/^ *//;s/^/sans=/;p}}"; '
        f'fi'
    )


def discovery_script() -> str:
    """The single remote command discovery runs (POSIX sh; reads, never writes)."""
    puppet_paths = " ".join(q(p) for p in PUPPET_PATHS)
    server_paths = " ".join(q(p) for p in PUPPETSERVER_PATHS)
    pe_files = " ".join(q(p) for p in PE_VERSION_FILES)
    services = " ".join(q(s) for s in ALL_SERVICES)
    marker_dirs = " ".join(q(d) for d in (*MONOLITHIC_DIRS, *COPY_DIRS))
    state_dir = q(REMOTE_STATE_DIR)
    settings = " ".join(SETTINGS)
    return f"""exec 2>&1
sec() {{ echo "==> $1 <=="; }}
sec id; id -u; hostname
sec init; if [ -d /run/systemd/system ]; then echo systemd; else echo sysv; fi
P=; for p in {puppet_paths}; do if [ -x "$p" ]; then P=$p; break; fi; done
S=; for p in {server_paths}; do if [ -x "$p" ]; then S=$p; break; fi; done
sec binaries; echo "puppet=$P"; echo "puppetserver=$S"
sec pe_version; PE=; for f in {pe_files}; do [ -f "$f" ] && PE=$(head -c 64 "$f") && echo "$PE" && break; done
[ -n "$P" ] || exit 0
# The PE marker decides the generation; only open-source Puppet pays a second Ruby start for it.
sec puppet_version; V=; [ -n "$PE" ] || V=$("$P" --version 2>&1); echo "$V"
# The master's settings section: [master] up to Puppet 5 (PE 2018.1), [server] from Puppet 6 on.
SEC=server; case "$PE" in 3.*|2015.*|2016.*|2017.*|2018.*) SEC=master;; esac
[ -n "$PE" ] || case "$V" in [0-5].*) SEC=master;; esac
# The cached catalog is the agent's: its client_datadir may differ from the master section's (Debian's
# Puppet 5 sets vardir per section). Both settings lookups run at once (one Ruby start's wall time).
sec settings; CFG=$( ( "$P" config print client_datadir --section agent 2>/dev/null \
  | sed -n 's|^/|agent_client_datadir = /|p' ) &
  "$P" config print {settings} --section $SEC 2>/dev/null; wait); echo "$CFG"
get() {{ printf "%s\\n" "$CFG" | sed -n "s/^$1 = //p"; }}
HC=$(get hostcert); HK=$(get hostprivkey); CA=$(get cadir)
sec ca_key; if [ -f "$CA/ca_key.pem" ]; then echo present; else echo absent; fi
sec ca_cert; [ -f "$CA/ca_crt.pem" ] && openssl x509 -in "$CA/ca_crt.pem" -noout -subject -nameopt RFC2253
sec services
for s in {services}; do
  if [ -d /run/systemd/system ]; then
    # A name that is only an alias of another unit (Debian's puppetmaster -> puppet-master) is not a service of its own.
    if systemctl cat "$s.service" >/dev/null 2>&1 && [ "$(systemctl show -p Id "$s.service" 2>/dev/null)" = "Id=$s.service" ]
    then echo "$s $(systemctl is-active "$s.service")"; else echo "$s absent"; fi
  elif [ -x "/etc/init.d/$s" ]; then
    if "/etc/init.d/$s" status >/dev/null 2>&1; then echo "$s active"; else echo "$s inactive"; fi
  else echo "$s absent"; fi
done
sec dirs; for d in {marker_dirs}; do [ -d "$d" ] && echo "$d"; done
# Which service's process listens on 8140 (cross-checks the detected generation).
sec listener; if command -v ss >/dev/null 2>&1; then
  L=$(ss -Htlnp 'sport = :8140' 2>/dev/null); LP=$(printf "%s\\n" "$L" | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' | head -n1)
  if [ -n "$LP" ]; then sed -n 's#.*/\\([^/]*\\)\\.service$#unit=\\1#p' "/proc/$LP/cgroup" 2>/dev/null | head -n1
  elif [ -n "$L" ]; then echo unit=?; else echo unit=; fi
else echo unit=?; fi
sec space; SSL=$(get ssldir)
echo "ssl_kb=$(du -skc "$SSL" "$CA" 2>/dev/null | tail -n1 | cut -f1)"
B={state_dir}; [ -d "$B" ] || B=$(dirname "$B")
echo "free_kb=$(df -Pk "$B" | tail -n1 | awk '{{print $4}}')"
sec journals; for j in {state_dir}/*.journal; do [ -f "$j" ] || continue
  tail -n1 "$j" | grep -q '"event": "finished"' || {{ echo "@@journal $j"; cat "$j"; }}; done
sec cert; {cert_info_script("HC", "HK")}
"""


def split_sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        match = re.fullmatch(r"==> (\w+) <==", line.strip())
        if match:
            current = match.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line.rstrip("\n"))
    return sections


def parse_settings(lines: list[str]) -> dict[str, str]:
    """`name = value` lines; an empty value may come without the space after `=`."""
    settings = {}
    for line in lines:
        match = re.fullmatch(r"\s*([\w.-]+) =(?: (.*))?", line.rstrip())
        if match:
            settings[match.group(1)] = (match.group(2) or "").strip()
    return settings


def parse_cert_info(lines: list[str]) -> CertInfo | None:
    """Parse `openssl x509 -serial -subject -issuer -enddate -fingerprint` plus our extra lines."""
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        if key.startswith("sha256 fingerprint"):
            key = "sha256"
        values.setdefault(key, value.strip())
    if "serial" not in values:
        return None
    sans = frozenset(s.strip() for s in values.get("sans", "").split(",") if s.strip())
    return CertInfo(
        serial=values["serial"].upper().lstrip("0") or "0",
        subject=values.get("subject", ""),
        issuer=values.get("issuer", ""),
        not_after=values.get("notafter", ""),
        sha256=values.get("sha256", "").upper(),
        sans=sans,
        pubkey_sha256=values.get("certpub", ""),
    )


def key_matches_cert(lines: list[str]) -> bool:
    """True when the `keypub=` and `certpub=` lines of cert_info_script agree."""
    values = dict(line.partition("=")[::2] for line in lines if "=" in line)
    return bool(values.get("keypub")) and values.get("keypub") == values.get("certpub")


def parse_discovery(output: str, *, flavor_override: str | None = None) -> MasterFacts:
    sections = split_sections(output)
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
    puppet_version = (sections.get("puppet_version") or [""])[0].strip()
    pe_version = next((line.strip() for line in sections.get("pe_version", []) if line.strip()), None)
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
    journals: list[tuple[str, list[str]]] = []
    for line in sections.get("journals", []):
        if line.startswith("@@journal "):
            journals.append((line.split(" ", 1)[1], []))
        elif journals:
            journals[-1][1].append(line)
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
    return MasterFacts(
        uid=uid,
        hostname=(id_lines[1].strip() if len(id_lines) > 1 else ""),
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
        cert=parse_cert_info(sections.get("cert", [])),
        ca_subject=next((line.split("=", 1)[1].strip() for line in sections.get("ca_cert", [])
                         if line.startswith("subject=")), ""),
        ssl_kb=_kb(space, "ssl_kb", "the size of the SSL folders"),
        backup_free_kb=_kb(space, "free_kb", f"the free space in {REMOTE_STATE_DIR}"),
        monolithic_markers=markers,
        serving_unit=serving_unit if "listener" in sections else None,
        copy_dirs=tuple(c.folder for c in flavor.credential_copies if c.folder in found_dirs),
        unfinished_journals=tuple((path, "\n".join(lines)) for path, lines in journals),
        settings_raw=settings,
    )


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


def _kb(space: dict[str, str], key: str, what: str) -> int:
    """A size the preflight compares: an answer that is missing or not a number is not zero."""
    value = (space.get(key) or "").strip()
    if not value.isdigit():
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


def discover(remote, *, flavor_override: str | None = None) -> MasterFacts:
    """Describe the master in one remote command; refuse a generation the host does not run."""
    result = remote.run(discovery_script(), check=False)
    if not result.ok and "==> id <==" not in result.stdout:
        raise DiscoveryError(f"discovery failed (exit {result.exit_status}): {(result.stdout + result.stderr).strip()[-300:]}")
    facts = parse_discovery(result.stdout, flavor_override=flavor_override)
    problem = generation_problem(facts, overridden=flavor_override is not None)
    if problem:
        raise Refused(f"{problem}. Nothing was changed")
    return facts
