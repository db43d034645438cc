"""What the jobs that change the CA's files in place (`refresh-crl`, `extend-ca`) share, beside
`regen`'s run lock, events and report (events.run_job): the backup pulled first, each step checked,
the result proven from the files' bytes, and any failure rolled back from the backup."""

from __future__ import annotations

from typing import Callable

from pe_remote.backup import Backup, local_backup_dir, remote_backup_path, stream_command, take_backup
from pe_remote.discovery import MasterFacts
from pe_remote.errors import ConnectionFailed, Incomplete, PeRemoteError, Refused, RolledBack, VerificationFailed
from pe_remote.events import Events, Phase
from pe_remote.executor import InterruptLatch, execute
from pe_remote.plan import Plan
from pe_remote.render import render_steps
from pe_remote.restore import put_back


# What an operator does with a CA job that ended half-way (there is no journal to resume from).
RESUME_HINT = ": check it with `verify`, and put the backup back with `restore` if it is not right"


def refuse_unless_ca(facts: MasterFacts, label: str, task: str) -> None:
    """The CA's files are changed only on the CA, and never under an unfinished regen."""
    if facts.unfinished_journals:
        raise Refused(f"{label} has an unfinished regen run ({facts.unfinished_journals[-1][0]}): finish it first "
                      "with `regen` (resume, --rollback or --abandon); nothing was changed")
    if not facts.ca_key_present:
        raise Refused(f"{facts.cadir}/ca_key.pem is absent: this host is not the CA; run {task} against the CA "
                      "master")


def show_plan(console, events: Events, facts: MasterFacts, plan: Plan, lines: list[str], *, dry_run: bool) -> bool:
    """Say what the job will do: `lines`, then the backup and every step's command and check (detail on
    a real run, the point of a dry run). True for a dry run: the caller stops there."""
    events.emit("planned", facts=facts, alt_names=(), plan=plan)
    shown = "\n".join([*lines, render_steps(plan, stream_command(facts, remote_backup_path(facts)))])
    (console.notice if dry_run else console.info)(shown)
    if dry_run:
        console.notice("Dry run: nothing was changed on the master.")
    return dry_run


def change_and_prove(remote, facts: MasterFacts, plan: Plan, console, events: Events, *, backup_dir: str,
                     what: str, prove: Callable[[], list[str]], is_back: Callable[[], bool]) -> Backup:
    """Back up, run `plan`, then `prove()` (problems, empty: all good). A failure after the backup puts it
    back and checks `is_back()`: RolledBack (7), or Incomplete (8) when the master could not be put back."""
    label = remote.target.label
    console.notice(f"Backing up {facts.ssldir} on {label} ...")
    events.emit("backup-started")
    backup = take_backup(remote, facts, local_backup_dir(backup_dir, label))
    events.emit("backup-finished", backup=backup)
    console.notice(f"Backup: {backup.local_path} (sha256 {backup.sha256}); on the master: {backup.remote.path}")
    try:
        with InterruptLatch(console) as latch:
            execute(remote, plan, console, latch=latch, events=events)
        problems = prove()
        if problems:
            raise VerificationFailed(f"the {what} is not right: " + "; ".join(problems))
    except ConnectionFailed as exc:
        events.enter(Phase.INCOMPLETE)
        raise Incomplete(f"{exc}. The {what} may be half-way changed on {label}: check it with `verify`, or put "
                         f"the backup back with `restore {backup.local_path}`") from None
    except Exception as exc:  # noqa: BLE001 - once changing, whatever it is, put it back
        _roll_back(remote, facts, backup, console, events, reason=str(exc), what=what, is_back=is_back)
    events.enter(Phase.DONE)
    return backup


def _roll_back(remote, facts: MasterFacts, backup: Backup, console, events: Events, *, reason: str, what: str,
               is_back: Callable[[], bool]) -> None:
    """Put the backup back and prove the old files are there again; always raises."""
    console.warn(reason)
    events.emit("rollback-started", reason=reason)
    try:
        outcome = put_back(remote, facts, backup.remote.path, backup.sha256, facts.running_services, console)
        back = is_back()
    except PeRemoteError as exc:
        events.enter(Phase.INCOMPLETE)
        raise Incomplete(f"{reason}; then the ROLLBACK FAILED too: {exc}. Restore by hand from {backup.remote.path} "
                         f"on the master ({backup.local_path} here)") from None
    if not back:
        events.enter(Phase.INCOMPLETE)
        raise Incomplete(f"{reason}; the backup was put back but the {what} is not the old one; check the master "
                         f"by hand; backup {backup.remote.path}")
    events.enter(Phase.ROLLED_BACK)
    raise RolledBack(f"rolled back: {reason}. The backup is back in place and the {what} checked; the replaced "
                     f"folders are kept as {', '.join(outcome.moved_aside)}; backup {backup.local_path}")
