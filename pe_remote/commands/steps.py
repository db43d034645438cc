"""The commands and checks of the plan's steps, and the service commands rollback and restore share.

Every function returns shell for `sh` on the master; every value is quoted here. What runs when,
and why, is plan.py's business.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pe_remote.commands.facts import service_is_active
from pe_remote.commands.shell import join, q
from pe_remote.names import is_ip_address

if TYPE_CHECKING:
    from pe_remote.discovery import MasterFacts

SERVER_READY_TIMEOUT = 300  # seconds puppetserver may take to answer after a start
# Where backups, run journals and a CA freeze's saved owners live on the master (root-only).
REMOTE_STATE_DIR = "/root/pe-remote-backups"
CA_FREEZE_STATE = f"{REMOTE_STATE_DIR}/ca-freeze.owners"


def fill(template: tuple[str, ...], facts: MasterFacts, alt_names: tuple[str, ...]) -> str:
    """Fill an argv template from the flavor table and quote every word."""
    values = {
        "puppet": facts.puppet,
        "puppetserver": facts.puppetserver or "puppetserver",
        "certname": facts.certname,
        # puppetserver-ca-cli reads an unprefixed name as DNS: an IP must say so.
        "alt_names": ",".join(f"IP:{n}" if facts.flavor.ip_alt_names and is_ip_address(n) else n
                              for n in alt_names),
    }
    words = [word.format(**values) for word in template]
    if not alt_names:
        # No alt names: drop the flag and its value rather than pass an empty list.
        words = [w for w in words if not w.startswith("--dns_alt_names")]
        if "--subject-alt-names" in words:
            at = words.index("--subject-alt-names")
            del words[at:at + 2]
    return join(words)


def service_command(facts: MasterFacts, name: str, ensure: str, *, timeout: int = SERVER_READY_TIMEOUT) -> str:
    command = join([facts.puppet, "resource", "service", name, f"ensure={ensure}"])
    if ensure == "running":
        # A start is bounded by `timeout` seconds: a server that never comes up (Puppet Server with a
        # key it cannot use keeps "activating" until systemd's own limit) fails the step, and the run
        # is rolled back, instead of waiting twice systemd's limit. One retry, only after a QUICK
        # failure: a start can fail transiently on a loaded master (Debian's puppetserver unit races
        # its own privilege drop); a real failure fails twice and the step's check says so.
        bounded = f"timeout {int(timeout)} {command}"
        # `timeout` exits 124 when it had to stop the start: a hang, never retried. One braced command:
        # joined with `&&` (start_all), its `;` would otherwise end the list, and a failed start be
        # followed by the next service's as if it had passed.
        return (f"{{ t=$(date +%s); {bounded} || {{ r=$?; [ $r != 124 ] && [ $(( $(date +%s) - t )) -lt 30 ] "
                f"&& sleep 3 && {bounded}; }}; }}")
    return command


def is_active(facts: MasterFacts, name: str) -> str:
    return service_is_active(facts.init_system, name)


def server_ready_check(facts: MasterFacts, timeout: int = SERVER_READY_TIMEOUT) -> str:
    """Exit 0 once port 8140 serves the cert that is on disk and answers HTTP; 1 after `timeout` seconds.

    What every server generation can show: a TLS handshake on 8140 presenting the hostcert on disk
    (the new one after a regen, the old one after a rollback) and an answer from the CA endpoint
    (with an environment: Puppet 5's Ruby master answers 400 without one; Puppet Server ignores it).
    Puppet Server >= 2.6 also has a status API: where it answers, it must say `running` (it says
    `starting` while services load); a server without it (PE 3.7's, the Ruby `puppet master`)
    answers 404 there and is judged by the two checks alone. The bound is wall-clock seconds.
    """
    return (f"HC={q(facts.hostcert)}; end=$(( $(date +%s) + {int(timeout)} )); why='nothing answered yet'\n"
            'want=$(openssl x509 -in "$HC" -noout -fingerprint -sha256 2>/dev/null) '
            '|| { echo "no readable cert at $HC"; exit 1; }\n'
            'while :; do\n'
            '  left=$(( end - $(date +%s) )); [ $left -gt 0 ] || break; t=$(( left < 5 ? left : 5 ))\n'
            f'  got=$(timeout $t openssl s_client -connect 127.0.0.1:8140 -servername {q(facts.certname)} '
            '</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null)\n'
            '  if [ -z "$got" ]; then why="no TLS handshake on 8140"\n'
            '  elif [ "$got" != "$want" ]; then why="8140 presents a cert other than $HC"\n'
            '  else ca=$(curl -sk --max-time $t -o /dev/null -w "%{http_code}" '
            '"https://127.0.0.1:8140/puppet-ca/v1/certificate/ca?environment=production")\n'
            '    if [ "$ca" != 200 ]; then why="the CA endpoint answered HTTP $ca"\n'
            '    else st=$(curl -sk --max-time $t -w " %{http_code}" https://127.0.0.1:8140/status/v1/simple)\n'
            '      case "$st" in "running 200") exit 0;; *" 200"|*" 503"|*" 000") why="status API: $st";; '
            '*) exit 0;; esac\n'
            '    fi\n'
            '  fi\n'
            '  sleep 1\n'
            'done\n'
            f'echo "port 8140 not ready after {int(timeout)}s: $why"; exit 1')


def stop_all(facts: MasterFacts, names: list[str]) -> str:
    """Stop `names`, in that order, as one command."""
    return " && ".join(service_command(facts, n, "stopped") for n in names) or "true"


def start_all(facts: MasterFacts, names: list[str], *, timeout: int = SERVER_READY_TIMEOUT) -> str:
    """Start `names` in the generation's start order, waiting for the server to answer before the rest."""
    commands = []
    for name in facts.flavor.start_order:
        if name in names:
            commands.append(service_command(facts, name, "running", timeout=timeout))
            if name == facts.server_service:
                commands.append(f"( {server_ready_check(facts, timeout)} )")  # it ends in `exit`
    return " && ".join(commands) or "true"


def none_exist(paths: list[str]) -> str:
    return "for f in " + join(paths) + '; do [ ! -e "$f" ] || { echo "still there: $f"; exit 1; }; done'


def all_nonempty(paths: list[str]) -> str:
    return " && ".join(f"test -s {q(p)}" for p in paths)


def remove_files(paths: list[str]) -> str:
    return "rm -f " + join(paths)


def absent(path: str) -> str:
    return f"test ! -e {q(path)}"


def serial_differs(cert: str, old_serial: str) -> str:
    """Exit 0 only if `cert` is not the cert of serial `old_serial`: THIS run's generate made it
    (a cert put back by hand, or a run that never got that far, still carries the old serial)."""
    return (f"S=$(openssl x509 -in {q(cert)} -noout -serial | sed 's/^serial=0*//'); "
            f"[ -n \"$S\" ] && [ \"$(echo \"$S\" | tr a-f A-F)\" != {q(old_serial.upper() or 'NONE')} ] "
            f"|| {{ echo {q(f'{cert} still has the old serial {old_serial}')}; exit 1; }}")


def serial_revoked(crl: str, serial: str) -> str:
    """Exit 0 only if `serial` is in the CRL file `crl`."""
    return (f"openssl crl -in {q(crl)} -noout -text "
            f"| sed -n 's/^ *Serial Number: *0*//p' | grep -qixF {q(serial)} "
            f"|| {{ echo {q(f'serial {serial} is not in the CRL')}; exit 1; }}")


def tolerate_failure(command: str, why: str) -> str:
    """`command`, its failure reported but not failing the step (its check decides)."""
    return f"{command} || echo \"(exit $?; {why})\""


def copy_files(pairs: list[tuple[str, str]]) -> str:
    return " && ".join(f"cp {q(src)} {q(dst)}" for src, dst in pairs)


def same_files(pairs: list[tuple[str, str]]) -> str:
    return " && ".join(f"cmp -s {q(src)} {q(dst)}" for src, dst in pairs)


def pkcs8_der(key: str, out: str) -> str:
    return f"openssl pkcs8 -topk8 -inform PEM -outform DER -in {q(key)} -out {q(out)} -nocrypt"


def pkcs8_matches_cert(pk8: str, cert: str) -> str:
    return (f"[ \"$(openssl pkey -inform DER -in {q(pk8)} -pubout)\" = "
            f"\"$(openssl x509 -in {q(cert)} -noout -pubkey)\" ]")


def chown_tree(owner: str, folder: str) -> str:
    return f"chown -R {q(owner + ':' + owner)} {q(folder)}"


def private_files(paths: list[str]) -> str:
    return "chmod 600 " + join(paths)


def all_of(commands: list[str]) -> str:
    return " && ".join(commands)


def failing_checks(checks: list[tuple[str, str]]) -> str:
    """Shell that runs each (key, check) and prints the keys whose check fails, one per line."""
    return "\n".join(f"if ( {check}\n) >/dev/null 2>&1 </dev/null 9>&-; then :; else echo {q(key)}; fi"
                     for key, check in checks)


def ca_endpoint_clean(certname: str, hostcert: str, hostkey: str, localcacert: str, fallback: str) -> str:
    """Revoke and delete `certname`'s cert with ONE call of the running CA's clean endpoint (Puppet Server
    6.14+: PUT /puppet-ca/v1/clean), made with the master's own cert, which that call revokes. `puppetserver
    ca clean` makes a second call with it afterwards, which waits for Jetty's idle timeout (about 30 s)
    before it is refused. Where the endpoint is missing or refuses, `fallback` (the CLI) does it."""
    body = json.dumps({"certnames": [certname]})
    return (f"code=$(curl -s --max-time 60 -o /dev/null -w '%{{http_code}}' --resolve {q(certname + ':8140:127.0.0.1')} "
            f"--cacert {q(localcacert)} --cert {q(hostcert)} --key {q(hostkey)} -X PUT "
            f"-H 'Content-Type: application/json' --data {q(body)} {q(f'https://{certname}:8140/puppet-ca/v1/clean')}); "
            f"if [ \"$code\" = 200 ]; then echo 'cleaned through the CA endpoint'; else "
            f"echo \"the CA's clean endpoint answered HTTP $code: cleaning with the CA CLI\"; {fallback}; fi")


# The CA's files a running CA service writes when it signs, revokes or takes a request, and that
# `generate` writes too. While they belong to root, the service cannot write any of them.
CA_WRITABLE = ("signed", "requests", "serial", "inventory.txt", "ca_crl.pem")


def cannot_be_frozen(path: str) -> str:
    """Shell test, true when `path` (a shell word, e.g. "$p") is writable by its group or by anyone, or
    is a symbolic link (find reads a link's own mode, 777): it cannot be frozen to its owner. A link
    would have root give its target away on the thaw. Discovery asks it of CA_WRITABLE before planning
    the reload path; the freeze asks it again before it starts."""
    return f'[ -n "$(find {path} -maxdepth 0 -perm /022 2>/dev/null)" ]'


# Seconds a thaw or a new freeze waits for a freeze still running (a generate cut off from its connection
# goes on, holding the freeze's lock) before it gives up.
FREEZE_LOCK_WAIT = 300


def freeze_lock(state: str = CA_FREEZE_STATE) -> str:
    """Shell: hold the freeze's lock (fd 7, `state`.lock) for the rest of the script, waiting for a freeze
    still running; a generate the freeze runs inherits it, so it is held until that ends too."""
    return (f"if command -v flock >/dev/null 2>&1; then exec 7>>{q(state + '.lock')} && flock -w {FREEZE_LOCK_WAIT} 7 "
            "|| { echo 'a freeze of the CA files is still running (a generate cut off from its connection?): run "
            "this again once it has ended'; exit 1; }; fi\n")


def thaw_saved_freeze(state: str = CA_FREEZE_STATE, *, lock: bool = True) -> str:
    """Shell that gives the CA files back the owners (and the CA folder its mode) a freeze saved in
    `state`, then removes it: a freeze whose shell was cut off (a reboot, a kill) before its thaw. Says
    so on stdout when it does; exits non-zero (the file kept) when it cannot. Nothing saved: nothing done.
    It first takes the freeze's lock (`lock=False`: the caller holds it), so a freeze still running is
    never thawed under its generate.

    The file is checked whole before anything is given back, and refused as damaged (nothing changed)
    unless it is exactly what a freeze writes: `mode=MODE CADIR` first, `ino=DEV:INO CADIR` second, then
    `UID:GID PATH` lines for the CA folder and its CA_WRITABLE files only, and `end` last, once (a file
    cut short by a power loss has none). A saved path gone since is passed over."""
    frozen = "|".join(f'"$D"/{name}' for name in CA_WRITABLE)
    return (f"S={q(state)}\n"
            "if [ -f \"$S\" ]; then\n"
            # Thawed meanwhile (the lock waited for a freeze that ended): nothing to do.
            + (freeze_lock(state) + "if [ -f \"$S\" ]; then\n" if lock else "if :; then\n") +
            "  damaged() { echo \"$S is damaged ($1)\"; exit 1; }\n"
            "  [ \"$(tr -d '\\000' < \"$S\" | wc -c)\" = \"$(wc -c < \"$S\")\" ] || damaged 'a NUL byte'\n"
            "  bad=$(grep -anvE '^(mode=[0-7]{3,4}|ino=[0-9]{1,20}:[0-9]{1,20}|[0-9]{1,10}:[0-9]{1,10}) /|^end$' \"$S\" "
            "| head -n 1)\n"
            "  [ -z \"$bad\" ] || damaged \"line $bad\"\n"
            "  case \"$(head -n 1 \"$S\")\" in mode=*) ;; *) damaged 'no mode line first';; esac\n"
            "  case \"$(sed -n 2p \"$S\")\" in ino=*) ;; *) damaged 'no ino line second';; esac\n"
            "  [ \"$(tail -n 1 \"$S\")\" = end ] || damaged 'cut short: no end line last'\n"
            "  for k in mode= ino= end; do [ \"$(grep -ac \"^$k\" \"$S\")\" = 1 ] || damaged \"more than one $k line\"; done\n"
            "  D=$(head -n 1 \"$S\"); D=${D#* }\n"
            "  while read -r o p; do case \"$o\" in\n"
            "    end) break;;\n"
            "    mode=*|ino=*) [ \"$p\" = \"$D\" ] || damaged \"$o for $p\";;\n"
            f"    *) case \"$p\" in \"$D\"|{frozen}) ;; *) damaged \"$p is not the CA folder or a file it freezes\";; esac;;\n"
            "  esac; done < \"$S\" || exit 1\n"
            # The folder's owner and mode are given back only to the folder that was frozen (its device and
            # inode, from inside it): a path swapped since for a link elsewhere gets nothing. The files,
            # never through a link (chown -h).
            "  M=; I=\n"
            "  while read -r o p; do case \"$o\" in\n"
            "    end) break;;\n"
            "    mode=*) M=${o#mode=};;\n"
            "    ino=*) I=${o#ino=};;\n"
            "    *) if [ \"$p\" = \"$D\" ]; then [ -d \"$p\" ] || continue\n"
            "         ( cd -P -- \"$p\" && [ \"$(stat -c %d:%i .)\" = \"$I\" ] || { echo \"$p is not the CA folder that was "
            "frozen (replaced since?)\"; exit 1; }\n"
            "           chown \"$o\" . && chmod \"$M\" . ) || exit 1\n"
            "       elif [ -e \"$p\" ] || [ -L \"$p\" ]; then chown -h \"$o\" \"$p\" || exit 1; fi;;\n"
            "  esac; done < \"$S\" || exit 1\n"
            "  rm -f \"$S\" && echo \"gave the CA files back the owners saved in $S by a freeze that was cut off\"\n"
            "fi; fi")


def saved_freeze_exists(state: str = CA_FREEZE_STATE) -> str:
    """Shell test: a freeze of the CA files was cut off before its thaw (its saved owners are there)."""
    return f"[ -f {q(state)} ]"


def with_ca_frozen(cadir: str, command: str, state: str = CA_FREEZE_STATE) -> str:
    """Run `command` while the CA's files that it and a signing, revocation or request would write
    (CA_WRITABLE) belong to root, so the running CA service (its own user) cannot write any of them:
    `command` (as root) is their only writer. Their group is kept, so the service still reads them.

    The CA folder itself stays writable by the service's group, but sticky and owned by root: the
    service may still create and replace ITS OWN files there (Puppet Server 8 rewrites its infra_*
    files whenever its CA folder changes, and shuts down when it cannot), never replace or remove a
    frozen one. The freeze refuses to start when a frozen path is group- or world-writable. Every owner,
    and the folder's mode, are put back afterwards, whatever `command` did.

    The owners are saved in `state` (root's) before the freeze and the file removed after the thaw: a
    shell cut off in between (a reboot, a kill) leaves them there, and they are given back from it
    (thaw_saved_freeze) before any new freeze reads the owners, which would otherwise be root's."""
    names = join(CA_WRITABLE)
    # Inside the folder (a cadir elsewhere through a symlink is entered where it points), by relative
    # names: a path swapped for a link while this runs cannot send root's chown or chmod elsewhere.
    # Each file is given back with chown -h; the folder itself is `.`.
    return (f"(umask 077; mkdir -p {q(state.rsplit('/', 1)[0])}) || exit 1\n"
            f"{freeze_lock(state)}"
            f"( {thaw_saved_freeze(state, lock=False)}\n) || {{ echo 'could not give back the owners of a freeze that was cut "
            "off: not generating'; exit 1; }\n"
            f"S={q(state)}; H=$PWD; CAD={q(cadir)}; [ -d \"$CAD\" ] && cd -P -- \"$CAD\" || "
            "{ echo 'no CA folder to freeze'; exit 1; }\n"
            "D=$(pwd -P); MODE=$(stat -c %a .); INO=$(stat -c %d:%i .); set -- \"$(stat -c %u:%g .)\" .\n"
            f"for p in {names}; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then set -- \"$@\" \"$(stat -c %u:%g \"$p\")\" \"$p\"; fi; done\n"
            "save() { echo \"mode=$MODE $D\"; echo \"ino=$INO $D\"; while [ $# -gt 1 ]; do\n"
            "  if [ \"$2\" = . ]; then echo \"$1 $D\"; else echo \"$1 $D/$2\"; fi; shift 2; done; echo end; }\n"
            # Written whole (its `end` line last) and synced, the rename too, before anything is frozen: after
            # a power loss it is there and complete, or the owners were never changed.
            "save \"$@\" > \"$S.new\" && sync \"$S.new\" && mv -f \"$S.new\" \"$S\" && sync \"${S%/*}\" || "
            "{ echo \"could not save and sync the CA files' owners in $S: not generating\"; exit 1; }\n"
            "thaw() { t=0; chmod \"$MODE\" . || t=1; while [ $# -gt 1 ]; do chown -h \"$1\" \"$2\" || t=1; shift 2; done\n"
            "  return $t; }\n"
            "freeze() { shift 2; while [ $# -gt 1 ]; do\n"
            "  if " + cannot_be_frozen('"$2"') + "; then\n"
            "    echo \"$D/$2 is a symbolic link or writable by its group or by anyone: it cannot be frozen to its owner\"; "
            "return 1; fi\n"
            "  chown -h 0 \"$2\" || return 1; shift 2; done\n"
            "  chown -h 0 . && chmod g+w,+t .; }\n"
            "if freeze \"$@\"; then\n"
            # In a subshell, from where the step started: whatever `command` does (an `exit` included), the
            # owners are given back.
            f"  ( cd \"$H\" || exit 1\n  {command}\n  )\n"
            "  rc=$?\n"
            "else echo 'could not give the CA files to root: not generating'; rc=1; fi\n"
            # Kept when a chown failed: the next freeze (or a resume) tries again from it.
            "if thaw \"$@\"; then rm -f \"$S\"; else echo \"could not give every CA file its owner back (saved in $S)\"; rc=1; fi\n"
            "exit $rc")


def reload_service(name: str, *, block: bool = True) -> str:
    """Have `name` read its files again in place (systemd's reload: Puppet Server's SIGHUP; Debian's unit
    waits until the server has restarted its services). `block=False` only queues it: the caller's own
    bounded wait decides (a reload that never completes would otherwise hold the step until systemd's
    own limit)."""
    return join(["systemctl", "reload", *([] if block else ["--no-block"]), f"{name}.service"])
