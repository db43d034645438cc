"""The regen job: discover, preflight, plan, confirm, back up, run the steps, verify.

Whatever fails after the first change (a step, the verification, puppetserver
not answering, Ctrl-C) is rolled back from this run's backup. A lost
connection cannot be rolled back from here: the journal on the master lets the
next `regen` resume the run (default) or roll it back (`--rollback`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pe_remote import runs
from pe_remote.backup import REMOTE_BACKUP_DIR, Backup, backup_while_discovering, local_backup_dir, prepare_local_dir, remote_backup_path, \
    stream_command
from pe_remote.console import Console
from pe_remote.discovery import MasterFacts, discover
from pe_remote.errors import BackupError, InputError, InvalidName, Refused
from pe_remote.executor import Execution
from pe_remote.journal import Journal
from pe_remote.names import choose_alt_names, sans_to_names
from pe_remote.plan import SERVER_READY_TIMEOUT, Plan, build_plan
from pe_remote.render import render_plan
from pe_remote.restore import RestoreOutcome
from pe_remote.events import Events, Listener, run_job
from pe_remote.report import RunReport
from pe_remote.verify import Verification, check_regen, read_verification


@dataclass(frozen=True)
class RegenOptions:
    alt_names: tuple[str, ...] | None = None  # None: the configured ones and every one the cert carries
    # alt_names are the inventory's dns_alt_names, not --dns-alt-names: a resume then finishes the run with
    # its own names instead of refusing names that differ (see refuse_another_request)
    alt_names_from_inventory: bool = False
    drop_alt_names: tuple[str, ...] = ()  # alt names of the current cert to leave out, named one by one
    dry_run: bool = False
    backup_dir: str = "backups"
    flavor: str | None = None
    force: bool = False  # proceed on a monolithic-looking PE install
    rollback: bool = False  # roll back an unfinished run instead of resuming it
    abandon: bool = False  # close an unfinished run's journal, touching nothing else
    run_id: str | None = None  # the unfinished run meant (needed for one older than STALE_JOURNAL_HOURS)
    server_timeout: int = SERVER_READY_TIMEOUT  # seconds a start, and the server's answer, may take
    restart: bool = False  # the stop/start procedure even where the server could reload


@dataclass
class RegenResult:
    facts: MasterFacts
    plan: Plan
    outcome: str  # "ok", "dry-run" or "abandoned"
    backup: Backup | None = None
    execution: Execution | None = None
    verification: Verification | None = None
    commands_run: int = 0
    seconds: float = 0.0

    @property
    def old_serial(self) -> str | None:
        return self.facts.cert.serial if self.facts.cert else None

    @property
    def new_serial(self) -> str | None:
        return self.verification.cert.serial if self.verification else None


def preflight(plan: Plan, *, force: bool = False, local_folder: Path | None = None) -> None:
    """Read-only checks that must all pass before the first change."""
    facts = plan.facts
    if not facts.ca_key_present:
        raise Refused(f"{facts.cadir}/ca_key.pem is absent: this host is not the CA, so it cannot sign "
                      "its own new cert; run pe-remote against the CA master")
    if facts.cert is None:
        raise Refused(f"the master has no cert at {facts.hostcert}: nothing to regenerate")
    # A generation whose server service is missing never gets here: discover() refuses it.
    server = facts.service(facts.server_service)
    if facts.flavor.clean_while_running and not server.active:
        # `puppetserver ca clean` (and the CA's clean endpoint) revoke through the running CA service.
        raise Refused(f"{facts.server_service} is not running, and {facts.flavor.title} cleans the master's cert "
                      f"through its running CA: start it (`systemctl start {facts.server_service}`) and run "
                      "regen again")
    if facts.monolithic_markers and not force:
        raise Refused(
            f"this looks like a monolithic install ({', '.join(facts.monolithic_markers)}): PuppetDB and the "
            "console share the master's cert there, so ALL certs must be regenerated, not the master's alone "
            "(see the PE docs on monolithic installs); use --force only if those markers are leftovers")
    needed_kb = 2 * facts.ssl_kb
    if facts.backup_free_kb < needed_kb:
        raise Refused(f"not enough room on the master for the backup: {REMOTE_BACKUP_DIR} has "
                      f"{facts.backup_free_kb} KiB free, twice the SSL folders' size is {needed_kb} KiB; "
                      "free some space and try again")
    if local_folder is not None:
        prepare_local_dir(local_folder)
        free_kb = shutil.disk_usage(local_folder).free // 1024
        if free_kb < facts.ssl_kb:
            raise BackupError(f"not enough room in {local_folder} for the backup: {free_kb} KiB free, "
                              f"up to {facts.ssl_kb} KiB needed; choose another with --backup-dir")


def regen(remote, options: RegenOptions, console: Console, report: RunReport | None = None, *,
          listeners: tuple[Listener, ...] = ()) -> RegenResult:
    """Run the job. Its events go to the console, to `report` (if given: filled in whatever the
    outcome) and to `listeners`; the exit code is the phase's it ended in (see events.py). One run at
    a time on a master, for the whole run, rollback included."""
    return run_job(remote, console, "regen", lambda events: _regen(remote, options, console, events),
                   dry_run=options.dry_run, report=report, listeners=listeners)


def _regen(remote, options: RegenOptions, console: Console, events: Events) -> RegenResult:
    started = time.monotonic()
    events.emit("discovery-started")
    facts = discover(remote, flavor_override=options.flavor)
    events.emit("discovery-finished", facts=facts)
    label = remote.target.label
    job = RegenJob(remote, events, options.server_timeout)
    # A resume finishes the run as its journal recorded it: flags asking for something else are refused.
    continued = runs.unfinished(remote, facts, job, console, events,
                                runs.Unfinished(options.rollback, options.abandon, options.run_id),
                                dry_run=options.dry_run,
                                vet_resume=lambda journal: refuse_another_request(journal, job, options))
    if continued:
        if continued.outcome != "ok":
            return RegenResult(continued.journal.facts, continued.plan, continued.outcome,
                               commands_run=remote.commands_run)
        return _done(remote, continued.plan, continued.journal, continued.execution, job, console, started)
    alt_names = alt_names_asked(facts, options)
    plan = build_plan(facts, alt_names, server_timeout=options.server_timeout, restart=options.restart)
    events.emit("planned", facts=facts, alt_names=alt_names, plan=plan)
    shown = render_plan(plan, stream_command(facts, remote_backup_path(facts)), label)
    # The plan is detail on a real run (terminal and log only); a dry run exists to show it.
    (console.notice if options.dry_run else console.info)(shown)
    runs.warn_of_left_freeze(facts, console, dry_run=options.dry_run)
    if options.dry_run:
        # The real run's checks, with its exit code, after the plan; not the local backup folder's (a dry
        # run creates nothing).
        preflight(plan, force=options.force)
        console.notice("Dry run: nothing was changed on the master.")
        return RegenResult(facts, plan, "dry-run", commands_run=remote.commands_run,
                           seconds=time.monotonic() - started)
    folder = local_backup_dir(options.backup_dir, label)
    preflight(plan, force=options.force, local_folder=folder)
    if plan.dropped_sans:
        # Only names dropped with --drop-alt-names get here (choose_alt_names refuses any other).
        console.warn(f"the new cert will NOT carry {', '.join(plan.dropped_sans)}, which the current cert has "
                     "(--drop-alt-names): agents reaching the master by those names will fail")
        console.confirm(f"Drop {', '.join(plan.dropped_sans)} from {facts.certname}'s cert?")
    console.confirm(f"Regenerate the cert of {facts.certname} on {label} with alt names "
                    f"{', '.join(alt_names) or '(none)'}? Puppet services stop until it is done.")
    backup, journal, execution = runs.back_up_and_run(remote, facts, plan, job, console, events, folder=folder,
                                                      alt_names=alt_names, record={"restart": options.restart})
    return _done(remote, plan, journal, execution, job, console, started, backup)


def alt_names_asked(facts: MasterFacts, options: RegenOptions) -> tuple[str, ...]:
    """The alt names the new cert of the master `facts` describe gets, given the flags (InvalidName if
    they ask for something that does not fit it)."""
    return choose_alt_names(facts.certname, facts.dns_alt_names,
                            sans_to_names(facts.certname, facts.cert.sans) if facts.cert else (),
                            options.alt_names, options.drop_alt_names)


def refuse_another_request(journal: Journal, job: "RegenJob", options: RegenOptions) -> None:
    """Resuming `journal`'s run: --dns-alt-names, --drop-alt-names or --restart given and asking for other
    alt names or another path than the run recorded are refused (InputError, nothing touched). The same
    request again passes: the names these flags give on the run's master as it was (its journalled facts),
    compared as a set; --restart where the run takes the stop/start path anyway."""
    differences, flags = [], []
    names_flags = [flag for flag, given in (
        ("--dns-alt-names", options.alt_names is not None and not options.alt_names_from_inventory),
        ("--drop-alt-names", bool(options.drop_alt_names))) if given]
    if names_flags:
        try:
            asked = alt_names_asked(journal.facts, options)
            same, said = set(asked) == set(journal.alt_names), ", ".join(asked) or "none"
        except InvalidName as exc:
            same, said = False, f"what the flags given ask for, which does not fit that run ({exc})"
        if not same:
            flags += names_flags
            differences.append(f"alt names {', '.join(journal.alt_names) or 'none'}, not {said}")
    if options.restart and job.plan(journal).path != "restart":
        flags.append("--restart")
        differences.append("the reload path, not the stop/start procedure of --restart")
    if differences:
        raise InputError(f"the unfinished run {journal.run_id} uses {'; '.join(differences)}: finish it as recorded "
                         f"(run regen again without {' and '.join(flags)}), or `regen --rollback` / "
                         f"`regen --abandon {journal.run_id}` first; nothing was changed")


class RegenJob:
    """regen's side of a journalled run (runs.Job): the plan from the journal, the proof, the rollback's."""

    task = "regen"

    def __init__(self, remote, events: Events, server_timeout: int = SERVER_READY_TIMEOUT) -> None:
        self.remote, self.events, self.server_timeout = remote, events, server_timeout
        self.verification: Verification | None = None

    def plan(self, journal: Journal) -> Plan:
        # The path the run took: the journal's facts say whether the server could reload, its job
        # whether --restart was given.
        return build_plan(journal.facts, journal.alt_names, server_timeout=self.server_timeout,
                          restart=journal.job.get("restart") is True)

    def proof(self, journal: Journal, plan: Plan) -> runs.Proof:
        facts = plan.facts

        def check() -> list[str]:
            self.verification = read_verification(self.remote, facts, facts.running_services,
                                                  agent=facts.flavor.agent_check)
            return check_regen(plan, self.verification)

        def not_back(outcome: RestoreOutcome) -> str | None:
            old = facts.cert.sha256 if facts.cert else ""
            server_runs = facts.server_service in facts.running_services
            if outcome.disk_sha256 != old or (server_runs and outcome.served_sha256 != old):
                return (f"the master does not serve the old cert (disk {outcome.disk_sha256[:23]}, served "
                        f"{outcome.served_sha256[:23] or 'nothing'})")
            return None

        return runs.Proof("cert", "the new cert or the services are not right", check, not_back,
                          f"The master serves its old cert (serial {facts.cert.serial if facts.cert else '?'}) again",
                          proven=lambda: self.events.emit("verified", cert=self.verification.cert),
                          server_timeout=self.server_timeout)


def _done(remote, plan: Plan, journal: Journal, execution: Execution, job: RegenJob, console: Console,
          started: float, backup: Backup | None = None) -> RegenResult:
    facts = plan.facts
    result = RegenResult(facts, plan, "ok", backup, execution, job.verification, remote.commands_run,
                         time.monotonic() - started)
    downtime = f"{execution.downtime:.1f}s" if execution.downtime is not None else "n/a"
    console.notice(f"Regenerated {facts.certname}: serial {result.old_serial} -> {result.new_serial}; "
                   f"downtime {downtime}; {result.commands_run} remote commands; backup {journal.local_backup}")
    return result


def backup_only(remote, backup_dir: str, console: Console, flavor: str | None = None) -> Backup:
    """`backup` on its own: discover, then back up and pull; changes nothing else."""
    folder = local_backup_dir(backup_dir, remote.target.label)
    facts, backup = backup_while_discovering(remote, folder,
                                           lambda: discover(remote, flavor_override=flavor, background=True))
    console.notice(f"Backup of {facts.ssldir} from {remote.target.label}: {backup.local_path}")
    console.notice(f"sha256 {backup.sha256} (matches the master's copy {backup.remote.path})")
    return backup
