"""What the jobs that change the CA's files in place (`refresh-crl`, `extend-ca`) share, beside the run
lock, events and report (events.run_job) and the journalled run (runs.py) they share with `regen`: the
backup pulled first, what the job read before its first change recorded in the journal (so a resume or
rollback never trusts the half-changed master), each step checked, the result proven from the files'
bytes, and any failure rolled back from the backup."""

from __future__ import annotations

import base64
from typing import Callable

from pe_remote import runs
from pe_remote.backup import Backup, local_backup_dir, remote_backup_path, stream_command
from pe_remote.discovery import MasterFacts
from pe_remote.errors import InputError, JournalDamaged, Refused
from pe_remote.events import Events
from pe_remote.journal import Journal
from pe_remote.plan import Plan
from pe_remote.render import render_steps


def refuse_unless_ca(facts: MasterFacts, label: str, task: str) -> None:
    """The CA's files are changed only on the CA."""
    if not facts.ca_key_present:
        raise Refused(f"{facts.cadir}/ca_key.pem is absent: this host is not the CA; run {task} against the CA "
                      "master")


def show_plan(console, events: Events, facts: MasterFacts, plan: Plan, lines: list[str], *, dry_run: bool) -> bool:
    """Say what the job will do: `lines`, then the backup and every step's command and check (detail on
    a real run, the point of a dry run). True for a dry run: the caller stops there."""
    events.emit("planned", facts=facts, alt_names=(), plan=plan)
    shown = "\n".join([*lines, render_steps(plan, stream_command(facts, remote_backup_path(facts)))])
    (console.notice if dry_run else console.info)(shown)
    runs.warn_of_left_freeze(facts, console, dry_run=dry_run)
    if dry_run:
        console.notice("Dry run: nothing was changed on the master.")
    return dry_run


def change_and_prove(remote, facts: MasterFacts, plan: Plan, job: runs.Job, record: dict, console, events: Events,
                     *, backup_dir: str) -> Backup:
    """runs.back_up_and_run into the host's folder under `backup_dir`; the backup taken."""
    backup, _, _ = runs.back_up_and_run(remote, facts, plan, job, console, events,
                                        folder=local_backup_dir(backup_dir, remote.target.label), record=record)
    return backup


# --- what a CA job records before its first change: the files' bytes as it read them ----------

def encode_record(raw: dict[str, bytes | bool]) -> dict[str, str | bool]:
    return {key: value if isinstance(value, bool) else base64.b64encode(value).decode()
            for key, value in raw.items()}


def decode_record(journal: Journal, record: object, files: tuple[str, ...], flags: tuple[str, ...]) -> dict:
    """The bytes a run recorded, checked as pe-remote wrote them (a journal is input like any other)."""
    aside = f"move it aside on the master (mv {journal.remote_path} {journal.remote_path}.damaged) and run again"
    if not isinstance(record, dict):
        raise JournalDamaged(f"run journal {journal.remote_path} holds no {journal.task} record; {aside}")
    raw: dict[str, bytes | bool] = {}
    for key in files:
        try:
            raw[key] = base64.b64decode(record[key], validate=True)
        except (KeyError, TypeError, ValueError):
            raise JournalDamaged(f"run journal {journal.remote_path} has a {key} pe-remote did not write; "
                                 f"{aside}") from None
    for key in flags:
        if not isinstance(record.get(key), bool):
            raise JournalDamaged(f"run journal {journal.remote_path} has a {key} pe-remote did not write; {aside}")
        raw[key] = record[key]
    return raw


def recorded_number(journal: Journal, key: str, low: int, high: int) -> int:
    value = journal.job.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise JournalDamaged(f"run journal {journal.remote_path} has a {key} pe-remote did not write ({value!r}); "
                             f"move it aside on the master (mv {journal.remote_path} {journal.remote_path}.damaged)")
    return value


def same_number_as_run(flag: str, key: str, given: int | None, low: int, high: int) -> Callable[[Journal], None] | None:
    """The `vet_resume` of a CA job whose `flag` (its journal's `key`) the command line may give: a resume
    asked with another value than the unfinished run recorded is refused (InputError, nothing touched),
    as it would otherwise finish with the recorded one and report success. Not given: nothing to vet."""
    if given is None:
        return None

    def vet(journal: Journal) -> None:
        recorded = recorded_number(journal, key, low, high)
        if recorded != given:
            raise InputError(f"the unfinished run {journal.run_id} of `{journal.task}` uses {flag} {recorded}, not "
                             f"{given}: finish it as recorded (run {journal.task} again without {flag}), or "
                             f"`{journal.task} --rollback` / `{journal.task} --abandon {journal.run_id}` first; "
                             "nothing was changed")
    return vet
