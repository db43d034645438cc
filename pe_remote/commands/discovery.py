"""The discovery script: one read-only remote command (POSIX sh) whose sections describe the master.
`pe_remote.discovery.parse_discovery` reads them back."""

from __future__ import annotations

from pe_remote.commands.facts import cert_with_key_from
from pe_remote.commands.sections import marker
from pe_remote.commands.shell import join, q
from pe_remote.commands.steps import CA_WRITABLE, REMOTE_STATE_DIR, cannot_be_frozen, saved_freeze_exists
from pe_remote.flavors import ALL_SERVICES, COPY_DIRS, MONOLITHIC_DIRS, PE_VERSION_FILES, PUPPET_PATHS, \
    PUPPET_VERSION_RB, PUPPETSERVER_PATHS, SERVER_SERVICES

SETTINGS = ("cadir", "certname", "client_datadir", "dns_alt_names", "hostcert", "hostprivkey", "ssldir")


# Values read from the master's files or commands are printed behind `v=`: a line of theirs can then never
# pass for a section marker (the first section of a name wins: a forged one would override the real one).
def discovery_script(*, background: bool = False) -> str:
    """The single remote command discovery runs (reads, never writes). `background`: at the lowest CPU
    priority, beside work that matters more (the backup command's stream)."""
    state_dir = q(REMOTE_STATE_DIR)
    sec = marker("SECTION").replace("SECTION", "%s")
    lowest = "renice -n 19 -p $$ >/dev/null 2>&1\n" if background else ""
    unfreezable = cannot_be_frozen('"$CA/$n"')
    version_cases = ";; ".join(f"{q(binary)}) VR={q(rb)}" for binary, rb in PUPPET_VERSION_RB.items())
    return f"""exec 2>&1
{lowest}sec() {{ printf '{sec}\\n' "$1"; }}
sec id; id -u; printf 'v=%s\\n' "$(hostname | head -n1)"
sec init; if [ -d /run/systemd/system ]; then echo systemd; else echo sysv; fi
P=; for p in {join(PUPPET_PATHS)}; do if [ -x "$p" ]; then P=$p; break; fi; done
S=; for p in {join(PUPPETSERVER_PATHS)}; do if [ -x "$p" ]; then S=$p; break; fi; done
sec binaries; echo "puppet=$P"; echo "puppetserver=$S"
sec pe_version; PE=; for f in {join(PE_VERSION_FILES)}; do [ -f "$f" ] && PE=$(head -n1 "$f" | head -c 64) && printf 'v=%s\\n' "$PE" && break; done
[ -n "$P" ] || exit 0
# The PE marker decides the generation; open-source Puppet's version is read where its packaging keeps
# it (as Puppet.version does: a VERSION file beside version.rb, else its PUPPETVERSION constant), else
# asked with `puppet --version` at the same time as the settings lookups (which then assume Puppet 6+'s
# [server] section, and are made again for [master] on Puppet 4/5).
V=; VR=; case "$P" in {version_cases};; esac
if [ -z "$PE" ] && [ -n "$VR" ]; then
  if [ -f "${{VR%/*}}/VERSION" ]; then V=$(head -c 64 "${{VR%/*}}/VERSION" | head -n1)
  else V=$(sed -n "s/^ *PUPPETVERSION *= *[^0-9]*\\([0-9][0-9.]*\\).*/\\1/p" "$VR" 2>/dev/null | head -n1); fi
fi
# The master's settings section: [master] up to Puppet 5 (PE 2018.1), [server] from Puppet 6 on.
SEC=server; case "$PE" in 3.*|2015.*|2016.*|2017.*|2018.*) SEC=master;; esac
[ -n "$PE" ] || case "$V" in [0-5].*) SEC=master;; esac
settings() {{ "$P" config print {" ".join(SETTINGS)} --section "$1" 2>/dev/null; }}
# The cached catalog is the agent's: its client_datadir may differ from the master section's (Debian's
# Puppet 5 sets vardir per section). All lookups run at once (one Ruby start's wall time).
CFG=$( ( "$P" config print client_datadir --section agent 2>/dev/null \\
  | sed -n 's|^/|agent_client_datadir = /|p' ) &
  [ -n "$PE" ] || [ -n "$V" ] || ( "$P" --version 2>&1 | sed 's/^/puppet_version = /' ) &
  settings $SEC; wait)
if [ -z "$PE" ] && [ -z "$V" ]; then V=$(printf "%s\\n" "$CFG" | sed -n 's/^puppet_version = //p' | head -n1)
  CFG=$(printf "%s\\n" "$CFG" | grep -v '^puppet_version = ')
  case "$V" in [0-5].*) SEC=master
    CFG=$(printf "%s\\n" "$CFG" | grep '^agent_client_datadir = '; settings master);; esac; fi
sec puppet_version; printf 'v=%s\\n' "$V"
sec settings; echo "$CFG"
get() {{ printf "%s\\n" "$CFG" | sed -n "s/^$1 = //p"; }}
HC=$(get hostcert); HK=$(get hostprivkey); CA=$(get cadir)
sec ca_key; if [ -f "$CA/ca_key.pem" ]; then echo present; else echo absent; fi
sec ca_cert; [ ! -f "$CA/ca_crt.pem" ] || base64 < "$CA/ca_crt.pem"
sec services
for s in {join(ALL_SERVICES)}; do
  if [ -d /run/systemd/system ]; then
    # A name that is only an alias of another unit (Debian's puppetmaster -> puppet-master) is not a service of its own.
    if systemctl cat "$s.service" >/dev/null 2>&1 && [ "$(systemctl show -p Id "$s.service" 2>/dev/null)" = "Id=$s.service" ]
    then echo "$s $(systemctl is-active "$s.service")"; else echo "$s absent"; fi
  elif [ -x "/etc/init.d/$s" ]; then
    if "/etc/init.d/$s" status >/dev/null 2>&1; then echo "$s active"; else echo "$s inactive"; fi
  else echo "$s absent"; fi
done
# Which server units can reload in place (Puppet Server's SIGHUP): regen's reload path needs it.
sec reloadable; [ ! -d /run/systemd/system ] || for s in {join(SERVER_SERVICES)}; do
  [ "$(systemctl show -p CanReload "$s.service" 2>/dev/null)" = CanReload=yes ] && echo "$s"; done
# The CA's files the reload path freezes to root: one writable by its group or by anyone, or a link,
# cannot be frozen.
sec unfreezable; for n in {join(CA_WRITABLE)}; do if {unfreezable}; then echo "$n"; fi; done
# A regen's freeze of those files cut off before its thaw (they are still root's).
sec ca_freeze; if {saved_freeze_exists()}; then echo left; fi
sec dirs; for d in {join((*MONOLITHIC_DIRS, *COPY_DIRS))}; do [ -d "$d" ] && echo "$d"; done
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
# Runs that did not finish: one `journal PATH` section each, the journal base64-encoded.
for j in {state_dir}/*.journal; do [ -f "$j" ] || continue
  tail -n1 "$j" | grep -q '"event": "finished"' || {{ printf '{marker("journal", "%s")}\\n' "$j"; base64 < "$j"; }}; done
{cert_with_key_from("cert", "HC", "HK")}
"""
