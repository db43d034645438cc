"""Unit tests: after the first change, whatever goes wrong ends in a rollback or an 'incomplete' with the
way forward; the exit code comes from where the run got to, not from the exception's class.

Before: an OSError (the local journal copy on a full disk) after `clean` escaped with a traceback,
exit 1 and no rollback; a lost connection while journalling 'finished' after a good run said exit 3
('SSH failed, nothing touched').
"""

from __future__ import annotations

import types

import pytest

from pe_remote import regen, runs
from pe_remote.errors import ConnectionFailed, Incomplete, RolledBack
from pe_remote.events import Events, Phase, ReportWriter
from pe_remote.journal import Journal
from pe_remote.plan import build_plan
from pe_remote.report import RunReport
from test_unit_journal_parse import BACKUP, RUN_ID
from test_unit_trust import RECORDED


class Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None

    def waiting(self, what):
        import contextlib

        return contextlib.nullcontext()


class Remote:
    commands_run = 0
    target = type("T", (), {"label": "m"})()

    def run(self, command, **kwargs):
        return type("R", (), {"ok": True, "stdout": "", "stderr": "", "exit_status": 0})()


def _journal(tmp_path):
    return Journal(RUN_ID, RECORDED, ("puppet",), BACKUP, str(tmp_path / "b.tar.gz"),
                   local_path=tmp_path / "b.tar.gz.journal")


def _run_steps(plan, journal, events):
    remote = Remote()
    return runs.run_steps(remote, plan, journal, regen.RegenJob(remote, events).proof(journal, plan), Quiet(), events)


def test_an_unexpected_error_after_the_first_change_rolls_back(monkeypatch, tmp_path):
    reasons = []

    def failing_execute(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def fake_rollback(remote, journal, proof, console, *, reason, events=None):
        reasons.append(reason)
        raise RolledBack(f"rolled back: {reason}")

    monkeypatch.setattr(runs, "execute", failing_execute)
    monkeypatch.setattr(runs, "roll_back", fake_rollback)
    events = Events(ReportWriter(RunReport("m")))
    with pytest.raises(RolledBack) as info:
        _run_steps(build_plan(RECORDED, ("puppet",)), _journal(tmp_path), events)
    assert info.value.exit_code == 7
    assert reasons and "unexpected error during the run: OSError" in reasons[0] and "No space left" in reasons[0]


def test_a_lost_connection_after_success_is_incomplete_not_nothing_touched(monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "execute", lambda *a, **k: None)
    verification = types.SimpleNamespace(cert=None)
    monkeypatch.setattr(regen, "read_verification", lambda *a, **k: verification)
    monkeypatch.setattr(regen, "check_regen", lambda plan, result: [])

    def lost(*args):
        raise ConnectionFailed("lost the SSH connection to m")

    monkeypatch.setattr(runs, "finish", lost)
    events = Events(ReportWriter(RunReport("m")))
    with pytest.raises(Incomplete) as info:
        _run_steps(build_plan(RECORDED, ("puppet",)), _journal(tmp_path), events)
    assert info.value.exit_code == 8 and events.phase is Phase.INCOMPLETE
    assert "changed and proven" in str(info.value) and "run `regen` again" in str(info.value)


def test_the_local_journal_copy_on_a_full_disk_warns_and_goes_on(tmp_path):
    said = []
    journal = _journal(tmp_path)
    journal.local_path = tmp_path / "is-a-folder"
    journal.local_path.mkdir()
    journal.warn = said.append
    journal.record_local('{"event": "begin"}')  # no exception
    assert said and "cannot write the local journal copy" in said[0] and journal.remote_path in said[0]
    journal.record_local('{"event": "end"}')  # given up once: no second warning
    assert len(said) == 1
