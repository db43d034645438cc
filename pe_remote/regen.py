"""The regen job: discover, preflight, plan, confirm, back up, run the steps, verify.

Whatever fails after the first change (a step, the verification, puppetserver
not answering, Ctrl-C) is rolled back from this run's backup. A lost
connection cannot be rolled back from here: the journal on the master lets the
next `regen` resume the run (default) or roll it back (`--rollback`).
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path

from pe_remote.backup import REMOTE_BACKUP_DIR, Backup, local_backup_dir, prepare_local_dir, remote_backup_path, \
    stream_command, take_backup
from pe_remote.console import Console
from pe_remote.discovery import MasterFacts, discover
from pe_remote.errors import (BackupError, ConnectionFailed, Incomplete, InputError, PeRemoteError, Refused,
                              RolledBack, StepFailed, VerificationFailed)
from pe_remote.executor import Execution, InterruptLatch, execute
from pe_remote.journal import Journal, event, new_run_id, parse_journal
from pe_remote.names import choose_alt_names, sans_to_names
from pe_remote.plan import SERVER_READY_TIMEOUT, Plan, build_plan
from pe_remote.render import render_plan
from pe_remote.commands.steps import failing_checks
from pe_remote.restore import ca_changes, ca_changes_command, put_back, start_services_command
from pe_remote.events import Events, JournalCopy, Listener, Phase, run_job
from pe_remote.report import RunReport
from pe_remote.verify import Verification, check_regen, read_verification

# How long a resume or rollback waits for the interrupted run's steps that still run on the master
# (a step goes on when its connection drops; puppetserver's start is the longest, bounded by systemd).
STEPS_STILL_RUNNING_WAIT = 600
# An unfinished run older than this is resumed, rolled back or abandoned only when named by its id.
STALE_JOURNAL_HOURS = 24


@dataclass(frozen=True)
class RegenOptions:
    alt_names: tuple[str, ...] | None = None  # None: the configured ones and every one the cert carries
    drop_alt_names: tuple[str, ...] = ()  # alt names of the current cert to leave out, named one by one
    dry_run: bool = False
    backup_dir: str = "backups"
    flavor: str | None = None
    force: bool = False  # proceed on a monolithic-looking PE install
    rollback: bool = False  # roll back an unfinished run instead of resuming it
    abandon: bool = False  # close an unfinished run's journal, touching nothing else
    run_id: str | None = None  # the unfinished run meant (needed for one older than STALE_JOURNAL_HOURS)
    server_timeout: int = SERVER_READY_TIMEOUT  # seconds a start, and the server's answer, may take


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
    backup_seconds: float = 0.0

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
    server = facts.service(facts.server_service)
    if server is None or not server.exists:
        raise Refused(f"service {facts.server_service} does not exist on this host: is it a "
                      f"{facts.flavor.title} master? (override the detection with --flavor)")
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
                   dry_run=options.dry_run, report=report, listeners=listeners,
                   resume_hint=": run `regen` again on it to resume, or `regen --rollback`")


def _regen(remote, options: RegenOptions, console: Console, events: Events) -> RegenResult:
    started = time.monotonic()
    events.emit("discovery-started")
    facts = discover(remote, flavor_override=options.flavor)
    events.emit("discovery-finished", facts=facts)
    if facts.unfinished_journals:
        return _continue_unfinished(remote, facts, options, console, started, events)
    if options.rollback or options.abandon or options.run_id:
        raise InputError(f"there is no unfinished run on {remote.target.label} to "
                         f"{'roll back' if options.rollback else 'abandon' if options.abandon else 'resume'}")
    alt_names = choose_alt_names(facts.certname, facts.dns_alt_names,
                                 sans_to_names(facts.certname, facts.cert.sans) if facts.cert else (),
                                 options.alt_names, options.drop_alt_names)
    plan = build_plan(facts, alt_names, server_timeout=options.server_timeout)
    events.emit("planned", facts=facts, alt_names=alt_names, plan=plan)
    label = remote.target.label
    shown = render_plan(plan, stream_command(facts, remote_backup_path(facts)), label)
    # The plan is detail on a real run (terminal and log only); a dry run exists to show it.
    (console.notice if options.dry_run else console.info)(shown)
    if options.dry_run:
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
    console.notice(f"Backing up {facts.ssldir} on {label} ...")
    backup_started = time.monotonic()
    events.emit("backup-started")
    backup = take_backup(remote, facts, folder)
    backup_seconds = time.monotonic() - backup_started
    events.emit("backup-finished", backup=backup)
    console.notice(f"Backup: {backup.local_path} (sha256 {backup.sha256}, {backup_seconds:.1f}s); "
                   f"on the master: {backup.remote.path}")
    journal = Journal(new_run_id(facts.certname), facts, alt_names, backup.remote, str(backup.local_path),
                      local_path=backup.local_path.with_name(backup.local_path.name + ".journal"),
                      warn=console.warn)
    journal.record_local(journal.header())
    remote.run(journal.start_command())
    events.emit("journal-started", journal=journal)
    result = _run_steps(remote, plan, journal, console, started, events, backup=backup)
    result.backup_seconds = backup_seconds
    return result


def _run_steps(remote, plan: Plan, journal: Journal, console: Console, started: float, events: Events, *,
               backup: Backup | None = None, resume: bool = False) -> RegenResult:
    execution = Execution()
    events.subscribe(JournalCopy(journal))
    with InterruptLatch(console) as latch:
        try:
            execute(remote, plan, console, journal=journal, done=tuple(journal.done), latch=latch,
                    resume=resume, run=execution, events=events)
            verification = read_verification(remote, plan.facts, plan.facts.running_services,
                                             agent=plan.facts.flavor.agent_check)
            problems = check_regen(plan, verification)
            if problems:
                raise VerificationFailed("the new cert or the services are not right: " + "; ".join(problems))
        except (StepFailed, VerificationFailed) as exc:
            rollback(remote, journal, console, reason=str(exc), events=events)
        except ConnectionFailed as exc:
            events.enter(Phase.INCOMPLETE)
            raise Incomplete(
                f"{exc}. The master may be part-way through the run {journal.run_id}; its journal is "
                f"{journal.remote_path}. Run `regen` again on it to resume (or `regen --rollback` to put the "
                f"old cert back); backup: {journal.backup.path} on the master, {journal.local_backup} here"
            ) from None
        except Exception as exc:  # noqa: BLE001 - after the first change, whatever it is, put the master back
            rollback(remote, journal, console, reason=f"unexpected error during the run: "
                                                      f"{type(exc).__name__}: {exc}", events=events)
        events.emit("verified", cert=verification.cert)
        try:
            _finish(remote, journal, "ok")
        except ConnectionFailed as exc:
            events.enter(Phase.INCOMPLETE)
            raise Incomplete(f"the cert was regenerated and verified, then {exc} before the run was closed in "
                             f"its journal {journal.remote_path}; run `regen` again on it to close the run "
                             "(every step is found done)") from None
    facts = plan.facts
    events.enter(Phase.DONE)
    result = RegenResult(facts, plan, "ok", backup, execution, verification, remote.commands_run,
                         time.monotonic() - started)
    downtime = f"{execution.downtime:.1f}s" if execution.downtime is not None else "n/a"
    console.notice(f"Regenerated {facts.certname}: serial {result.old_serial} -> {result.new_serial}; "
                 f"downtime {downtime}; {result.commands_run} remote commands; backup {journal.local_backup}")
    return result


def _finish(remote, journal: Journal, outcome: str) -> None:
    line = event("finished", outcome=outcome)
    remote.run(journal.append_command(line))
    journal.record_local(line)


def rollback(remote, journal: Journal, console: Console, *, reason: str, events: Events | None = None) -> None:
    """Put this run's backup back and prove the old cert is served again; always raises (RolledBack, or
    Incomplete when the master could not be put back; the phase says which)."""
    events = events if events is not None else Events()
    try:
        _rollback(remote, journal, console, reason, events)
    except RolledBack:
        events.enter(Phase.ROLLED_BACK)
        raise
    except BaseException:
        events.enter(Phase.INCOMPLETE)
        raise


def _rollback(remote, journal: Journal, console: Console, reason: str, events: Events) -> None:
    facts = journal.facts
    events.emit("rollback-started", reason=reason)
    console.warn(f"{reason}")
    # A step given up as hung may still run on the master (steps outlive their channel): let it end.
    _wait_for_steps_still_running(remote, journal, console)
    # Never put a backup back over a CA that has moved on since (certs signed, a hand restore): that
    # would lose every cert the CA signed since and its serial counter.
    moved_on = ca_changes(remote.run(ca_changes_command(facts, journal.backup.path), check=False).stdout,
                          facts.certname)
    if moved_on:
        remote.run(start_services_command(facts, facts.running_services), check=False)
        raise Incomplete(f"{reason}; NOT rolled back: the CA has changed since the backup {journal.backup.path} "
                         f"was taken ({'; '.join(moved_on)}), so putting it back would lose that. The services "
                         "were started as they are; check the master by hand (README 'Restoring a backup by "
                         f"hand'), then close the run with --abandon {journal.run_id}")
    console.notice(f"Rolling back: restoring the SSL backup {journal.backup.path} ...")
    try:
        outcome = put_back(remote, facts, journal.backup.path, journal.backup.sha256, facts.running_services,
                           console)
    except ConnectionFailed as exc:
        raise Incomplete(f"{reason}; then {exc} before the rollback finished. Run `regen --rollback` on it "
                         f"again when it answers; journal {journal.remote_path}, backup {journal.backup.path}") from None
    except PeRemoteError as exc:
        raise Incomplete(f"{reason}; then the ROLLBACK FAILED too: {exc}. Restore by hand from "
                         f"{journal.backup.path} on the master ({journal.local_backup} here); "
                         "see README 'Restoring a backup by hand'") from None
    old = facts.cert.sha256 if facts.cert else ""
    server_runs = facts.server_service in facts.running_services
    if outcome.disk_sha256 != old or (server_runs and outcome.served_sha256 != old):
        raise Incomplete(f"{reason}; the backup was put back but the master does not serve the old cert "
                         f"(disk {outcome.disk_sha256[:23]}, served {outcome.served_sha256[:23] or 'nothing'}); "
                         f"check the master by hand; backup {journal.backup.path}")
    _finish(remote, journal, "rolled-back")
    raise RolledBack(f"rolled back: {reason}. The master serves its old cert (serial "
                     f"{facts.cert.serial if facts.cert else '?'}) again; the failed SSL folders are kept as "
                     f"{', '.join(outcome.moved_aside)}; backup {journal.local_backup or journal.backup.path}")


def _continue_unfinished(remote, current: MasterFacts, options: RegenOptions, console: Console,
                         started: float, events: Events) -> RegenResult:
    journal = _chosen_journal(current, options, remote.target.label)
    plan = build_plan(journal.facts, journal.alt_names, server_timeout=options.server_timeout)
    events.emit("planned", facts=journal.facts, alt_names=journal.alt_names, plan=plan)
    events.emit("journal-started", journal=journal)
    done = ", ".join(journal.done) or "none"
    console.notice(f"Found an unfinished run {journal.run_id} on {remote.target.label} (journal "
                   f"{journal.remote_path}); completed steps: {done}. Its backup: {journal.backup.path}.")
    if options.abandon:
        if options.dry_run:
            console.notice(f"Dry run: would close run {journal.run_id} as abandoned; nothing was changed.")
            return RegenResult(journal.facts, plan, "dry-run", commands_run=remote.commands_run)
        console.confirm(f"Close run {journal.run_id} as abandoned? Nothing else on the master is touched.")
        _finish(remote, journal, "abandoned")
        console.notice(f"Run {journal.run_id} closed as abandoned; its backup {journal.backup.path} is kept.")
        return RegenResult(journal.facts, plan, "abandoned", commands_run=remote.commands_run)
    if options.dry_run:
        action = "roll it back" if options.rollback else "resume it from the first step not completed"
        console.notice(f"Dry run: would {action}; nothing was changed on the master.")
        return RegenResult(journal.facts, plan, "dry-run", commands_run=remote.commands_run)
    if _wait_for_steps_still_running(remote, journal, console):
        # Steps that were still running have ended since discovery read the journal: read it again.
        journal = parse_journal(journal.remote_path, remote.run(journal.read_command()).stdout)
    if options.rollback:
        console.confirm(f"Roll back run {journal.run_id}: put the backup back and start the services?")
        with InterruptLatch(console):
            rollback(remote, journal, console, reason=f"run {journal.run_id} rolled back on request", events=events)
    _recheck_done_steps(remote, plan, journal)
    console.confirm(f"Resume run {journal.run_id} (no new backup is taken)?")
    console.notice("Resuming: steps whose effect is already there are not run again.")
    return _run_steps(remote, plan, journal, console, started, events, resume=True)


def journal_age_hours(run_id: str, now: datetime | None = None) -> float:
    """How old a run is, from the UTC time its id starts with."""
    when = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - when).total_seconds() / 3600


def _chosen_journal(current: MasterFacts, options: RegenOptions, label: str) -> Journal:
    """The unfinished run to act on: the one named, else the newest, if it is recent enough."""
    journals = {path: text for path, text in current.unfinished_journals}
    named = options.run_id
    if named:
        path = f"{REMOTE_BACKUP_DIR}/{named}.journal"
        if path not in journals:
            ids = ", ".join(p.rsplit("/", 1)[-1].removesuffix(".journal") for p in journals) or "none"
            raise InputError(f"{label} has no unfinished run {named!r} (unfinished: {ids})")
        return parse_journal(path, journals[path])
    path, text = current.unfinished_journals[-1]
    journal = parse_journal(path, text)
    age = journal_age_hours(journal.run_id)
    if age > STALE_JOURNAL_HOURS:
        raise Refused(f"{label} has an unfinished run {journal.run_id} from {age / 24:.1f} days ago: too old to "
                      "resume or roll back without naming it (the master may have changed since; a rollback "
                      f"would put back a {age / 24:.0f}-day-old CA). Say which: --resume {journal.run_id}, "
                      f"--rollback {journal.run_id}, or --abandon {journal.run_id} to close it and touch nothing")
    return journal


def _recheck_done_steps(remote, plan: Plan, journal: Journal) -> None:
    """A step the journal marks done is skipped only if its effect is still there (one remote command).

    A journal can be stale or foreign: a master restored by hand since, say. Checks proving a step
    of THIS run (generate: a serial other than the run's old one) make such a journal fail here,
    before anything is changed, instead of being trusted into a rollback over a CA that has moved on.
    """
    done = set(journal.done)
    known = {step.key for step in plan.steps}
    unknown = sorted(done - known)
    if unknown:
        raise Refused(f"run {journal.run_id}'s journal marks steps this plan does not have ({', '.join(unknown)}); "
                      f"nothing was changed. Close it with --abandon {journal.run_id}")
    to_check = [step for step in plan.steps
                if step.key in done and step.check and not done & set(step.superseded_by)]
    if not to_check:
        return
    script = failing_checks([(step.key, step.check) for step in to_check])
    missing = set(remote.run(script, check=False).stdout.split())
    gone = [step.title for step in to_check if step.key in missing]
    if gone:
        raise Refused(f"run {journal.run_id}'s journal says '{'; '.join(gone)}' was done, but the master does not "
                      "show it: it has changed since that run (put back by hand?). Nothing was changed. If the "
                      f"master is as it should be, close that run with --abandon {journal.run_id}")


def _wait_for_steps_still_running(remote, journal: Journal, console: Console) -> bool:
    """Steps of the interrupted run go on without their connection: let them end before going on.
    True if it had to wait (the journal may have grown since it was read)."""
    if remote.run(journal.steps_running_command(), check=False).ok:
        return False
    console.notice(f"Steps of run {journal.run_id} are still running on the master (they went on when the "
                   f"connection dropped); waiting up to {STEPS_STILL_RUNNING_WAIT}s for them to end ...")
    with console.waiting("steps of the interrupted run"):
        if not remote.run(journal.steps_running_command(wait=STEPS_STILL_RUNNING_WAIT), check=False).ok:
            raise Incomplete(f"steps of run {journal.run_id} still run on the master after "
                             f"{STEPS_STILL_RUNNING_WAIT}s (lock {journal.lock_path}); find them with "
                             f"`fuser -v {journal.lock_path}`, then run `regen` again")
    return True


def backup_only(remote, backup_dir: str, console: Console, flavor: str | None = None) -> Backup:
    """`backup` on its own: discover, then back up and pull; changes nothing else."""
    facts = discover(remote, flavor_override=flavor)
    folder = local_backup_dir(backup_dir, remote.target.label)
    prepare_local_dir(folder)
    backup = take_backup(remote, facts, folder)
    console.notice(f"Backup of {facts.ssldir} from {remote.target.label}: {backup.local_path}")
    console.notice(f"sha256 {backup.sha256} (matches the master's copy {backup.remote.path})")
    return backup
