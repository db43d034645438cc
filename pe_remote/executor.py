"""Run a plan's steps in order; each step must pass its own check before the next starts.

A step is ONE remote command: journal "begin", the step's command, its check,
journal "end" only if both passed. One round trip per step, and steps the plan
lets overlap run at the same time, keep the downtime window as short as the
master allows.

Ctrl-C never kills a step half-way (a half-written CA is worse than a slow
stop): the first SIGINT is noted, the current step finishes, and the run then
fails like any other failure, so the caller rolls back.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

from pe_remote.commands import run as run_commands
from pe_remote.errors import Interrupted, StepFailed
from pe_remote.events import ConsoleSteps, Events, JournalCopy, Phase
from pe_remote.journal import Journal, event
from pe_remote.plan import Plan, Step
from pe_remote.report import StepRecord, utc_now

@dataclass
class Execution:
    records: list[StepRecord] = field(default_factory=list)
    downtime_started: float | None = None
    downtime_ended: float | None = None

    @property
    def downtime(self) -> float | None:
        if self.downtime_started is None or self.downtime_ended is None:
            return None
        return self.downtime_ended - self.downtime_started


def step_script(step: Step, journal: Journal | None, *, check_first: bool = False) -> str:
    """The remote shell for one step (see commands.run.step_script): with a journal, "begin" and
    "end" are journalled around it and the step holds the run's lock for as long as it runs."""
    if journal is None:
        return run_commands.step_script(step.command, step.check, check_first=check_first)
    return run_commands.step_script(step.command, step.check, check_first=check_first,
                                    begin=journal.append_command(event("begin", step=step.key)),
                                    end=journal.append_command(event("end", step=step.key)),
                                    lock=journal.hold_lock_command())


class InterruptLatch:
    """While active, SIGINT is noted instead of raising KeyboardInterrupt mid-step.

    Only the main thread can catch SIGINT. Jobs run in worker threads (`regen --wave N`) are covered by
    the latch the main thread holds meanwhile (`for_workers`): a latch entered in a worker thread counts
    that one's presses as its own, so its executor finishes the running step and rolls back; a job whose
    first change has not started yet when Ctrl-C was pressed stops there (KeyboardInterrupt, as in the
    main thread), changing nothing."""

    workers: "InterruptLatch | None" = None  # the main thread's latch while worker threads run jobs

    def __init__(self, console) -> None:
        self.console = console
        self._interrupted = False
        self._count = 0  # Ctrl-C presses caught by this latch's own handler
        self.acknowledged = 0  # of all presses, how many were answered on the console
        self._previous = None
        self._shared: InterruptLatch | None = None  # in a worker thread: the main thread's latch

    @property
    def interrupted(self) -> bool:
        return self._interrupted or (self._shared is not None and self._shared.interrupted)

    @property
    def count(self) -> int:
        """Ctrl-C presses so far (the main thread's latch's included, in a worker thread)."""
        return self._count + (self._shared.count if self._shared is not None else 0)

    @classmethod
    @contextlib.contextmanager
    def for_workers(cls):
        """Held by the main thread while worker threads run jobs: catches SIGINT for them (see the class)."""
        with cls(console=None) as latch:
            previous, cls.workers = cls.workers, latch
            try:
                yield latch
            finally:
                cls.workers = previous

    @classmethod
    def stop_if_pressed(cls) -> None:
        """In a worker thread, before its job's first change (its journal): KeyboardInterrupt if Ctrl-C
        was pressed meanwhile (the main thread raises it by itself)."""
        if threading.current_thread() is not threading.main_thread() and cls.workers is not None \
                and cls.workers.interrupted:
            raise KeyboardInterrupt

    def _handler(self, signum, frame) -> None:
        # Only set the flag: the handler runs between any two bytecodes of the main thread,
        # which may be holding the console's lock in the middle of a print.
        self._interrupted = True
        self._count += 1

    def acknowledge(self, running: list[str]) -> None:
        """Answer each Ctrl-C at once (the main loop calls this between polls): say what happens next."""
        if self.count == self.acknowledged:
            return
        steps = ", ".join(f"'{title}'" for title in running) or "the current step"
        if self.acknowledged == 0:
            self.console.warn(f"interrupt received: {steps} will finish first (a step stopped half-way could "
                              "leave the CA half-written), then the master is rolled back")
        else:
            self.console.warn(f"interrupt received again: still finishing {steps}; the rollback follows. "
                              "pe-remote does not stop a step half-way")
        self.acknowledged = self.count

    def __enter__(self) -> "InterruptLatch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        else:
            self._shared = InterruptLatch.workers
            if self.interrupted:  # Ctrl-C came before this job's first change: change nothing
                raise KeyboardInterrupt
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def execute(remote, plan: Plan, console, *, journal: Journal | None = None, done: tuple[str, ...] = (),
            latch: InterruptLatch | None = None, resume: bool = False, run: Execution | None = None,
            events: Events | None = None) -> Execution:
    """Run the steps not in `done`; raise StepFailed (or Interrupted) at the first failure.

    A step starts once the steps it needs are done (by default: the step listed before it), so
    steps the plan lets overlap run at the same time, each on its own channel of the one SSH
    connection. After a failure or a Ctrl-C no step starts; the running ones are let finish.
    Pass `run` to keep the records of the steps that ran when a step fails. Each step's start and
    end are `events` (by default shown on `console` and copied into the local journal); the first
    step that starts makes the run's phase "changing".
    """
    run = run if run is not None else Execution()
    if events is None:
        events = Events(ConsoleSteps(console), *([JournalCopy(journal)] if journal else []))
    total = len(plan.steps)
    needs = plan.needs()
    finished: set[str] = set()
    waiting = list(enumerate(plan.steps, start=1))
    running: dict[str, tuple[int, Step, float, str]] = {}
    results: queue.Queue = queue.Queue()
    failure: BaseException | None = None
    interrupted_at: str | None = None
    # The step whose start opens the downtime window: the plan's, else its first stop.
    opener = next((s.key for s in plan.steps if s.opens_window), None) or \
        next((s.key for s in plan.steps if s.key.startswith("stop:")), None)

    def one(step: Step) -> None:
        try:
            with console.waiting(step.title):
                output = remote.run(step_script(step, journal, check_first=resume), check=False,
                                    timeout=step.timeout)
            results.put((step.key, output, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            results.put((step.key, None, exc))

    while waiting or running:
        if failure is None and interrupted_at is None:
            for entry in list(waiting):
                number, step = entry
                if step.key in done:
                    waiting.remove(entry)
                    finished.add(step.key)
                    events.emit("step-finished", key=step.key, title=step.title, number=number, total=total,
                                outcome="journalled", seconds=0.0, started_at="", ended_at="")
                    continue
                if not all(key in finished for key in needs[step.key]):
                    continue
                if latch and latch.interrupted:
                    interrupted_at = step.title
                    break
                waiting.remove(entry)
                events.enter(Phase.CHANGING)
                events.emit("step-started", key=step.key, title=step.title, number=number, total=total,
                            command=step.command)
                started = time.monotonic()
                if step.key == opener and run.downtime_started is None:
                    run.downtime_started = started
                    events.emit("window-opened")
                running[step.key] = (number, step, started, utc_now())
                threading.Thread(target=one, args=(step,), name=f"step {step.key}", daemon=True).start()
        if not running:
            if waiting and failure is None and interrupted_at is None:
                raise RuntimeError(f"no step can start: {[step.key for _, step in waiting]} wait for steps "
                                   "that cannot finish")
            break
        key, output, error = _next_result(results, latch, running)
        number, step, started, started_at = running.pop(key)
        ended = time.monotonic()
        if error is not None:
            failure = failure or error
            record = StepRecord(key, step.title, started, ended, "failed", started_at, utc_now())
            run.records.append(record)
            # No answer (a lost connection): the step may still be running there; nothing is journalled.
            events.emit("step-finished", key=key, title=step.title, number=number, total=total, outcome="lost",
                        seconds=ended - started, started_at=started_at, ended_at=record.ended_at)
            continue
        answer = run_commands.parse_step_output(output.stdout + output.stderr)
        rc, check, text, already = answer.rc, answer.check, answer.text, answer.already_done
        problem = None
        if rc != 0:
            problem = f"exit {rc}: {_last_line(text)}" if rc is not None else f"did not run: {_last_line(text)}"
        elif check != 0:
            problem = f"its check failed: {_last_line(text) or step.check}"
        outcome = "failed" if problem else ("already-done" if already else "ok")
        record = StepRecord(key, step.title, started, ended, outcome, started_at, utc_now())
        run.records.append(record)
        events.emit("step-finished", key=key, title=step.title, number=number, total=total, outcome=outcome,
                    seconds=ended - started, started_at=started_at, ended_at=record.ended_at)
        if problem:
            failure = failure or StepFailed(step.title, problem)
            continue
        finished.add(key)
        if step.server_ready:
            run.downtime_ended = ended
            if run.downtime is not None:
                events.emit("window-closed", seconds=run.downtime)
        if latch and latch.interrupted and interrupted_at is None and failure is None:
            console.warn(f"interrupt received during '{step.title}': the step was finished; rolling back")
            interrupted_at = step.title
    if failure is not None:
        raise failure
    if interrupted_at is not None:
        raise Interrupted(interrupted_at)
    return run


def _next_result(results: queue.Queue, latch: InterruptLatch | None = None, running: dict | None = None):
    # A timeout keeps the main thread where SIGINT can reach the latch's handler, and lets it
    # answer a Ctrl-C within a fraction of a second.
    while True:
        if latch is not None:
            latch.acknowledge([entry[1].title for entry in (running or {}).values()])
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            continue


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
