"""Run a plan's steps in order; each step must pass its own check before the next starts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pe_remote.errors import StepFailed
from pe_remote.plan import Plan


@dataclass
class StepRecord:
    key: str
    title: str
    started: float
    ended: float
    outcome: str


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

    @property
    def completed(self) -> list[str]:
        return [r.key for r in self.records if r.outcome == "ok"]


def execute(remote, plan: Plan, console) -> Execution:
    run = Execution()
    total = len(plan.steps)
    for number, step in enumerate(plan.steps, start=1):
        console.step_started(number, total, step.title)
        started = time.monotonic()
        if step.key.startswith("stop:") and run.downtime_started is None:
            run.downtime_started = started
        console.command(step.command)
        result = remote.run(step.command, check=False)
        problem = None
        if not result.ok:
            problem = f"exit {result.exit_status}: {_last_line(result.stdout + result.stderr)}"
        elif step.check:
            console.command(step.check)
            checked = remote.run(step.check, check=False)
            if not checked.ok:
                problem = f"its check failed: {_last_line(checked.stdout + checked.stderr) or step.check}"
        ended = time.monotonic()
        run.records.append(StepRecord(step.key, step.title, started, ended, "failed" if problem else "ok"))
        console.step_finished(number, total, step.title, ended - started, "FAILED" if problem else "done")
        if problem:
            raise StepFailed(step.title, problem)
        if step.server_ready:
            run.downtime_ended = ended
    return run


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
