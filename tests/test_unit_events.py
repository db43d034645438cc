"""Unit tests: a run is phases that emit events; the report, the console, the local journal copy and
the benchmark's timings listen; the exit code is the phase's."""

from __future__ import annotations

import dataclasses
import io
import json
import types

import pytest

from pe_remote import regen, runs
from pe_remote.backup import Backup, RemoteBackup
from pe_remote.console import Console
from pe_remote.errors import (ConnectionFailed, DiscoveryError, Incomplete, InputError, Refused, RolledBack,
                              VerificationFailed)
from pe_remote.events import Events, Phase, Timings, exit_code
from pe_remote.report import RunReport
from test_unit_backup_verify import RECORDED

STEP_OK = "==> output <==\n==> rc <==\n0\n==> check-output <==\n==> check <==\n0\n"
STEP_FAILED = "==> output <==\nZXJyb3I6IG5vIQo=\n==> rc <==\n1\n"  # "error: no!"


@pytest.mark.parametrize("phase, error, code", [
    (Phase.READ_ONLY, None, 0),
    (Phase.READ_ONLY, InputError("x"), 2),
    (Phase.READ_ONLY, ConnectionFailed("x"), 3),
    (Phase.READ_ONLY, Refused("x"), 4),
    (Phase.READ_ONLY, DiscoveryError("x"), 6),
    (Phase.READ_ONLY, KeyboardInterrupt(), 130),
    (Phase.READ_ONLY, RuntimeError("x"), 1),
    (Phase.DONE, None, 0),
    (Phase.ROLLED_BACK, RolledBack("x"), 7),
    (Phase.INCOMPLETE, ConnectionFailed("x"), 8),  # the phase decides, not the error's class
    (Phase.CHANGING, InputError("x"), 8),
])
def test_each_phase_has_its_exit_code(phase, error, code):
    assert exit_code(phase, error) == code


def test_listeners_get_every_event_in_order_with_its_phase():
    seen = []
    events = Events(seen.append)
    events.emit("a", x=1)
    events.enter(Phase.CHANGING)
    events.enter(Phase.CHANGING)  # no second phase event
    events.emit("b")
    assert [(e.name, e.phase, e.data) for e in seen] == [
        ("a", Phase.READ_ONLY, {"x": 1}), ("phase", Phase.CHANGING, {"phase": Phase.CHANGING}),
        ("b", Phase.CHANGING, {})]
    assert seen[0].utc.endswith("Z") and seen[0].at <= seen[-1].at


def test_timings_add_up_started_finished_pairs():
    timings = Timings()
    events = Events(timings)
    for _ in range(2):
        events.emit("backup-started")
        events.emit("backup-finished")
    events.emit("window-closed", seconds=4.5)
    events.emit("step-started", key="x")  # steps are not parts
    assert set(timings.seconds) == {"backup", "downtime"} and timings.seconds["downtime"] == 4.5


# --- a whole regen on fakes: which events, which phase, which report --------------------------

class Master:
    """The remote: step scripts answer as the step wrapper does; everything else succeeds quietly."""

    def __init__(self, fail_step: str | None = None) -> None:
        self.fail_step = fail_step
        self.commands_run = 0
        self.target = types.SimpleNamespace(label="m")

    def hold(self, command):
        return "==> lock-held <==", types.SimpleNamespace(close=lambda: None)

    def run(self, command, *, check=True, timeout=None):
        self.commands_run += 1
        stdout = ""
        if "trap '' PIPE HUP" in command:
            failing = self.fail_step and f'"step": "{self.fail_step}"' in command
            stdout = STEP_FAILED if failing else STEP_OK
        return types.SimpleNamespace(ok=True, stdout=stdout, stderr="", exit_status=0)


@pytest.fixture
def job(monkeypatch, tmp_path):
    facts = dataclasses.replace(RECORDED, backup_free_kb=10**7, ssl_kb=100)
    local = tmp_path / "b" / "20260101T000000Z-m-ssl.tar.gz"
    local.parent.mkdir()
    local.write_bytes(b"tarball")
    backup = Backup(RemoteBackup("/root/pe-remote-backups/20260101T000000Z-m-ssl.tar.gz", "a" * 64, 7), local)
    monkeypatch.setattr(regen, "discover", lambda remote, flavor_override=None: facts)
    monkeypatch.setattr(runs, "take_backup", lambda remote, facts, folder: backup)
    new_cert = dataclasses.replace(facts.cert, serial="9", sha256="BB")
    monkeypatch.setattr(regen, "read_verification", lambda *a, **k: types.SimpleNamespace(cert=new_cert))
    monkeypatch.setattr(regen, "check_regen", lambda plan, result: [])
    return types.SimpleNamespace(facts=facts, options=regen.RegenOptions(backup_dir=str(tmp_path / "b")))


def _run(job, remote, **options):
    seen, report = [], RunReport("m")
    console = Console(out=io.StringIO(), assume_yes=True)
    options = dataclasses.replace(job.options, **options)
    try:
        return regen.regen(remote, options, console, report, listeners=(seen.append,)), seen, report, console
    except BaseException as exc:  # noqa: BLE001 - the tests look at it (Ctrl-C included)
        return exc, seen, report, console


def test_a_good_run_goes_read_only_changing_done(job):
    result, seen, report, console = _run(job, Master())
    assert result.outcome == "ok"
    names = [e.name for e in seen]
    for name in ("discovery-started", "discovery-finished", "planned", "backup-started", "backup-finished",
                 "journal-started", "step-started", "step-finished", "window-opened", "window-closed", "verified",
                 "finished"):
        assert name in names, name
    phases = [e.data["phase"] for e in seen if e.name == "phase"]
    assert phases == [Phase.CHANGING, Phase.DONE]
    assert names.index("phase") == names.index("step-started") - 1  # the first step starts the changes
    assert all(e.phase is Phase.READ_ONLY for e in seen[:names.index("phase")])
    finished = seen[-1]
    assert finished.name == "finished" and finished.data["exit_code"] == 0
    # The report is the events' record.
    data = report.as_dict()
    assert data["outcome"] == "ok" and data["exit_code"] == 0 and data["new_cert"]["serial"] == "9"
    assert [s["key"] for s in data["steps"]] == [s.key for s in result.plan.steps]
    assert data["backup"]["sha256"] == "a" * 64 and data["run_id"].endswith(job.facts.certname)
    assert data["downtime_seconds"] is not None and data["remote_commands"] == result.commands_run
    # The console showed each step; the local journal copy holds each step's end.
    assert "Stop puppet" in console.out.getvalue()
    copy = result.backup.local_path.with_name(result.backup.local_path.name + ".journal")
    lines = [json.loads(line) for line in copy.read_text().splitlines()]
    assert lines[0]["event"] == "started" and lines[-1] == {"event": "finished", "outcome": "ok"}
    assert [(e["event"], e["step"]) for e in lines[1:-1]] == [("end", s.key) for s in result.plan.steps]


def test_a_failed_step_is_rolled_back_exit_7(job, monkeypatch):
    monkeypatch.setattr(runs, "_roll_back", lambda remote, journal, proof, console, reason, events, steps_ended:
                        (_ for _ in ()).throw(RolledBack(f"rolled back: {reason}")))
    error, seen, report, _ = _run(job, Master(fail_step="generate"))
    assert isinstance(error, RolledBack) and "error: no!" in str(error)
    assert [e.data["phase"] for e in seen if e.name == "phase"] == [Phase.CHANGING, Phase.ROLLED_BACK]
    assert report.exit_code == 7 and report.outcome == "rolled-back"
    assert report.steps[-1].key == "generate" and report.steps[-1].outcome == "failed"


def test_a_rollback_that_fails_is_incomplete_exit_8(job, monkeypatch):
    def broken(remote, journal, proof, console, reason, events, steps_ended):
        events.emit("rollback-started", reason=reason)
        raise Incomplete(f"{reason}; then the ROLLBACK FAILED too")

    monkeypatch.setattr(runs, "_roll_back", broken)
    monkeypatch.setattr(regen, "check_regen", lambda plan, result: ["serial unchanged (1)"])
    error, seen, report, _ = _run(job, Master())
    assert isinstance(error, Incomplete)
    assert seen[-1].data["exit_code"] == 8 and report.exit_code == 8 and report.outcome == "failed"
    assert [e.data["phase"] for e in seen if e.name == "phase"] == [Phase.CHANGING, Phase.INCOMPLETE]


def test_an_error_in_the_read_only_phase_keeps_its_own_exit_code(job, monkeypatch):
    def refuse(remote, flavor_override=None):
        raise Refused("not a master")

    monkeypatch.setattr(regen, "discover", refuse)
    error, seen, report, _ = _run(job, Master())
    assert isinstance(error, Refused) and report.exit_code == 4
    assert [e.name for e in seen] == ["discovery-started", "finished"]


def test_a_library_error_that_escapes_while_changing_is_made_incomplete(job, monkeypatch):
    def verify_fails(*a, **k):
        raise ConnectionFailed("lost the SSH connection to m")

    monkeypatch.setattr(regen, "read_verification", verify_fails)
    error, seen, report, _ = _run(job, Master())
    assert isinstance(error, Incomplete) and error.exit_code == 8 and report.exit_code == 8
    assert "`regen` again" in str(error)


def test_ctrl_c_before_any_change_is_130(job, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "take_backup", interrupted)
    error, seen, report, _ = _run(job, Master())
    assert isinstance(error, KeyboardInterrupt)
    assert report.exit_code == 130 and report.error == "interrupted before any change"


def test_verification_failure_rolls_back(job, monkeypatch):
    reasons = []

    def fake(remote, journal, proof, console, reason, events, steps_ended):
        reasons.append(reason)
        raise RolledBack(f"rolled back: {reason}")

    monkeypatch.setattr(runs, "_roll_back", fake)
    monkeypatch.setattr(regen, "check_regen", lambda plan, result: ["the old serial 1 is not in the CA's CRL"])
    error, _, report, _ = _run(job, Master())
    assert isinstance(error, RolledBack) and report.exit_code == 7
    assert reasons == [str(VerificationFailed("the new cert or the services are not right: the old serial 1 is "
                                              "not in the CA's CRL"))]
