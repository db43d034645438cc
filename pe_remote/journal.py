"""The run journal: what rollback and resume read after a failure or a lost connection.

A JSON-lines file, on the master in the root-only state folder (next to the
backup) and on the workstation next to the local backup copy:

    {"event": "started", "run_id": ..., "task": "regen", "backup": {...}, "facts": {...}, "alt_names": [...],
     "job": {...}}
    {"event": "begin", "step": "stop:pe-puppet"}
    {"event": "end", "step": "stop:pe-puppet"}
    ...
    {"event": "finished", "outcome": "ok" | "rolled-back"}

The header holds everything needed to rebuild the run's plan without trusting
the master's current (half-changed) state: `task` names the job (`regen`, `refresh-crl`, `extend-ca`;
absent in journals of older pe-remote: `regen`), `job` what that job recorded before its first change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pe_remote.backup import RemoteBackup
from pe_remote.discovery import REMOTE_STATE_DIR, CertInfo, MasterFacts, ServiceState, check_facts
from pe_remote.errors import InvalidName, JournalDamaged
from pe_remote.flavors import FLAVORS, SERVER_SERVICES
from pe_remote.names import parse_alt_names, validate_certname
from pe_remote.commands import run as run_commands
from pe_remote.commands.certs import normalize_san
from pe_remote.commands.steps import CA_WRITABLE

log = logging.getLogger(__name__)


# What discovery reads of the master's state now, not of the master: never recorded in a journal.
LIVE_STATE = ("unfinished_journals", "ca_freeze_left")


def facts_to_dict(facts: MasterFacts) -> dict:
    data = dataclasses.asdict(facts)
    data["flavor"] = facts.flavor.name
    for live in LIVE_STATE:
        data.pop(live, None)
    if facts.cert:
        data["cert"]["sans"] = sorted(facts.cert.sans)
    return data


def facts_from_dict(data: dict) -> MasterFacts:
    """The facts a journal recorded, with unknown fields ignored (a newer pe-remote may add some)."""
    known = {f.name for f in dataclasses.fields(MasterFacts)} - set(LIVE_STATE)
    data = {key: value for key, value in data.items() if key in known}
    for listed in ("services", "dns_alt_names", "monolithic_markers", "copy_dirs", "reloadable", "ca_unfreezable"):
        if not isinstance(data.get(listed, []), list):
            raise TypeError(f"{listed} {data[listed]!r:.80} is not a list")
    data["flavor"] = FLAVORS[data["flavor"]]
    data["services"] = tuple(ServiceState(**{k: s[k] for k in ("name", "exists", "active", "state")})
                             for s in data["services"])
    data["dns_alt_names"] = tuple(data["dns_alt_names"])
    data["monolithic_markers"] = tuple(data.get("monolithic_markers", ()))
    data["copy_dirs"] = tuple(data.get("copy_dirs", ()))
    data["reloadable"] = tuple(name for name in data.get("reloadable", ()) if name in SERVER_SERVICES)
    data["ca_unfreezable"] = tuple(name for name in data.get("ca_unfreezable", ()) if name in CA_WRITABLE)
    if data.get("cert"):
        cert_fields = {f.name for f in dataclasses.fields(CertInfo)}
        data["cert"] = CertInfo(**{**{k: v for k, v in data["cert"].items() if k in cert_fields},
                                   # A journal of an older pe-remote spells IP SANs as openssl's text did.
                                   "sans": frozenset(normalize_san(e) for e in data["cert"]["sans"])})
    return MasterFacts(**data)


def new_run_id(certname: str) -> str:
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{certname}"


def event(name: str, **fields) -> str:
    # json.dumps' default separators: discovery greps for '"event": "finished"'.
    return json.dumps({"event": name, **fields})


@dataclass
class Journal:
    run_id: str
    facts: MasterFacts
    alt_names: tuple[str, ...]
    backup: RemoteBackup
    local_backup: str
    done: list[str] = dataclasses.field(default_factory=list)
    begun: list[str] = dataclasses.field(default_factory=list)  # steps that began (done or not)
    local_path: Path | None = None
    warn: object = dataclasses.field(default=None, repr=False, compare=False)  # callback(message) for the console
    task: str = "regen"  # the job that runs (TASKS)
    job: dict = dataclasses.field(default_factory=dict)  # what the job recorded before its first change

    @property
    def remote_path(self) -> str:
        return f"{REMOTE_STATE_DIR}/{self.run_id}.journal"

    def header(self) -> str:
        return event("started", run_id=self.run_id, at=datetime.now(timezone.utc).isoformat(),
                     backup=dataclasses.asdict(self.backup), local_backup=self.local_backup,
                     facts=facts_to_dict(self.facts), alt_names=list(self.alt_names), task=self.task,
                     job=self.job)

    def append_command(self, line: str) -> str:
        """Remote shell that appends one event line (the line is quoted, never interpreted)."""
        return run_commands.append_line(self.remote_path, line)

    @property
    def lock_path(self) -> str:
        return self.remote_path + ".lock"

    def hold_lock_command(self) -> str:
        """Shell for the start of a step: hold the run's lock (shared) until the step's shell ends.

        A step goes on when the connection drops; a later `regen` waits for the lock before it
        resumes or rolls back, so it never checks or redoes a step that is still running.
        Without flock(1) there is no lock and nothing waits.
        """
        return run_commands.hold_shared_lock(self.lock_path)

    def steps_running_command(self, wait: int = 0) -> str:
        """Exit 0 once no step of the run still runs (waiting up to `wait` seconds), 1 if one does."""
        return run_commands.no_holder(self.lock_path, wait)

    def start_command(self) -> str:
        return run_commands.create_private(self.remote_path, self.header())

    def read_command(self) -> str:
        return run_commands.read_file(self.remote_path)

    def record_local(self, line: str) -> None:
        """The workstation's copy of the journal: a convenience beside the master's, which is the
        record resume and rollback read. A copy that cannot be written (a full disk) is given up with
        a warning instead of failing the run half-way."""
        if self.local_path is None:
            return
        try:
            with open(self.local_path, "a") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            message = (f"cannot write the local journal copy {self.local_path} ({exc.strerror or exc}); "
                       f"going on: the master's journal {self.remote_path} is the record")
            log.warning(message)
            if self.warn is not None:
                self.warn(message)
            self.local_path = None


# The jobs that journal their runs.
TASKS = ("regen", "refresh-crl", "extend-ca")
RUN_ID = re.compile(r"\A[0-9]{8}T[0-9]{6}Z-[a-z0-9_.-]{1,253}\Z")
STEP_KEY = re.compile(r"\A[a-z-]+(?::[A-Za-z0-9@_.-]+)?\Z")


def parse_journal(path: str, text: str) -> Journal:
    """A journal read back from the master, every value checked as discovery checks the master's.

    A last line cut off mid-write (the connection or the disk failed) is ignored; anything else
    that does not parse, or holds a value pe-remote would not have written, is refused with how to
    move the journal aside.
    """
    aside = f"move it aside on the master ({run_commands.move_aside(path)}) and run again"
    lines: list[dict] = []
    raw = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(raw, start=1):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError) as exc:  # a number too long, nesting too deep: not ours either
            if isinstance(exc, json.JSONDecodeError) and number == len(raw) and number > 1:
                break  # the last write was cut off
            raise JournalDamaged(f"run journal {path} is damaged at line {number}; {aside}") from None
        if not isinstance(entry, dict):
            raise JournalDamaged(f"run journal {path} line {number} is not a JSON object; {aside}")
        lines.append(entry)
    if not lines or lines[0].get("event") != "started":
        raise JournalDamaged(f"run journal {path} on the master is unreadable (no header); {aside}")
    try:
        journal = _journal_from_header(lines[0])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, InvalidName) as exc:
        raise JournalDamaged(f"run journal {path} has a header pe-remote did not write ({_why(exc)}); {aside}") \
            from None
    if path != journal.remote_path:
        raise JournalDamaged(f"run journal {path} names run {journal.run_id!r}, not its own; {aside}")
    for entry in lines[1:]:
        step = entry.get("step")
        if entry.get("event") in ("begin", "end"):
            if not isinstance(step, str) or not STEP_KEY.match(step):
                raise JournalDamaged(f"run journal {path} records an unknown step {step!r}; {aside}")
            (journal.done if entry["event"] == "end" else journal.begun).append(step)
    return journal


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing or unknown {exc.args[0]!r}"
    return str(exc)


def _journal_from_header(head: dict) -> Journal:
    run_id = head["run_id"]
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r}")
    datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ")  # a date that exists (its age decides what may be done)
    facts = facts_from_dict(head["facts"])
    validate_certname(facts.certname, source="the journal's certname")
    if not run_id.endswith("-" + facts.certname):
        raise ValueError(f"run id {run_id!r} is not of certname {facts.certname!r}")
    # The old serial goes into the run's checks (serial_differs, serial_revoked): hex only.
    if facts.cert and not re.fullmatch(r"[0-9A-F]{1,40}", facts.cert.serial):
        raise ValueError(f"cert serial {facts.cert.serial!r}")
    names = parse_alt_names(list(head["alt_names"]), source="the journal's alt names")
    parse_alt_names(list(facts.dns_alt_names), source="the journal's dns_alt_names")
    check_facts(facts)
    for folder in facts.copy_dirs:
        if folder not in {c.folder for c in facts.flavor.credential_copies}:
            raise ValueError(f"copy folder {folder!r}")
    task = head.get("task", "regen")
    if task not in TASKS:
        raise ValueError(f"task {task!r}")
    job = head.get("job", {})
    if not isinstance(job, dict):
        raise ValueError(f"job {job!r}")
    backup = RemoteBackup(**{k: head["backup"][k] for k in ("path", "sha256", "size")})
    if (not isinstance(backup.path, str) or not re.fullmatch(rf"{re.escape(REMOTE_STATE_DIR)}/[A-Za-z0-9_.-]+\.tar\.gz",
                                                            backup.path)
            or not re.fullmatch(r"[0-9a-f]{64}", str(backup.sha256)) or not isinstance(backup.size, int)):
        raise ValueError(f"backup {head['backup']!r}")
    for service in facts.services:
        if not re.fullmatch(r"[A-Za-z0-9@_.-]{1,128}", service.name):
            raise ValueError(f"service {service.name!r}")
    return Journal(run_id=run_id, facts=facts, alt_names=names, backup=backup,
                   local_backup=str(head.get("local_backup", "")), done=[], task=task, job=job)
