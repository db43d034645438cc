"""Unit tests: a stale or foreign journal is never trusted into a resume or a rollback.

Before: a months-old journal with `generate` marked done was resumed on a master restored by hand
since; the steps it marked done were skipped unchecked, verification failed, and the rollback put the
old backup back over the live CA, losing every cert signed since.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pe_remote.cli import run_id_from
from pe_remote.errors import InputError, Refused
from pe_remote.journal import Journal, event, parse_journal
from pe_remote.plan import build_plan
from pe_remote.runs import chosen_journal, journal_age_hours, recheck_done_steps
from pe_remote.restore import ca_changes, ca_changes_command
from test_unit_journal_parse import BACKUP, RUN_ID
from test_unit_trust import RECORDED

C = RECORDED.certname


def _journal_text(run_id: str, facts=RECORDED, *done: str) -> tuple[str, str]:
    backup = dataclasses.replace(BACKUP, path=f"/root/pe-remote-backups/{run_id[:16]}-{C}-ssl.tar.gz")
    head = Journal(run_id, facts, ("puppet", "puppet.pe-remote.test"), backup, "").header()
    lines = [head, *(event("end", step=key) for key in done)]
    return f"/root/pe-remote-backups/{run_id}.journal", "\n".join(lines) + "\n"


def _run_id(hours_ago: float) -> str:
    when = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    return f"{when.strftime('%Y%m%dT%H%M%SZ')}-{C}"


def _current(*journals):
    return dataclasses.replace(RECORDED, unfinished_journals=tuple(journals))


# --- which unfinished run, and how old -----------------------------------------------------------

def test_a_recent_run_is_chosen_by_default():
    recent = _run_id(0.1)
    assert chosen_journal(_current(_journal_text(recent)), None, "m").run_id == recent


def test_a_run_older_than_a_day_needs_its_id():
    old = _run_id(24 * 90)
    with pytest.raises(Refused) as info:
        chosen_journal(_current(_journal_text(old)), None, "m")
    message = str(info.value)
    assert "90.0 days ago" in message
    assert f"--resume {old}" in message and f"--rollback {old}" in message and f"--abandon {old}" in message
    assert chosen_journal(_current(_journal_text(old)), old, "m").run_id == old


def test_a_named_run_that_is_not_there_is_an_input_error():
    with pytest.raises(InputError, match="no unfinished run"):
        chosen_journal(_current(_journal_text(_run_id(1))), _run_id(500), "m")


def test_age_from_the_run_id():
    assert journal_age_hours(f"20261128T000000Z-{C}", datetime(2026, 11, 29, tzinfo=timezone.utc)) == 24


@pytest.mark.parametrize("args, says", [
    (("x", None, None), "not a run id"),
    ((None, None, True), "needs the run id"),
    ((True, RUN_ID, None), "one of"),
])
def test_run_id_flags_are_checked(args, says):
    with pytest.raises(InputError, match=says):
        run_id_from(*args)


def test_run_id_flags():
    assert run_id_from(True, None, None) is None
    assert run_id_from(RUN_ID, None, None) == RUN_ID
    assert run_id_from(False, None, RUN_ID) == RUN_ID


# --- steps marked done are re-checked, and a check proves THIS run's effect ----------------------

class LocalShell:
    def __init__(self):
        self.commands = []

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        return type("R", (), {"ok": proc.returncode == 0, "stdout": proc.stdout, "stderr": proc.stderr,
                              "exit_status": proc.returncode})()


def _make_cert(path: Path, serial: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={C}",
                    "-set_serial", f"0x{serial}", "-keyout", str(path.parent / "k.pem"), "-out", str(path),
                    "-days", "2"], check=True, capture_output=True)


def _master_on_disk(tmp_path: Path, serial: str):
    """The run's facts pointing at folders under tmp_path, holding a cert of `serial`."""
    ssl, ca = tmp_path / "lib" / "ssl", tmp_path / "lib" / "ca"
    facts = dataclasses.replace(RECORDED, ssldir=str(ssl), cadir=str(ca),
                                hostcert=f"{ssl}/certs/{C}.pem", hostprivkey=f"{ssl}/private_keys/{C}.pem",
                                cert=dataclasses.replace(RECORDED.cert, serial="2"))
    _make_cert(ssl / "certs" / f"{C}.pem", serial)
    for path in (ssl / "private_keys" / f"{C}.pem", ca / "signed" / f"{C}.pem"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return facts


def test_generate_marked_done_on_a_master_restored_by_hand_is_refused(tmp_path):
    facts = _master_on_disk(tmp_path, "2")  # the OLD cert (serial 2) is back: generate's effect is gone
    plan = build_plan(facts, ("puppet",))
    path, text = _journal_text(RUN_ID, facts, "generate")
    with pytest.raises(Refused) as info:
        recheck_done_steps(LocalShell(), plan, parse_journal(path, text))
    assert "Generate a new cert" in str(info.value) and f"--abandon {RUN_ID}" in str(info.value)


def test_generate_marked_done_with_the_new_cert_there_is_resumed(tmp_path):
    facts = _master_on_disk(tmp_path, "0B")
    plan = build_plan(facts, ("puppet",))
    path, text = _journal_text(RUN_ID, facts, "generate")
    remote = LocalShell()
    recheck_done_steps(remote, plan, parse_journal(path, text))  # no error
    assert len(remote.commands) == 1  # every re-check in one remote command


def test_a_step_undone_by_a_later_done_step_is_not_rechecked(tmp_path):
    facts = _master_on_disk(tmp_path, "0B")
    plan = build_plan(facts, ("puppet",))
    # delete-leftovers' check (files gone) fails once generate re-created them: not asked.
    path, text = _journal_text(RUN_ID, facts, "delete-leftovers", "generate")
    recheck_done_steps(LocalShell(), plan, parse_journal(path, text))


# --- a rollback never puts a backup back over a CA that has moved on ----------------------------

def _ca_backup(tmp_path: Path, facts) -> Path:
    ca = Path(facts.cadir)
    (ca / "signed").mkdir(parents=True, exist_ok=True)
    (ca / "serial").write_text("0003\n")
    (ca / "inventory.txt").write_text("0x0001 a b /CN=ca\n0x0002 a b /CN=agent1.example.com\n")
    (ca / "signed" / "agent1.example.com.pem").write_text("x")
    (ca / "signed" / f"{C}.pem").write_text("x")
    tarball = tmp_path / "b.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(str(ca), arcname=str(ca).lstrip("/"))
    return tarball


def _changes(tmp_path: Path, facts, tarball: Path) -> list[str]:
    out = LocalShell().run(ca_changes_command(facts, str(tarball), scratch=str(tmp_path))).stdout
    return ca_changes(out, C)


def test_this_runs_own_changes_are_not_a_moved_on_ca(tmp_path):
    facts = _master_on_disk(tmp_path, "0B")
    tarball = _ca_backup(tmp_path, facts)
    ca = Path(facts.cadir)
    (ca / "serial").write_text("0004\n")  # generate signed one cert: the certname's
    with open(ca / "inventory.txt", "a") as fh:
        fh.write(f"0x0003 a b /CN={C}\n")
    assert _changes(tmp_path, facts, tarball) == []


def test_a_cert_signed_since_the_backup_blocks_the_rollback(tmp_path):
    facts = _master_on_disk(tmp_path, "0B")
    tarball = _ca_backup(tmp_path, facts)
    ca = Path(facts.cadir)
    (ca / "serial").write_text("0005\n")
    (ca / "signed" / "agent2.example.com.pem").write_text("x")
    with open(ca / "inventory.txt", "a") as fh:
        fh.write("0x0003 a b /CN=agent2.example.com\n0x0004 a b /CN=x\n")
    changes = _changes(tmp_path, facts, tarball)
    assert any("from 0003 to 0005" in c for c in changes)
    assert any("agent2.example.com.pem" in c for c in changes)
    assert any("/CN=agent2.example.com" in c for c in changes)
    assert not list(tmp_path.glob(".ca-check.*")), "scratch files are removed"


def test_parsing_what_changed():
    assert ca_changes("==> serial <==\n0A\n0A\n==> signed_added <==\n==> signed_removed <==\n"
                      f"{C}.pem\n==> inventory_added <==\n", C) == []
    assert ca_changes("==> serial <==\n0A\n09\n", C)[0].startswith("the CA's serial counter went from 0A to 09")
