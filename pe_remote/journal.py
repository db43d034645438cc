"""The run journal: what rollback and resume read after a failure or a lost connection.

A JSON-lines file, on the master in the root-only state folder (next to the
backup) and on the workstation next to the local backup copy:

    {"event": "started", "run_id": ..., "backup": {...}, "facts": {...}, "alt_names": [...]}
    {"event": "begin", "step": "stop:pe-puppet"}
    {"event": "end", "step": "stop:pe-puppet"}
    ...
    {"event": "finished", "outcome": "ok" | "rolled-back"}

The header holds everything needed to rebuild the run's plan without trusting
the master's current (half-changed) state.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pe_remote.backup import RemoteBackup
from pe_remote.discovery import REMOTE_STATE_DIR, CertInfo, MasterFacts, ServiceState
from pe_remote.errors import DiscoveryError
from pe_remote.flavors import FLAVORS


def facts_to_dict(facts: MasterFacts) -> dict:
    data = dataclasses.asdict(facts)
    data["flavor"] = facts.flavor.name
    data.pop("settings_raw", None)
    data.pop("unfinished_journals", None)
    if facts.cert:
        data["cert"]["sans"] = sorted(facts.cert.sans)
    return data


def facts_from_dict(data: dict) -> MasterFacts:
    data = dict(data)
    data["flavor"] = FLAVORS[data["flavor"]]
    data["services"] = tuple(ServiceState(**s) for s in data["services"])
    data["dns_alt_names"] = tuple(data["dns_alt_names"])
    data["monolithic_markers"] = tuple(data.get("monolithic_markers", ()))
    data["copy_dirs"] = tuple(data.get("copy_dirs", ()))
    if data.get("cert"):
        data["cert"] = CertInfo(**{**data["cert"], "sans": frozenset(data["cert"]["sans"])})
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
    local_path: Path | None = None

    @property
    def remote_path(self) -> str:
        return f"{REMOTE_STATE_DIR}/{self.run_id}.journal"

    def header(self) -> str:
        return event("started", run_id=self.run_id, at=datetime.now(timezone.utc).isoformat(),
                     backup=dataclasses.asdict(self.backup), local_backup=self.local_backup,
                     facts=facts_to_dict(self.facts), alt_names=list(self.alt_names))

    def append_command(self, line: str) -> str:
        """Remote shell that appends one event line (the line is quoted, never interpreted)."""
        return f"printf '%s\\n' {shlex.quote(line)} >> {shlex.quote(self.remote_path)}"

    @property
    def lock_path(self) -> str:
        return self.remote_path + ".lock"

    def hold_lock_command(self) -> str:
        """Shell for the start of a step: hold the run's lock (shared) until the step's shell ends.

        A step goes on when the connection drops; a later `regen` waits for the lock before it
        resumes or rolls back, so it never checks or redoes a step that is still running.
        Without flock(1) there is no lock and nothing waits.
        """
        return (f"exec 9>>{shlex.quote(self.lock_path)}; "
                "if command -v flock >/dev/null 2>&1; then flock -s 9; fi")

    def steps_running_command(self, wait: int = 0) -> str:
        """Exit 0 once no step of the run still runs (waiting up to `wait` seconds), 1 if one does."""
        how = f"-w {int(wait)}" if wait else "-n"
        return (f"command -v flock >/dev/null 2>&1 || exit 0; exec 9>>{shlex.quote(self.lock_path)}; "
                f"flock -x {how} 9")

    def start_command(self) -> str:
        return f"umask 077 && {self.append_command(self.header())}"

    def record_local(self, line: str) -> None:
        if self.local_path is not None:
            with open(self.local_path, "a") as fh:
                fh.write(line + "\n")


def parse_journal(path: str, text: str) -> Journal:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not lines or lines[0].get("event") != "started":
        raise DiscoveryError(f"run journal {path} on the master is unreadable (no header)")
    head = lines[0]
    done = [entry["step"] for entry in lines if entry.get("event") == "end"]
    return Journal(
        run_id=head["run_id"],
        facts=facts_from_dict(head["facts"]),
        alt_names=tuple(head["alt_names"]),
        backup=RemoteBackup(**head["backup"]),
        local_backup=head.get("local_backup", ""),
        done=done,
    )
