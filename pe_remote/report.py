"""The machine-readable record of one regen (`--report FILE`), for CI jobs.

The schema is `pe_remote/report.schema.json` (documented in the README). The
report is filled in as the run goes, and written even when the run fails, so a
CI job always has one to keep as an artifact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
OUTCOMES = ("ok", "rolled-back", "failed", "dry-run", "abandoned")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    """One step as it ran: what the executor keeps and the report shows."""

    key: str
    title: str
    started: float  # time.monotonic()
    ended: float
    outcome: str  # ok, already-done, failed
    started_at: str = ""  # UTC, for the report
    ended_at: str = ""

    def as_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "started": self.started_at, "ended": self.ended_at,
                "outcome": self.outcome}


@dataclass
class RunReport:
    host: str
    started: str = field(default_factory=utc_now)
    ended: str | None = None
    outcome: str = "failed"
    error: str | None = None
    exit_code: int = 0
    flavor: str | None = None
    certname: str | None = None
    alt_names: list[str] = field(default_factory=list)
    old_cert: dict | None = None
    new_cert: dict | None = None
    backup: dict | None = None
    steps: list[StepRecord] = field(default_factory=list)
    downtime_seconds: float | None = None
    remote_commands: int = 0
    run_id: str | None = None
    path: str | None = None  # regen: "reload" or "restart" (plan.path)

    @staticmethod
    def cert_dict(cert) -> dict | None:
        if cert is None:
            return None
        return {"serial": cert.serial, "issuer": cert.issuer, "not_after": cert.not_after,
                "sha256": cert.sha256, "sans": sorted(cert.sans)}

    def as_dict(self) -> dict:
        return {
            "schema": "pe-remote-report/1",
            "host": self.host,
            "started": self.started,
            "ended": self.ended,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": self.error,
            "run_id": self.run_id,
            "flavor": self.flavor,
            "certname": self.certname,
            "alt_names": self.alt_names,
            "old_cert": self.old_cert,
            "new_cert": self.new_cert,
            "backup": self.backup,
            "steps": [s.as_dict() for s in self.steps],
            "downtime_seconds": self.downtime_seconds,
            "path": self.path,
            "remote_commands": self.remote_commands,
        }

    def write(self, path: str | os.PathLike) -> None:
        """Atomically (temp file, rename), so a CI job never keeps half a report."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        os.replace(partial, path)
