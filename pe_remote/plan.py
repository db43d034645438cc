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

from pe_remote.commands import steps as sh
from pe_remote.commands.steps import SERVER_READY_TIMEOUT, fill, server_ready_check, service_command
from pe_remote.discovery import MasterFacts
from pe_remote.errors import InvalidName
from pe_remote.names import is_ip_address, san_entries

__all__ = ["Plan", "Step", "build_plan", "SERVER_READY_TIMEOUT", "fill", "server_ready_check", "service_command"]


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    command: str
    check: str | None = None
    undo: str | None = None
    # True for the step whose end closes the downtime window (the server answers again).
    server_ready: bool = False
    # True for the step whose start opens it (the server stops serving). A plan without one: its
    # first stop opens it.
    opens_window: bool = False
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
    # regen: "reload" (the server reads the new cert on a reload) or "restart" (stop/start); None elsewhere.
    path: str | None = None
    path_why: str = ""  # why this path, for the plan shown

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

    def running_again(self, keys: tuple[str, ...]) -> "Plan":
        """The plan for a resume that runs done steps `keys` again (their effect was gone): every later
        step also needs them, so a stop run again ends before the start after it begins, as in a first
        run (the resume runs the steps not done from where the run stopped, at the same time where
        their needs are met)."""
        needs = self.needs()
        steps, earlier = [], []
        for step in self.steps:
            extra = tuple(key for key in earlier if key not in needs[step.key])
            steps.append(replace(step, needs=needs[step.key] + extra) if extra else step)
            if step.key in keys:
                earlier.append(step.key)
        return replace(self, steps=tuple(steps))


def cert_files(facts: MasterFacts) -> list[str]:
    """Every file Puppet keeps for the master's own cert."""
    name = f"{facts.certname}.pem"
    return [f"{facts.ssldir}/{sub}/{name}" for sub in
            ("certs", "private_keys", "public_keys", "certificate_requests")] + [f"{facts.cadir}/signed/{name}"]


def old_serial_revoked(facts: MasterFacts) -> str:
    """Exit 0 only if the current cert's serial is in the CA's CRL (the first CRL: the signing CA's)."""
    return sh.serial_revoked(facts.cadir + "/ca_crl.pem", facts.cert.serial if facts.cert else "NONE")


def _service_step(facts: MasterFacts, name: str, ensure: str, timeout: int = SERVER_READY_TIMEOUT) -> Step:
    if ensure == "stopped":
        return Step(f"stop:{name}", f"Stop {name}", service_command(facts, name, "stopped"),
                    check=f"! {sh.is_active(facts, name)}",
                    undo=service_command(facts, name, "running", timeout=timeout))
    return Step(f"start:{name}", f"Start {name}", service_command(facts, name, "running", timeout=timeout),
                check=sh.is_active(facts, name), undo=service_command(facts, name, "stopped"),
                timeout=2 * timeout + 60)


def _clean_step(facts: MasterFacts, alt_names: tuple[str, ...]) -> Step:
    command = fill(facts.flavor.clean, facts, alt_names)
    if facts.flavor.clean_endpoint:
        command = sh.ca_endpoint_clean(facts.certname, facts.hostcert, facts.hostprivkey,
                                       f"{facts.ssldir}/certs/ca.pem", command)
    if facts.flavor.clean_while_running:
        # `puppetserver ca clean` revokes, then deletes the CA's copy with a second call made
        # with the master's own client cert, which the CA may already refuse as revoked (or the
        # cert may be gone from an earlier attempt). The clean has worked when the old serial
        # is in the CA's CRL, whatever the exit code; the leftovers are deleted after the stop.
        command = sh.tolerate_failure(command, "the CA's CRL decides")
        check = old_serial_revoked(facts)
    else:
        # `puppet cert clean` revokes the cert and deletes the cert, key, request and the CA's copy; it
        # leaves public_keys/ (generate overwrites it). Both halves are checked: files gone, serial revoked.
        kept = f"{facts.ssldir}/public_keys/{facts.certname}.pem"
        check = sh.all_of([sh.none_exist([p for p in cert_files(facts) if p != kept]), old_serial_revoked(facts)])
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
        pairs = [(sources[kind], targets[kind]) for kind in sources]
        commands.append(sh.copy_files(pairs))
        checks.append(sh.same_files(pairs))
        private = [targets["private_key"]]
        if copy.pk8:
            pk8 = f"{copy.folder}/{name}.private_key.pk8"
            private.append(pk8)
            commands.append(sh.pkcs8_der(targets["private_key"], pk8))
            checks.append(sh.pkcs8_matches_cert(pk8, sources["cert"]))
        commands.append(sh.chown_tree(copy.owner, copy.folder))
        commands.append(sh.private_files(private))
    folders = ", ".join(c.folder for c in facts.credential_copies)
    return Step("copy-credentials", f"Copy the new credentials to {folders}", sh.all_of(commands),
                check=sh.all_of(checks))


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


def _generate_step(facts: MasterFacts, alt_names: tuple[str, ...], *, online: bool = False) -> Step:
    flavor = facts.flavor
    new_cert = f"{facts.ssldir}/certs/{facts.certname}.pem"
    command = fill(flavor.generate, facts, alt_names)
    if online:
        # Beside the running CA: its writable files frozen to root, so the CLI is the only writer.
        command = sh.with_ca_frozen(facts.cadir, fill(flavor.generate_online, facts, alt_names))
    return Step("generate", f"Generate a new cert for {facts.certname}", command,
                check=sh.all_of([sh.all_nonempty([new_cert, f"{facts.ssldir}/private_keys/{facts.certname}.pem",
                                                  f"{facts.cadir}/signed/{facts.certname}.pem"]),
                                 sh.serial_differs(new_cert, facts.cert.serial if facts.cert else "")]))


def _cert_work(facts: MasterFacts, alt_names: tuple[str, ...], *, online: bool = False) -> list[Step]:
    """What the cert work is after the clean: leftovers deleted, catalog removed, generate, copies."""
    steps: list[Step] = []
    if facts.flavor.delete_leftover_files:
        files = cert_files(facts)
        steps.append(Step("delete-leftovers", f"Delete what is left of {facts.certname}'s cert files",
                          sh.remove_files(files), check=sh.none_exist(files), superseded_by=("generate",)))
    steps.append(Step("remove-catalog", "Remove the cached catalog", sh.remove_files([facts.catalog_path]),
                      check=sh.absent(facts.catalog_path)))
    steps.append(_generate_step(facts, alt_names, online=online))
    copies = _copy_credentials_step(facts)
    if copies:
        steps.append(copies)
    return steps


def _wait_server_step(facts: MasterFacts, server_timeout: int) -> Step:
    """The step that closes the window: 8140 presents the new cert (bounded by --server-timeout)."""
    return Step("wait-server", f"Wait for {facts.server_service} to serve the new cert on 8140",
                server_ready_check(facts, server_timeout), server_ready=True, timeout=server_timeout + 60)


def _reload_steps(facts: MasterFacts, alt_names: tuple[str, ...], server_timeout: int) -> list[Step]:
    """The reload path: the other services stop, the cert is cleaned and made while the server still serves
    the old one, then the server reloads (its window) and the others start again."""
    flavor, server = facts.flavor, facts.server_service
    others = [name for name in facts.running_services if name != server]
    steps = [_service_step(facts, name, "stopped") for name in others]
    steps.append(_clean_step(facts, alt_names))
    steps += _cert_work(facts, alt_names, online=True)
    # Queued only: the wait that follows is bounded by --server-timeout, and it passes only once 8140
    # presents the NEW cert (the old one is served until the reload has happened).
    steps.append(Step(f"reload:{server}", f"Reload {server} (it reads the new cert)",
                      sh.reload_service(server, block=False), opens_window=True))
    steps.append(_wait_server_step(facts, server_timeout))
    steps += [_service_step(facts, name, "running", server_timeout) for name in flavor.start_order if name in others]
    return steps


def _unfreezable(facts: MasterFacts) -> str:
    """Why the reload path is not taken where the CA's files cannot be frozen while the server runs."""
    names = ", ".join(facts.ca_unfreezable)
    return (f"the CA's {names} {'is' if len(facts.ca_unfreezable) == 1 else 'are'} writable by group or others, "
            f"or a symbolic link, so the running CA could write them while the new cert is made; `chmod go-w` them "
            f"(a link: put its file in its place) in {facts.cadir} for the reload path")


def build_plan(facts: MasterFacts, alt_names: tuple[str, ...], *, server_timeout: int = SERVER_READY_TIMEOUT,
               restart: bool = False) -> Plan:
    """The ordered steps for this master, its generation and the wanted alt names: the reload path where
    the server can read a new cert in place (MasterFacts.server_reloads) unless `restart`, else the
    generation's stop / clean / generate / start."""
    flavor = facts.flavor
    ips = [name for name in alt_names if is_ip_address(name)]
    if ips and not flavor.ip_alt_names:
        raise InvalidName(f"{flavor.title} cannot put IP addresses in a cert (`puppet cert generate` makes every "
                          f"alt name a DNS name): drop {', '.join(ips)} from the alt names")
    present = {s.name: s for s in facts.services if s.exists}
    skipped = tuple(name for name in flavor.services if name not in present)
    stopped_before = tuple(name for name in flavor.services if name in present and not present[name].active)
    running = facts.running_services
    current = facts.cert.sans if facts.cert else frozenset()
    dropped = tuple(sorted(current - san_entries(facts.certname, alt_names)))
    server = facts.server_service
    if facts.server_reloads and not facts.ca_unfreezable and not restart:
        return Plan(facts, alt_names, tuple(_mark_superseded(_reload_steps(facts, alt_names, server_timeout))),
                    skipped, stopped_before, dropped, "reload",
                    f"{server} keeps serving the old cert until it reloads; the CA's files belong to root while the "
                    "new cert is signed, so nothing else can write them; --restart for the stop/start procedure")
    why = ("--restart" if restart and facts.server_reloads else
           f"{flavor.title} reads a new cert only on a start" if not flavor.reloads_in_place else
           f"{server} is not running" if server not in running else
           f"the {server} unit cannot reload (no ExecReload)" if not facts.server_reloads else
           _unfreezable(facts))

    # Services with their own copies of the credentials stop alongside the cert work and start
    # alongside the services after the server; every other service is in the main chain, in the
    # table's order. Without such services every step simply follows the one before it.
    side = [name for name in running if name in flavor.own_credentials]
    main = [name for name in running if name not in side]

    steps: list[Step] = []
    if flavor.clean_while_running:
        steps.append(_clean_step(facts, alt_names))
    # The agent stops at the same time as the first of the others (the clean, where there is one, before
    # both); the others stop one after another, in the table's order.
    before = tuple(step.key for step in steps)
    agents = [_service_step(facts, name, "stopped") for name in main if name in flavor.agent_services]
    chain = [_service_step(facts, name, "stopped") for name in main if name not in flavor.agent_services]
    if agents and chain:
        agents = [replace(stop, needs=before) for stop in agents]
        chain[0] = replace(chain[0], needs=before)
    steps += agents + chain
    main_stopped = tuple(stop.key for stop in agents) + ((chain[-1].key,) if chain else ())
    if not main_stopped and before:
        main_stopped = before
    side_stops = [_service_step(facts, name, "stopped") for name in side]
    if side_stops:
        side_stops[0] = replace(side_stops[0], needs=main_stopped)
    steps += side_stops

    cert_work: list[Step] = [] if flavor.clean_while_running else [_clean_step(facts, alt_names)]
    cert_work += _cert_work(facts, alt_names)
    # Puppet 6+ (the clean already done, before the stops): cert work that needs less than every stop
    # starts alongside the server's stop: removing the cached catalog (the agent's own file) once the agent
    # is stopped; deleting the cleaned cert's leftover files (which only a server start would read) once
    # the clean is done. Generate waits for every stop. The `puppet cert` generations keep the seed's order.
    early: list[Step] = []
    if chain and flavor.clean_while_running:
        agent_keys = tuple(stop.key for stop in agents)
        early = [replace(step, needs=agent_keys if step.key == "remove-catalog" else before) for step in cert_work
                 if (step.key == "remove-catalog" and agent_keys) or (step.key == "delete-leftovers" and before)]
    rest = [step for step in cert_work if step.key not in {e.key for e in early}]
    if side_stops or len(main_stopped) > 1 or early:
        rest[0] = replace(rest[0], needs=main_stopped + tuple(step.key for step in early))
    steps += early + rest

    main_starts = [name for name in flavor.start_order if name in main]
    up_to_server = main_starts[:main_starts.index(server) + 1] if server in main_starts else main_starts
    steps += [_service_step(facts, name, "running", server_timeout) for name in up_to_server]
    if server in up_to_server:
        steps.append(_wait_server_step(facts, server_timeout))
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

    return Plan(facts, alt_names, tuple(_mark_superseded(steps)), skipped, stopped_before, dropped, "restart", why)
