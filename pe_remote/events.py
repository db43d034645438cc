"""A run as phases that emit events; the console, the JSON report, the local journal copy and the
benchmark's timings listen (ansible-runner's event handlers show the way) instead of being written
from inside the job.

Phases: read-only (discovery, plan, preflight, backup: nothing on the master changed) -> changing
(the first step ran) -> done, rolled-back or incomplete. The exit code is the phase's: an error in
the read-only phase keeps its own (bad input 2, SSH 3, refused 4, ...); once changing, a run ends
done (0), rolled back (7) or incomplete (8), whatever the error that ended it.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable

from pe_remote.errors import Incomplete, PeRemoteError, RolledBack
from pe_remote.report import RunReport, StepRecord, utc_now


class Phase(str, enum.Enum):
    READ_ONLY = "read-only"
    CHANGING = "changing"
    DONE = "done"
    ROLLED_BACK = "rolled-back"
    INCOMPLETE = "incomplete"


PHASE_EXIT = {Phase.DONE: 0, Phase.ROLLED_BACK: 7, Phase.INCOMPLETE: 8, Phase.CHANGING: 8}
INTERRUPTED_EXIT = 130  # Ctrl-C before any change, as a shell reports it


def exit_code(phase: Phase, error: BaseException | None = None) -> int:
    """The process exit code of a run that ended in `phase` (with `error`, if it failed). A job done on
    the master may still end in an error of its own about what came after (extend-ca's agents)."""
    if phase is Phase.DONE and isinstance(error, PeRemoteError):
        return error.exit_code
    if phase is not Phase.READ_ONLY:
        return PHASE_EXIT[phase]
    if error is None:
        return 0
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    return getattr(error, "exit_code", 1)


@dataclass(frozen=True)
class Event:
    name: str
    phase: Phase
    at: float  # time.monotonic()
    utc: str
    data: dict = field(default_factory=dict)


Listener = Callable[[Event], None]


class Events:
    """The event stream of one run: `emit` hands each event to every listener, in order."""

    def __init__(self, *listeners: Listener) -> None:
        self.listeners: list[Listener] = list(listeners)
        self.phase = Phase.READ_ONLY

    def subscribe(self, listener: Listener) -> Listener:
        self.listeners.append(listener)
        return listener

    def emit(self, name: str, **data) -> Event:
        event = Event(name, self.phase, time.monotonic(), utc_now(), data)
        for listener in self.listeners:
            listener(event)
        return event

    def enter(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.emit("phase", phase=phase)


def resume_advice(task: str) -> str:
    """What to do about a run of `task` cut off half-way."""
    return f"Run `{task}` again on it to resume (or `{task} --rollback` to put the backup back)"


def run_job(remote, console, task: str, body: Callable[["Events"], object], *, dry_run: bool,
            report: RunReport | None = None, listeners: tuple[Listener, ...] = ()) -> object:
    """Run `body(events)` holding the master's run lock (not for a dry run: it changes nothing). The
    report and the console's step lines listen, with `listeners`; the `finished` event carries the exit
    code of the phase the job ended in. A library error that escapes once the master is being changed
    becomes Incomplete (8), saying how to resume: a job never ends half-way without saying so."""
    from pe_remote import lock as master_lock

    report = report if report is not None else RunReport(remote.target.label)
    events = Events(ReportWriter(report), ConsoleSteps(console), *listeners)
    outcome, error, lock = "failed", None, None
    try:
        lock = None if dry_run else master_lock.acquire(remote, task, console)
        result = body(events)
        outcome = result.outcome
        return result
    except RolledBack as exc:
        outcome, error = "rolled-back", exc
        events.enter(Phase.ROLLED_BACK)
        raise
    except PeRemoteError as exc:
        error = exc
        if events.phase in (Phase.CHANGING, Phase.INCOMPLETE):
            events.enter(Phase.INCOMPLETE)
            if not isinstance(exc, Incomplete):
                error = Incomplete(f"{exc}; the master may be part-way through the run: {resume_advice(task)}")
                raise error from exc
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        if lock is not None:
            lock.release()
        message = ("interrupted before any change" if isinstance(error, KeyboardInterrupt) else
                   str(error) if error is not None else None)
        events.emit("finished", outcome=outcome, error=message, exit_code=exit_code(events.phase, error),
                    remote_commands=remote.commands_run)


# --- the listeners the library brings ---------------------------------------------------------


class ConsoleSteps:
    """Each step's start and end on the console."""

    def __init__(self, console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.name == "step-started":
            self.console.step_started(data["number"], data["total"], data["title"])
            self.console.command(data["command"])
        elif event.name == "step-finished":
            label = {"ok": "done", "already-done": "already done", "journalled": "already done"}.get(
                data["outcome"], "FAILED")
            self.console.step_finished(data["number"], data["total"], data["title"], data["seconds"], label)


class JournalCopy:
    """The workstation's copy of the run journal: each step's end (or failure) as the master's has it."""

    def __init__(self, journal) -> None:
        self.journal = journal

    def __call__(self, event: Event) -> None:
        from pe_remote.journal import event as journal_line

        if event.name == "step-finished" and event.data["outcome"] in ("ok", "already-done", "failed"):
            state = "failed" if event.data["outcome"] == "failed" else "end"
            self.journal.record_local(journal_line(state, step=event.data["key"]))


class ReportWriter:
    """Fills the JSON report (`--report`) from the events, whatever the outcome."""

    def __init__(self, report: RunReport) -> None:
        self.report = report

    def __call__(self, event: Event) -> None:
        report, data = self.report, event.data
        if event.name == "planned":
            facts = data["facts"]
            report.flavor, report.certname = facts.flavor.name, facts.certname
            report.alt_names = list(data["alt_names"])
            report.old_cert = RunReport.cert_dict(facts.cert)
            report.path = data["plan"].path
        elif event.name == "journal-started":
            journal = data["journal"]
            report.run_id = journal.run_id
            report.backup = {"local_path": journal.local_backup, "remote_path": journal.backup.path,
                             "sha256": journal.backup.sha256, "size": journal.backup.size}
        elif event.name == "step-finished" and data["outcome"] != "journalled":
            outcome = "failed" if data["outcome"] == "lost" else data["outcome"]
            report.steps.append(StepRecord(data["key"], data["title"], event.at - data["seconds"], event.at, outcome,
                                           data["started_at"], data["ended_at"]))
        elif event.name == "window-closed":
            report.downtime_seconds = round(data["seconds"], 3)
        elif event.name == "verified":
            report.new_cert = RunReport.cert_dict(data["cert"])
        elif event.name == "finished":
            report.outcome, report.error, report.exit_code = data["outcome"], data["error"], data["exit_code"]
            report.ended = event.utc
            report.remote_commands = data["remote_commands"]


class Timings:
    """Seconds spent in each named part of a run (the benchmark's instrument): from `X-started` to
    `X-finished` events, plus the downtime window."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        for suffix in ("-started", "-finished"):
            if event.name.endswith(suffix) and not event.name.startswith("step-"):
                part = event.name[:-len(suffix)]
                if suffix == "-started":
                    self._open[part] = event.at
                elif part in self._open:
                    self.seconds[part] = self.seconds.get(part, 0.0) + event.at - self._open.pop(part)
        if event.name == "window-closed":
            self.seconds["downtime"] = event.data["seconds"]
