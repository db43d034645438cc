"""A journalled run, whatever the job that changes the master (`regen`, `refresh-crl`, `extend-ca`).

Each step is journalled on the master (begin/end, see journal.py); after the steps the job's proof
runs; whatever fails is rolled back from the run's backup, and a lost connection leaves the journal
from which the next run of the SAME job resumes (default), rolls back (`--rollback`) or closes it
(`--abandon`). What differs between jobs is a `Job`: how a run's plan is rebuilt from its journal,
how the result is proven, and how a put-back backup is shown to be the old state again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from pe_remote.backup import REMOTE_BACKUP_DIR, Backup, backup_paths, take_backup
from pe_remote.commands.steps import CA_FREEZE_STATE, SERVER_READY_TIMEOUT, failing_checks, thaw_saved_freeze
from pe_remote.discovery import MasterFacts
from pe_remote.errors import (ConnectionFailed, Incomplete, InputError, Interrupted, PeRemoteError, Refused,
                              RolledBack, StepFailed, VerificationFailed)
from pe_remote.events import Events, JournalCopy, Phase, resume_advice
from pe_remote.executor import Execution, InterruptLatch, execute
from pe_remote.journal import Journal, event, new_run_id, parse_journal
from pe_remote.names import printable
from pe_remote.plan import Plan
from pe_remote.restore import RestoreOutcome, ca_changes, ca_changes_command, put_back, start_services

# How long a resume or rollback waits for the interrupted run's steps that still run on the master
# (a step goes on when its connection drops; puppetserver's start is the longest, bounded by systemd).
STEPS_STILL_RUNNING_WAIT = 600
# An unfinished run older than this is resumed, rolled back or abandoned only when named by its id.
STALE_JOURNAL_HOURS = 24


@dataclass(frozen=True)
class Proof:
    """How a job shows its run did what it promised, and that a rollback put the old state back."""

    what: str  # what the job changes, for messages: "cert", "CRL", "CA cert"
    failed: str  # how a failed check begins: "the CRL is not right"
    check: Callable[[], list[str]]  # after the steps: every problem (empty: all good)
    # After a put-back: why the master is NOT in its old state (None: it is).
    not_back: Callable[[RestoreOutcome], str | None]
    back: str  # said after a rollback: what is in place again
    # Called once the check passed, before the run is closed; what it raises is not rolled back (the
    # master is right) but ends the run incomplete (a report that could not take the result, say).
    proven: Callable[[], None] = lambda: None
    # How long a rollback's service starts and the server's first answer may take (--server-timeout).
    server_timeout: int = SERVER_READY_TIMEOUT

    @property
    def rollback_timeout(self) -> int:
        """The rollback waits as long as the run was told, and never less than the default: a short
        --server-timeout (given to fail fast on a new cert) must not leave a master half put back
        because its server, restarted with the old cert, took longer than that to start."""
        return max(self.server_timeout, SERVER_READY_TIMEOUT)


class Job(Protocol):
    """A job's side of a journalled run."""

    task: str

    def plan(self, journal: Journal) -> Plan:
        """The run's plan, rebuilt from what its journal recorded (never from the half-changed master)."""

    def proof(self, journal: Journal, plan: Plan) -> Proof: ...


@dataclass(frozen=True)
class Unfinished:
    """What the operator asked for an unfinished run: resume it (default), roll it back, or close it."""

    rollback: bool = False
    abandon: bool = False
    run_id: str | None = None  # the run meant (needed for one older than STALE_JOURNAL_HOURS)


@dataclass(frozen=True)
class Continued:
    """What became of an unfinished run: "ok" (resumed to the end), "dry-run" or "abandoned"."""

    outcome: str
    journal: Journal
    plan: Plan
    execution: Execution | None = None


def back_up_and_run(remote, facts: MasterFacts, plan: Plan, job: Job, console, events: Events, *, folder: Path,
                    alt_names: tuple[str, ...] = (), record: dict | None = None) -> tuple[Backup, Journal, Execution]:
    """A job's first run on a master: the backup (pulled into `folder`), the journal (`record`: what the job
    needs to resume it), the plan's steps, then the job's proof; a failure after the backup puts it back
    (RolledBack, 7; Incomplete, 8, if it cannot), a lost connection leaves the journal for the next run of
    the job to resume or roll back."""
    thaw_left_freeze(remote, facts, console)
    console.notice(f"Backing up {', '.join(backup_paths(facts))} on {remote.target.label} ...")
    started = time.monotonic()
    events.emit("backup-started")
    backup = take_backup(remote, facts, folder)
    events.emit("backup-finished", backup=backup)
    console.notice(f"Backup: {backup.local_path} (sha256 {backup.sha256}, {time.monotonic() - started:.1f}s); "
                   f"on the master: {backup.remote.path}")
    journal = start_journal(remote, facts, backup, console, events, task=job.task, alt_names=alt_names, job=record)
    return backup, journal, run_steps(remote, plan, journal, job.proof(journal, plan), console, events)


def start_journal(remote, facts: MasterFacts, backup: Backup, console, events: Events, *, task: str,
                  alt_names: tuple[str, ...] = (), job: dict | None = None) -> Journal:
    """The run's journal, written on the master (and beside the local backup) before the first step."""
    # A job in a worker thread (--wave) pressed during its backup stops here: a journal started and never
    # followed by a step would be resumed by the next run as if it had begun.
    InterruptLatch.stop_if_pressed()
    journal = Journal(new_run_id(facts.certname), facts, alt_names, backup.remote, str(backup.local_path),
                      local_path=backup.local_path.with_name(backup.local_path.name + ".journal"),
                      warn=console.warn, task=task, job=dict(job or {}))
    journal.record_local(journal.header())
    remote.run(journal.start_command())
    events.emit("journal-started", journal=journal)
    return journal


def run_steps(remote, plan: Plan, journal: Journal, proof: Proof, console, events: Events, *,
              resume: bool = False) -> Execution:
    """Run the plan's steps (on a resume, those not done), then the proof; any failure is rolled back."""
    execution = Execution()
    events.subscribe(JournalCopy(journal))
    with InterruptLatch(console) as latch:
        try:
            execute(remote, plan, console, journal=journal, done=tuple(journal.done), latch=latch,
                    resume=resume, run=execution, events=events)
            problems = proof.check()
            if problems:
                raise VerificationFailed(f"{proof.failed}: " + "; ".join(problems))
            # Ctrl-C while the result was being proven: the same as during a step (before, it was lost).
            if latch.interrupted:
                console.warn("interrupt received while the result was being proven: rolling back")
                raise Interrupted(f"Prove the {proof.what}")
        except (StepFailed, VerificationFailed) as exc:
            roll_back(remote, journal, proof, console, reason=str(exc), events=events)
        except ConnectionFailed as exc:
            events.enter(Phase.INCOMPLETE)
            raise Incomplete(
                f"{exc}. The master may be part-way through the run {journal.run_id}; its journal is "
                f"{journal.remote_path}. {resume_advice(journal.task)}; backup: "
                f"{journal.backup.path} on the master, {journal.local_backup} here") from None
        except Exception as exc:  # noqa: BLE001 - after the first change, whatever it is, put the master back
            roll_back(remote, journal, proof, console, events=events,
                      reason=f"unexpected error during the run: {type(exc).__name__}: {exc}")
        proof.proven()
        try:
            finish(remote, journal, "ok")
        except ConnectionFailed as exc:
            events.enter(Phase.INCOMPLETE)
            raise Incomplete(f"the {proof.what} was changed and proven, then {exc} before the run was closed in "
                             f"its journal {journal.remote_path}; run `{journal.task}` again on it to close the "
                             "run (every step is found done)") from None
    events.enter(Phase.DONE)
    return execution


def finish(remote, journal: Journal, outcome: str) -> None:
    line = event("finished", outcome=outcome)
    remote.run(journal.append_command(line))
    journal.record_local(line)


def roll_back(remote, journal: Journal, proof: Proof, console, *, reason: str, events: Events | None = None,
              steps_ended: bool = False) -> None:
    """Put this run's backup back and prove the old state is there again; always raises (RolledBack, or
    Incomplete when the master could not be put back; the phase says which). `steps_ended`: the caller
    has already waited for the run's steps still running on the master."""
    events = events if events is not None else Events()
    try:
        _roll_back(remote, journal, proof, console, reason, events, steps_ended)
    except RolledBack:
        events.enter(Phase.ROLLED_BACK)
        raise
    except BaseException:
        events.enter(Phase.INCOMPLETE)
        raise


def _roll_back(remote, journal: Journal, proof: Proof, console, reason: str, events: Events,
               steps_ended: bool) -> None:
    facts = journal.facts
    task = journal.task
    events.emit("rollback-started", reason=reason)
    console.warn(f"{reason}")
    # A step given up as hung may still run on the master (steps outlive their channel): let it end.
    if not steps_ended:
        wait_for_steps_still_running(remote, journal, console)
    thaw_cut_off_freeze(remote, console)
    # Never put a backup back over a CA that has moved on since (certs signed, a hand restore): that
    # would lose every cert the CA signed since and its serial counter.
    moved_on = ca_changes(remote.run(ca_changes_command(facts, journal.backup.path), check=False).stdout,
                          facts.certname)
    if moved_on:
        start_services(remote, facts, facts.running_services, proof.rollback_timeout, check=False)
        raise Incomplete(f"{reason}; NOT rolled back: the CA has changed since the backup {journal.backup.path} "
                         f"was taken ({'; '.join(moved_on)}), so putting it back would lose that. The services "
                         "were started as they are; check the master by hand (README 'Restoring a backup by "
                         f"hand'), then close the run with `{task} --abandon {journal.run_id}`")
    console.notice(f"Rolling back: restoring the SSL backup {journal.backup.path} ...")
    try:
        outcome = put_back(remote, facts, journal.backup.path, journal.backup.sha256, facts.running_services,
                           console, server_timeout=proof.rollback_timeout)
        not_back = proof.not_back(outcome)
    except ConnectionFailed as exc:
        raise Incomplete(f"{reason}; then {exc} before the rollback finished. Run `{task} --rollback` on it "
                         f"again when it answers; journal {journal.remote_path}, backup {journal.backup.path}") from None
    except PeRemoteError as exc:
        raise Incomplete(f"{reason}; then the ROLLBACK FAILED too: {exc}. Restore by hand from "
                         f"{journal.backup.path} on the master ({journal.local_backup} here); "
                         "see README 'Restoring a backup by hand'") from None
    if not_back:
        raise Incomplete(f"{reason}; the backup was put back but {not_back}; check the master by hand; "
                         f"backup {journal.backup.path}")
    finish(remote, journal, "rolled-back")
    raise RolledBack(f"rolled back: {reason}. {proof.back}; the failed SSL folders are kept as "
                     f"{', '.join(outcome.moved_aside)}; backup {journal.local_backup or journal.backup.path}")


# --- an unfinished run: resume, roll back, or close it ------------------------------------------

def journal_age_hours(run_id: str, now: datetime | None = None) -> float:
    """How old a run is, from the UTC time its id starts with."""
    when = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - when).total_seconds() / 3600


def chosen_journal(current: MasterFacts, run_id: str | None, label: str, task: str | None = None) -> Journal:
    """The unfinished run to act on: the one named, else the newest, if it is recent enough; with `task`,
    it must be a run of that job (another job's run is finished with its own command first)."""
    journals = {path: text for path, text in current.unfinished_journals}
    if run_id:
        path = f"{REMOTE_BACKUP_DIR}/{run_id}.journal"
        if path not in journals:
            ids = ", ".join(p.rsplit("/", 1)[-1].removesuffix(".journal") for p in journals) or "none"
            raise InputError(f"{label} has no unfinished run {run_id!r} (unfinished: {ids})")
        journal = parse_journal(path, journals[path])
    else:
        path, text = current.unfinished_journals[-1]
        journal = parse_journal(path, text)
    if task is not None and journal.task != task:
        raise Refused(f"{label} has an unfinished {journal.task} run {journal.run_id}: finish it first with "
                      f"`{journal.task}` (it resumes it; or --rollback / --abandon {journal.run_id}); nothing was "
                      "changed")
    if not run_id:
        age = journal_age_hours(journal.run_id)
        if age < -1:  # a clock that was wrong then, or is now: its age says nothing
            raise Refused(f"{label} has an unfinished run {journal.run_id} dated {-age:.0f} hours in the future (a "
                          f"clock was wrong). Say which: --resume {journal.run_id}, --rollback {journal.run_id}, or "
                          f"--abandon {journal.run_id} to close it and touch nothing")
        if age > STALE_JOURNAL_HOURS:
            raise Refused(f"{label} has an unfinished run {journal.run_id} from {age / 24:.1f} days ago: too old "
                          "to resume or roll back without naming it (the master may have changed since; a rollback "
                          f"would put back a {age / 24:.0f}-day-old CA). Say which: --resume {journal.run_id}, "
                          f"--rollback {journal.run_id}, or --abandon {journal.run_id} to close it and touch nothing")
    return journal


def refuse_options_without_run(label: str, *, rollback: bool, abandon: bool, run_id: str | None) -> None:
    if rollback or abandon or run_id:
        raise InputError(f"there is no unfinished run on {label} to "
                         f"{'roll back' if rollback else 'abandon' if abandon else 'resume'}")


def unfinished(remote, facts: MasterFacts, job: Job, console, events: Events, options: Unfinished,
               *, dry_run: bool, vet_resume: Callable[[Journal], None] | None = None) -> Continued | None:
    """An unfinished run on the master: this job's is resumed, rolled back or closed (`options`); another
    job's is refused (finish it first). None when there is none (and then `options` must be empty).
    `vet_resume(journal)`, before a resume, may refuse it (the command asks for what the run did not)."""
    label = remote.target.label
    if not facts.unfinished_journals:
        refuse_options_without_run(label, rollback=options.rollback, abandon=options.abandon,
                                   run_id=options.run_id)
        return None
    journal = chosen_journal(facts, options.run_id, label, job.task)
    if vet_resume is not None and not (options.rollback or options.abandon):
        vet_resume(journal)
    return continue_unfinished(remote, journal, job, console, events, rollback=options.rollback,
                               abandon=options.abandon, dry_run=dry_run, freeze_left=facts.ca_freeze_left)


def continue_unfinished(remote, journal: Journal, job: Job, console, events: Events, *, rollback: bool = False,
                        abandon: bool = False, dry_run: bool = False, freeze_left: bool = False) -> Continued:
    """Resume `journal`'s run from its first step not done, or roll it back, or close it as abandoned.
    `freeze_left`: discovery found the CA files still frozen by a cut-off generate; whichever of the
    three is done, their owners are given back first."""
    plan = job.plan(journal)
    events.emit("planned", facts=journal.facts, alt_names=journal.alt_names, plan=plan)
    events.emit("journal-started", journal=journal)
    done = ", ".join(journal.done) or "none"
    console.notice(f"Found an unfinished run {journal.run_id} of `{journal.task}` on {remote.target.label} (journal "
                   f"{journal.remote_path}); completed steps: {done}. Its backup: {journal.backup.path}.")
    if dry_run:
        action = (f"close run {journal.run_id} as abandoned" if abandon else "roll it back" if rollback
                  else "resume it from the first step not completed")
        if freeze_left:
            action += (f", after giving the CA files back the owners a cut-off freeze saved in {CA_FREEZE_STATE} "
                       "(until then the CA cannot sign or revoke)")
        console.notice(f"Dry run: would {action}; nothing was changed on the master.")
        return Continued("dry-run", journal, plan)
    # Abandoning too waits: a step still running would write its end after `finished`, and the closed
    # run would look unfinished again (the next run resuming it, with no new backup).
    if wait_for_steps_still_running(remote, journal, console):
        # Steps that were still running have ended since discovery read the journal: read it again.
        journal = parse_journal(journal.remote_path, remote.run(journal.read_command()).stdout)
    if freeze_left:
        console.warn(f"The CA files still belong to root: run {journal.run_id}'s generate was cut off while they "
                     f"were frozen (their owners are saved in {CA_FREEZE_STATE}); the CA cannot sign or revoke "
                     "until they are given back, which is done first.")
    if abandon:
        console.confirm(f"Close run {journal.run_id} as abandoned? Nothing else on the master is touched"
                        + (" (but the CA files get their owners back)." if freeze_left else "."))
        if freeze_left:
            thaw_cut_off_freeze(remote, console)
        finish(remote, journal, "abandoned")
        console.notice(f"Run {journal.run_id} closed as abandoned; its backup {journal.backup.path} is kept.")
        return Continued("abandoned", journal, plan)
    proof = job.proof(journal, plan)
    if rollback:
        console.confirm(f"Roll back run {journal.run_id}: put the backup back and start the services?")
        with InterruptLatch(console):
            roll_back(remote, journal, proof, console, reason=f"run {journal.run_id} rolled back on request",
                      events=events, steps_ended=True)
    redo = recheck_done_steps(remote, plan, journal)
    console.confirm(f"Resume run {journal.run_id} (no new backup is taken)?")
    console.notice("Resuming: steps whose effect is already there are not run again.")
    if redo:
        titles = "; ".join(step.title for step in plan.steps if step.key in redo)
        console.notice(f"Run again, their effect is gone since (the master restarted?): {titles}.")
        journal.done = [key for key in journal.done if key not in redo]
    if freeze_left:
        thaw_cut_off_freeze(remote, console)
    execution = run_steps(remote, plan.running_again(redo), journal, proof, console, events, resume=True)
    return Continued("ok", journal, plan, execution)


def thaw_cut_off_freeze(remote, console) -> None:
    """The reload path's generate runs with the CA files frozen to root; a shell cut off before its thaw
    (a reboot, a kill) leaves them root's, and the CA service can then never sign or revoke again. Give
    them back the owners the freeze saved on the master (a no-op when none are saved)."""
    result = remote.run(thaw_saved_freeze(), check=False)
    said = printable(result.stdout.strip())
    if not result.ok:
        raise Incomplete(f"could not give the CA files back the owners saved in {CA_FREEZE_STATE} by a freeze that "
                         f"was cut off ({said or 'no output'}); give them back by hand from that file (after its `mode=MODE "
                         "CADIR` and `ino=` lines, each line is `OWNER PATH`, up to `end`), remove it, then run this "
                         "again")
    if said:
        console.notice(said[0].upper() + said[1:] + ".")


def warn_of_left_freeze(facts: MasterFacts, console, *, dry_run: bool) -> None:
    """Before a new run's plan is confirmed: say that a freeze cut off with no run left to resume (its
    journal moved aside, say) is given back first (see `thaw_left_freeze`)."""
    if facts.ca_freeze_left:
        console.warn(f"the CA files still belong to root: a regen's freeze of them was cut off (their owners are saved "
                     f"in {CA_FREEZE_STATE}) and no run is left to resume; the CA cannot sign or revoke until they "
                     f"are given back, which {'a real run does' if dry_run else 'is done'} first, before the backup")


def thaw_left_freeze(remote, facts: MasterFacts, console) -> None:
    """Before a new run's backup: a backup of the frozen CA would keep its files root's, and a rollback
    would put that back. The job's own CA command would not give them back on the restart path, and its
    proof would then fail on the saved owners every time."""
    if facts.ca_freeze_left:
        thaw_cut_off_freeze(remote, console)


# Steps whose effect does not outlive a reboot of the master (its services come back at boot, and the
# agent caches a catalog again): one found undone on a resume is run again (stopping or starting a
# service twice, or removing the cached catalog again, is harmless).
NOT_DURABLE = ("stop:", "start:", "remove-catalog")


def recheck_done_steps(remote, plan: Plan, journal: Journal) -> tuple[str, ...]:
    """A step the journal marks done is skipped only if its effect is still there (one remote command).
    Returns the steps to run again (NOT_DURABLE): their effect is gone (the master restarted, say).

    A journal can be stale or foreign: a master restored by hand since, say. Checks proving a step
    of THIS run (generate: a serial other than the run's old one) make such a journal fail here,
    before anything is changed, instead of being trusted into a rollback over a CA that has moved on.
    A step whose check a later step makes meaningless is not checked once that later step is done or
    began (it may have run to its end without its end being journalled: the run was cut off in it).
    """
    done = set(journal.done)
    known = {step.key for step in plan.steps}
    unknown = sorted(done - known)
    if unknown:
        raise Refused(f"run {journal.run_id}'s journal marks steps this plan does not have ({', '.join(unknown)}); "
                      f"nothing was changed. Close it with --abandon {journal.run_id}")
    reached = done | set(journal.begun)
    to_check = [step for step in plan.steps
                if step.key in done and step.check and not reached & set(step.superseded_by)]
    if not to_check:
        return ()
    script = failing_checks([(step.key, step.check) for step in to_check])
    missing = set(remote.run(script, check=False).stdout.split())
    redo = tuple(step.key for step in to_check if step.key in missing and step.key.startswith(NOT_DURABLE))
    gone = [step.title for step in to_check if step.key in missing and step.key not in redo]
    if gone:
        raise Refused(f"run {journal.run_id}'s journal says '{'; '.join(gone)}' was done, but the master does not "
                      "show it: it has changed since that run (put back by hand?). Nothing was changed. If the "
                      f"master is as it should be, close that run with --abandon {journal.run_id}, or put its "
                      f"backup back with --rollback {journal.run_id}")
    return redo


def wait_for_steps_still_running(remote, journal: Journal, console) -> bool:
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
                             f"`fuser -v {journal.lock_path}`, then run `{journal.task}` again")
    return True
