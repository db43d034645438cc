"""The procedure as data: ordered steps built from the master's facts.

Each step has the remote command that does it, a remote check that exits 0 only
when its effect is really there, the command that undoes it (where one exists;
the rest is undone by restoring the SSL backup), and the steps it needs done
first (by default the one listed before it). Nothing here talks to a master:
`build_plan` is a pure function, so `--dry-run` prints exactly what a real run
executes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pe_remote.discovery import MasterFacts
from pe_remote.errors import InvalidName
from pe_remote.names import is_ip_address, san_entries
from pe_remote.shell import join, q

SERVER_READY_TIMEOUT = 300  # seconds puppetserver may take to answer after a start


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    command: str
    check: str | None = None
    undo: str | None = None
    # True for the step whose end closes the downtime window (the server answers again).
    server_ready: bool = False
    # Keys of the steps that must be done before this one starts; None: the step listed before it.
    # Steps whose needs are met run at the same time (the executor's own channels, one connection).
    needs: tuple[str, ...] | None = None
    # Later steps that undo what this step's check looks at (a start undoes a stop, generate re-creates
    # the files clean removed): once one of them is done, this check no longer proves anything.
    superseded_by: tuple[str, ...] = ()
    # Seconds the workstation waits for the step before it is given up as hung (the step's own
    # bounds, such as the server wait's, are shorter: this catches what has none).
    timeout: float = 900


@dataclass(frozen=True)
class Plan:
    facts: MasterFacts
    alt_names: tuple[str, ...]
    steps: tuple[Step, ...]
    skipped_services: tuple[str, ...]  # in the procedure but not on this host
    stopped_services: tuple[str, ...]  # on the host, already stopped: left stopped
    dropped_sans: tuple[str, ...]  # in the current cert but not in the new one

    @property
    def expected_sans(self) -> frozenset[str]:
        return san_entries(self.facts.certname, self.alt_names)

    def commands(self) -> list[str]:
        return [step.command for step in self.steps]

    def needs(self) -> dict[str, tuple[str, ...]]:
        """Each step's prerequisites, the defaults filled in; every key must be of an earlier step."""
        resolved: dict[str, tuple[str, ...]] = {}
        previous: tuple[str, ...] = ()
        for step in self.steps:
            needs = previous if step.needs is None else step.needs
            unknown = [key for key in needs if key not in resolved]
            if unknown or step.key in resolved:
                raise ValueError(f"step {step.key!r} needs {unknown or step.key!r}, not an earlier step")
            resolved[step.key] = needs
            previous = (step.key,)
        return resolved


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
        # `timeout` exits 124 when it had to stop the start: a hang, never retried.
        return (f"t=$(date +%s); {bounded} || {{ r=$?; [ $r != 124 ] && [ $(( $(date +%s) - t )) -lt 30 ] "
                f"&& sleep 3 && {bounded}; }}")
    return command


def service_is_active(facts: MasterFacts, name: str) -> str:
    if facts.init_system == "systemd":
        return f"systemctl is-active --quiet {q(name + '.service')}"
    return f"/etc/init.d/{q(name)} status >/dev/null 2>&1"


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


def cert_files(facts: MasterFacts) -> list[str]:
    """Every file Puppet keeps for the master's own cert."""
    name = f"{facts.certname}.pem"
    return [f"{facts.ssldir}/{sub}/{name}" for sub in
            ("certs", "private_keys", "public_keys", "certificate_requests")] + [f"{facts.cadir}/signed/{name}"]


def _none_exist(paths: list[str]) -> str:
    return "for f in " + " ".join(q(p) for p in paths) + '; do [ ! -e "$f" ] || { echo "still there: $f"; exit 1; }; done'


def serial_differs(cert: str, old_serial: str) -> str:
    """Exit 0 only if `cert` is not the cert of serial `old_serial`: THIS run's generate made it
    (a cert put back by hand, or a run that never got that far, still carries the old serial)."""
    return (f"S=$(openssl x509 -in {q(cert)} -noout -serial | sed 's/^serial=0*//'); "
            f"[ -n \"$S\" ] && [ \"$(echo \"$S\" | tr a-f A-F)\" != {q(old_serial.upper() or 'NONE')} ] "
            f"|| {{ echo \"{cert} still has the old serial {old_serial}\"; exit 1; }}")


def old_serial_revoked(facts: MasterFacts) -> str:
    """Exit 0 only if the current cert's serial is in the CA's CRL (the first CRL: the signing CA's)."""
    serial = facts.cert.serial if facts.cert else "NONE"
    return (f"openssl crl -in {q(facts.cadir + '/ca_crl.pem')} -noout -text "
            f"| sed -n 's/^ *Serial Number: *0*//p' | grep -qix {q(serial)} "
            f"|| {{ echo 'serial {serial} is not in the CRL'; exit 1; }}")


def _service_step(facts: MasterFacts, name: str, ensure: str, timeout: int = SERVER_READY_TIMEOUT) -> Step:
    if ensure == "stopped":
        return Step(f"stop:{name}", f"Stop {name}", service_command(facts, name, "stopped"),
                    check=f"! {service_is_active(facts, name)}",
                    undo=service_command(facts, name, "running", timeout=timeout))
    return Step(f"start:{name}", f"Start {name}", service_command(facts, name, "running", timeout=timeout),
                check=service_is_active(facts, name), undo=service_command(facts, name, "stopped"),
                timeout=2 * timeout + 60)


def _clean_step(facts: MasterFacts, alt_names: tuple[str, ...]) -> Step:
    command = fill(facts.flavor.clean, facts, alt_names)
    if facts.flavor.clean_while_running:
        # `puppetserver ca clean` revokes, then deletes the CA's copy with a second call made
        # with the master's own client cert, which the CA may already refuse as revoked (or the
        # cert may be gone from an earlier attempt). The clean has worked when the old serial
        # is in the CA's CRL, whatever the exit code; the leftovers are deleted after the stop.
        command = f"{command} || echo \"(exit $?; the CA's CRL decides)\""
        check = old_serial_revoked(facts)
    else:
        # `puppet cert clean` revokes the cert and deletes the cert, key, request and the CA's copy; it
        # leaves public_keys/ (generate overwrites it). Both halves are checked: files gone, serial revoked.
        kept = f"{facts.ssldir}/public_keys/{facts.certname}.pem"
        check = _none_exist([p for p in cert_files(facts) if p != kept]) + " && " + old_serial_revoked(facts)
        # generate re-creates the files: then the files half proves nothing (verification checks the CRL).
        return Step("clean", f"Clean the cert of {facts.certname}", command, check, superseded_by=("generate",))
    return Step("clean", f"Clean the cert of {facts.certname}", command, check)


def _copy_credentials_step(facts: MasterFacts) -> Step | None:
    """Refresh a service's copies of the master's credentials (PE 2016.4-2018.1: orchestration-services)."""
    if not facts.credential_copies:
        return None
    name = facts.certname
    sources = {kind: f"{facts.ssldir}/{sub}/{name}.pem" for kind, sub in
               (("cert", "certs"), ("public_key", "public_keys"), ("private_key", "private_keys"))}
    commands, checks = [], []
    for copy in facts.credential_copies:
        targets = {kind: f"{copy.folder}/{name}.{kind}.pem" for kind in sources}
        commands += [f"cp {q(sources[kind])} {q(targets[kind])}" for kind in sources]
        checks += [f"cmp -s {q(sources[kind])} {q(targets[kind])}" for kind in sources]
        private = [targets["private_key"]]
        if copy.pk8:
            pk8 = f"{copy.folder}/{name}.private_key.pk8"
            private.append(pk8)
            commands.append(f"openssl pkcs8 -topk8 -inform PEM -outform DER -in {q(targets['private_key'])} "
                            f"-out {q(pk8)} -nocrypt")
            checks.append(f"[ \"$(openssl pkey -inform DER -in {q(pk8)} -pubout)\" = "
                          f"\"$(openssl x509 -in {q(sources['cert'])} -noout -pubkey)\" ]")
        commands.append(f"chown -R {q(copy.owner + ':' + copy.owner)} {q(copy.folder)}")
        commands.append("chmod 600 " + " ".join(q(p) for p in private))
    folders = ", ".join(c.folder for c in facts.credential_copies)
    return Step("copy-credentials", f"Copy the new credentials to {folders}", " && ".join(commands),
                check=" && ".join(checks))


def _mark_superseded(steps: list[Step]) -> list[Step]:
    """Which later steps make an earlier step's check meaningless (see Step.superseded_by)."""
    keys = [step.key for step in steps]
    starts = tuple(k for k in keys if k.startswith("start:"))
    marked = []
    for step in steps:
        later: tuple[str, ...] = ()
        if step.key.startswith("stop:") and "start:" + step.key[5:] in keys:
            later = ("start:" + step.key[5:],)
        elif step.key == "remove-catalog":
            later = starts  # the agent, once started, may cache a new catalog
        marked.append(replace(step, superseded_by=step.superseded_by + later))
    return marked


def build_plan(facts: MasterFacts, alt_names: tuple[str, ...], *, server_timeout: int = SERVER_READY_TIMEOUT) -> Plan:
    """The ordered steps for this master, its generation and the wanted alt names."""
    flavor = facts.flavor
    ips = [name for name in alt_names if is_ip_address(name)]
    if ips and not flavor.ip_alt_names:
        raise InvalidName(f"{flavor.title} cannot put IP addresses in a cert (`puppet cert generate` makes every "
                          f"alt name a DNS name): drop {', '.join(ips)} from the alt names")
    present = {s.name: s for s in facts.services if s.exists}
    skipped = tuple(name for name in flavor.services if name not in present)
    stopped_before = tuple(name for name in flavor.services if name in present and not present[name].active)
    running = facts.running_services

    # Services with their own copies of the credentials stop alongside the cert work and start
    # alongside the services after the server; every other service is in the main chain, in the
    # table's order. Without such services every step simply follows the one before it.
    side = [name for name in running if name in flavor.own_credentials]
    main = [name for name in running if name not in side]

    steps: list[Step] = []
    if flavor.clean_while_running:
        steps.append(_clean_step(facts, alt_names))
    steps += [_service_step(facts, name, "stopped") for name in main]
    main_stopped = (steps[-1].key,) if steps else ()
    side_stops = [_service_step(facts, name, "stopped") for name in side]
    if side_stops:
        side_stops[0] = replace(side_stops[0], needs=main_stopped)
    steps += side_stops

    cert_work: list[Step] = [] if flavor.clean_while_running else [_clean_step(facts, alt_names)]
    if flavor.delete_leftover_files:
        files = cert_files(facts)
        cert_work.append(Step("delete-leftovers", f"Delete what is left of {facts.certname}'s cert files",
                              "rm -f " + " ".join(q(p) for p in files), check=_none_exist(files),
                              superseded_by=("generate",)))
    cert_work.append(Step("remove-catalog", "Remove the cached catalog", f"rm -f {q(facts.catalog_path)}",
                          check=f"test ! -e {q(facts.catalog_path)}"))
    new_cert = f"{facts.ssldir}/certs/{facts.certname}.pem"
    cert_work.append(Step("generate", f"Generate a new cert for {facts.certname}",
                          fill(flavor.generate, facts, alt_names),
                          check=" && ".join(f"test -s {q(p)}" for p in
                                            (new_cert, f"{facts.ssldir}/private_keys/{facts.certname}.pem",
                                             f"{facts.cadir}/signed/{facts.certname}.pem"))
                          + " && " + serial_differs(new_cert, facts.cert.serial if facts.cert else "")))
    copies = _copy_credentials_step(facts)
    if copies:
        cert_work.append(copies)
    if side_stops:
        cert_work[0] = replace(cert_work[0], needs=main_stopped)
    steps += cert_work

    server = facts.server_service
    main_starts = [name for name in flavor.start_order if name in main]
    up_to_server = main_starts[:main_starts.index(server) + 1] if server in main_starts else main_starts
    steps += [_service_step(facts, name, "running", server_timeout) for name in up_to_server]
    if server in up_to_server:
        steps.append(Step("wait-server", f"Wait for {server} to serve the new cert on 8140",
                          server_ready_check(facts, server_timeout), server_ready=True,
                          timeout=server_timeout + 60))
    server_up = (steps[-1].key,)
    side_starts = [_service_step(facts, name, "running", server_timeout) for name in flavor.start_order if name in side]
    if side_starts:
        side_starts[0] = replace(side_starts[0], needs=server_up + (side_stops[-1].key,))
    steps += side_starts
    later_starts = [_service_step(facts, name, "running", server_timeout)
                    for name in main_starts[len(up_to_server):]]
    if later_starts and side_starts:
        later_starts[0] = replace(later_starts[0], needs=server_up)
    steps += later_starts

    steps = _mark_superseded(steps)
    current = facts.cert.sans if facts.cert else frozenset()
    wanted = san_entries(facts.certname, alt_names)
    dropped = tuple(sorted(current - wanted))
    return Plan(facts, alt_names, tuple(steps), skipped, stopped_before, dropped)
