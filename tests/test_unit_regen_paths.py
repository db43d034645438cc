"""Unit tests: every way a `regen` run can go, through `regen.regen(...)` and its parts.

The collaborators regen.py calls (discover, take_backup, execute, read_verification, put_back,
ca_changes, the master lock) are faked here; no test matches the text of a remote command (the
command builders are moving into `pe_remote/commands/`). The journal's own command builders are
replaced by sentinels so the fake master can tell "are steps still running?" from the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from fakes import FakeLocks, FakeRemote, QuietConsole, Result
from pe_remote import lock as master_lock
from pe_remote import regen, runs
from pe_remote.commands import steps as sh
from pe_remote.backup import REMOTE_BACKUP_DIR, Backup, RemoteBackup
from pe_remote.errors import (Aborted, BackupError, ConnectionFailed, Incomplete, InputError, PeRemoteError,
                              Refused, RolledBack, StepFailed)
from pe_remote.events import Events, Phase, ReportWriter
from pe_remote.journal import Journal, event, new_run_id
from pe_remote.plan import build_plan
from pe_remote.report import RunReport, utc_now
from pe_remote.restore import RestoreOutcome
from pe_remote.verify import Verification
from test_unit_journal_parse import BACKUP, RUN_ID
from test_unit_trust import RECORDED

C = RECORDED.certname
OLD = RECORDED.cert
STEPS_RUNNING = "STEPS-RUNNING?"
READ_JOURNAL = "READ-JOURNAL"
APPEND = "APPEND-TO-JOURNAL"


# --- fakes of the collaborators -----------------------------------------------------------------

@pytest.fixture(autouse=True)
def journal_sentinels(monkeypatch):
    """The journal's "steps still running?" and "read the journal" commands as sentinels."""
    monkeypatch.setattr(Journal, "steps_running_command", lambda self, wait=0: f"{STEPS_RUNNING} wait={wait}")
    monkeypatch.setattr(Journal, "read_command", lambda self: READ_JOURNAL)
    monkeypatch.setattr(Journal, "append_command", lambda self, line: f"{APPEND} {line}")


class Master:
    """The fake master's answers: steps of an interrupted run running for the first `running`
    checks (wait=0) and, when `never_end`, also through the long wait; the journal's text when
    read again; `stdout` for anything else."""

    def __init__(self, *, running: bool = False, never_end: bool = False, journal_text: str = "",
                 stdout: str = ""):
        self.running, self.never_end = running, never_end
        self.journal_text, self.stdout = journal_text, stdout
        self.answers: dict[str, Result] = {}  # exact commands answered otherwise

    def __call__(self, command, index, kwargs):
        if command in self.answers:
            return self.answers[command]
        if command.startswith(STEPS_RUNNING):
            waited = not command.endswith("wait=0")
            return Result(ok=not self.running or (waited and not self.never_end))
        if command == READ_JOURNAL:
            return Result(self.journal_text)
        return Result(self.stdout)


class FakeExecute:
    """Stands in for executor.execute: each step not done makes the run 'changing' and is reported
    as the real executor reports it; `fail` is raised at step `fail_at` (after it started)."""

    def __init__(self, fail: BaseException | None = None, fail_at: str | None = None):
        self.fail, self.fail_at = fail, fail_at
        self.calls: list[dict] = []

    def __call__(self, remote, plan, console, *, journal=None, done=(), latch=None, resume=False, run=None,
                 events=None):
        self.calls.append({"done": tuple(done), "resume": resume, "journal": journal, "latch": latch,
                           "plan": plan})
        total = len(plan.steps)
        for number, step in enumerate(plan.steps, start=1):
            base = {"key": step.key, "title": step.title, "number": number, "total": total}
            if step.key in done:
                events.emit("step-finished", **base, outcome="journalled", seconds=0.0, started_at="", ended_at="")
                continue
            events.enter(Phase.CHANGING)
            events.emit("step-started", **base, command=step.command)
            remote.run(f"STEP {step.key}", check=False)
            if self.fail is not None and step.key == (self.fail_at or step.key):
                events.emit("step-finished", **base, outcome="failed", seconds=0.1, started_at=utc_now(),
                            ended_at=utc_now())
                raise self.fail
            events.emit("step-finished", **base, outcome="ok", seconds=0.1, started_at=utc_now(),
                        ended_at=utc_now())
        return run


def new_cert(plan, **changes):
    """The cert a good regen leaves: serial above the old one, same issuer, the plan's SANs."""
    return dataclasses.replace(OLD, serial="2", sha256="AB:" * 31 + "CD", sans=plan.expected_sans,
                               pubkey_sha256="f" * 64, **changes)


def good_verification(plan) -> Verification:
    cert = new_cert(plan)
    return Verification(cert, cert.sha256, True, (), frozenset({OLD.serial}))


class Job:
    """One regen's fakes: set up by the `job` fixture, adjusted by each test before it runs."""

    def __init__(self, monkeypatch, tmp_path):
        self.tmp_path = tmp_path
        self.facts = RECORDED
        self.master = Master()
        self.remote = FakeRemote(self.master)
        self.console = QuietConsole()
        self.locks = FakeLocks()
        self.execute = FakeExecute()
        self.report = RunReport("m")
        self.backups: list[Backup] = []
        self.verification_for = good_verification
        self.verifications: list[dict] = []
        self.plans = []
        self.discover_error: BaseException | None = None
        self.backup_error: BaseException | None = None
        monkeypatch.setattr(regen, "discover", self._discover)
        monkeypatch.setattr(runs, "take_backup", self._take_backup)
        monkeypatch.setattr(runs, "execute", self.execute)
        monkeypatch.setattr(regen, "read_verification", self._read_verification)
        monkeypatch.setattr(master_lock, "acquire", self.locks.acquire)
        real_build_plan = regen.build_plan

        def build_plan_kept(*args, **kwargs):
            self.plans.append(real_build_plan(*args, **kwargs))
            return self.plans[-1]

        monkeypatch.setattr(regen, "build_plan", build_plan_kept)

    def _discover(self, remote, flavor_override=None, background=False):
        self.discovered_in_background = background
        if self.discover_error is not None:
            raise self.discover_error
        return self.facts

    def _take_backup(self, remote, facts, folder):
        if self.backup_error is not None:
            raise self.backup_error
        name = f"20261128T001500Z-{facts.certname}-ssl.tar.gz"
        backup = Backup(RemoteBackup(f"{REMOTE_BACKUP_DIR}/{name}", "b" * 64, 4321), Path(folder) / name)
        self.backups.append(backup)
        return backup

    def _read_verification(self, remote, facts, services, *, agent=False):
        self.verifications.append({"facts": facts, "services": list(services), "agent": agent})
        return self.verification_for(self.plans[-1])

    def options(self, **kwargs) -> regen.RegenOptions:
        return regen.RegenOptions(backup_dir=str(self.tmp_path / "backups"), **kwargs)

    def run(self, **options):
        return regen.regen(self.remote, self.options(**options), self.console, self.report)

    def fails(self, error_class, **options):
        with pytest.raises(error_class) as info:
            self.run(**options)
        return info.value


@pytest.fixture
def job(monkeypatch, tmp_path):
    return Job(monkeypatch, tmp_path)


def journal_text(run_id: str, *done: str, facts=RECORDED, alt_names=("puppet", "puppet.pe-remote.test"),
                 job=None):
    """(path, text) of an unfinished run's journal as discovery reads it (`job`: what regen recorded)."""
    backup = dataclasses.replace(BACKUP, path=f"{REMOTE_BACKUP_DIR}/{run_id[:16]}-{facts.certname}-ssl.tar.gz")
    lines = [Journal(run_id, facts, alt_names, backup, "/local/b.tar.gz", job=dict(job or {})).header(),
             *(event("end", step=key) for key in done)]
    return f"{REMOTE_BACKUP_DIR}/{run_id}.journal", "\n".join(lines) + "\n"


def with_unfinished(*journals):
    return dataclasses.replace(RECORDED, unfinished_journals=tuple(journals))


def plan_keys(facts=RECORDED, alt_names=("puppet", "puppet.pe-remote.test")):
    return [step.key for step in build_plan(facts, alt_names).steps]


# --- a normal run, end to end ---------------------------------------------------------------------

def test_a_good_run_ends_ok_with_its_report_filled(job):
    result = job.run()
    report = job.report
    assert result.outcome == "ok"
    assert (report.outcome, report.exit_code, report.error) == ("ok", 0, None)
    assert report.ended is not None
    assert report.certname == C and report.flavor == RECORDED.flavor.name
    assert report.alt_names == ["puppet", "puppet.pe-remote.test"]
    assert report.old_cert["serial"] == OLD.serial and report.new_cert["serial"] == "2"
    assert result.old_serial == OLD.serial and result.new_serial == "2"
    backup = job.backups[0]
    assert report.backup == {"local_path": str(backup.local_path), "remote_path": backup.remote.path,
                             "sha256": "b" * 64, "size": 4321}
    assert report.run_id and report.run_id.endswith("-" + C)
    assert [s.key for s in report.steps] == plan_keys() and all(s.outcome == "ok" for s in report.steps)
    assert report.remote_commands == job.remote.commands_run == result.commands_run > len(report.steps)
    assert result.backup is backup and result.verification.cert.serial == "2"
    # a fresh run, not a resume; verification of the services that ran, with the agent check of the flavor
    assert job.execute.calls[0]["done"] == () and job.execute.calls[0]["resume"] is False
    assert job.verifications[0]["services"] == RECORDED.running_services
    assert job.verifications[0]["agent"] is RECORDED.flavor.agent_check
    assert any("Regenerate the cert of" in q for q in job.console.asked)
    assert "Regenerated " + C in job.console.text("notice")
    # The notice names every folder the backup holds: Puppet 7 keeps its CA outside the ssldir.
    assert f"Backing up {RECORDED.ssldir}, {RECORDED.cadir} on" in job.console.text("notice")


def test_a_good_run_takes_the_lock_once_and_releases_it(job):
    job.run()
    assert job.locks.taken == ["regen"] and job.locks.released == 1


def test_the_local_journal_copy_records_the_run_from_start_to_finish(job):
    job.run()
    path = job.backups[0].local_path.with_name(job.backups[0].local_path.name + ".journal")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["event"] == "started" and lines[0]["run_id"] == job.report.run_id
    assert [line["step"] for line in lines[1:-1]] == plan_keys()
    assert all(line["event"] == "end" for line in lines[1:-1])
    assert lines[-1] == {"event": "finished", "outcome": "ok"}


def test_a_backup_only_is_a_discovery_and_a_backup(job, monkeypatch):
    def while_discovering(remote, folder, discover):
        assert folder == job.tmp_path / "bk" / "m"  # the host's own folder under --backup-dir
        facts = discover()
        return facts, job._take_backup(remote, facts, folder)

    monkeypatch.setattr(regen, "backup_while_discovering", while_discovering)
    backup = regen.backup_only(job.remote, str(job.tmp_path / "bk"), job.console)
    assert job.discovered_in_background  # beside the stream, at the lowest priority
    assert backup is job.backups[0]
    assert backup.sha256 in job.console.text("notice")
    assert job.execute.calls == [] and job.locks.taken == []


# --- the dry run ---------------------------------------------------------------------------------

def test_a_dry_run_shows_the_plan_and_changes_nothing(job):
    result = job.run(dry_run=True)
    assert result.outcome == "dry-run"
    assert (job.report.outcome, job.report.exit_code) == ("dry-run", 0)
    assert job.locks.taken == []  # a dry run changes nothing: no lock
    assert job.backups == [] and job.execute.calls == [] and job.console.asked == []
    assert "Dry run: nothing was changed" in job.console.text("notice")
    assert C in job.console.text("notice")  # the plan itself is shown, not only logged
    assert job.report.old_cert["serial"] == OLD.serial and job.report.new_cert is None


_STOPPED_SERVER = tuple(dataclasses.replace(s, active=False, state="inactive") if s.name == "puppetserver" else s
                        for s in RECORDED.services)


@pytest.mark.parametrize("changes", [
    {"ca_key_present": False},  # a compile master: not the CA
    {"monolithic_markers": ("pe-puppetdb",)},
    {"backup_free_kb": 100, "ssl_kb": 60},  # no room for the backup on the master
    {"services": _STOPPED_SERVER},  # Puppet 6+ cleans through its running CA
], ids=["not-the-ca", "monolithic", "no-room", "server-stopped"])
def test_a_dry_run_is_refused_by_preflight_as_the_real_run_is(job, monkeypatch, changes):
    job.facts = dataclasses.replace(RECORDED, **changes)
    real = job.fails(PeRemoteError)
    real_code = job.report.exit_code
    assert real_code == real.exit_code == 4 and job.backups == []

    job.remote, job.console, job.report = FakeRemote(job.master), QuietConsole(), RunReport("m")
    monkeypatch.setattr(regen, "prepare_local_dir", lambda folder: pytest.fail("a dry run creates no folder"))
    dry = job.fails(PeRemoteError, dry_run=True)
    assert type(dry) is type(real) and str(dry) == str(real)  # the same refusal, word for word
    assert (job.report.exit_code, job.report.outcome) == (real_code, "failed")
    assert job.remote.commands_run == 0 and job.execute.calls == [] and job.backups == []
    assert job.locks.taken == ["regen"]  # the real run's only: a dry run takes no lock either
    assert C in job.console.text("notice")  # the plan is still shown before the refusal
    assert "Dry run: nothing was changed" not in job.console.text("notice")


def test_a_dry_run_of_a_monolithic_install_passes_with_force(job):
    job.facts = dataclasses.replace(RECORDED, monolithic_markers=("pe-puppetdb",))
    assert job.run(dry_run=True, force=True).outcome == "dry-run"
    assert job.report.exit_code == 0 and job.remote.commands_run == 0


# --- preflight: refusals before anything is changed ------------------------------------------------

def _plan(**changes):
    facts = dataclasses.replace(RECORDED, **changes)
    return dataclasses.replace(build_plan(RECORDED, ("puppet",)), facts=facts)


@pytest.mark.parametrize("changes, says", [
    ({"ca_key_present": False}, "ca_key.pem is absent"),
    ({"cert": None}, "has no cert"),
    ({"monolithic_markers": ("pe-puppetdb",)}, "monolithic install (pe-puppetdb)"),
    # Puppet 6+ revokes through the running CA: a stopped server would fail the clean after the backup.
    ({"services": tuple(dataclasses.replace(s, active=False, state="inactive") if s.name == "puppetserver" else s
                        for s in RECORDED.services)}, "puppetserver is not running"),
    ({"backup_free_kb": 100, "ssl_kb": 60}, "not enough room on the master"),
])
def test_preflight_refuses(changes, says):
    with pytest.raises(Refused) as info:
        regen.preflight(_plan(**changes))
    assert says in str(info.value) and info.value.exit_code == 4


def test_a_monolithic_install_passes_with_force():
    regen.preflight(_plan(monolithic_markers=("pe-puppetdb",)), force=True)


def test_room_on_the_master_is_twice_the_ssl_folders():
    regen.preflight(_plan(backup_free_kb=120, ssl_kb=60))
    with pytest.raises(Refused, match="119 KiB free"):
        regen.preflight(_plan(backup_free_kb=119, ssl_kb=60))


def test_the_local_folder_is_created_and_must_have_room(tmp_path, monkeypatch):
    folder = tmp_path / "backups" / "m"
    regen.preflight(_plan(ssl_kb=1), local_folder=folder)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700

    monkeypatch.setattr(regen.shutil, "disk_usage", lambda path: type("U", (), {"free": 10 * 1024})())
    with pytest.raises(BackupError) as info:
        regen.preflight(_plan(ssl_kb=11), local_folder=folder)
    assert "10 KiB free" in str(info.value) and "11 KiB needed" in str(info.value)
    assert info.value.exit_code == 6


def test_a_preflight_refusal_stops_the_run_before_the_backup(job):
    job.facts = dataclasses.replace(RECORDED, ca_key_present=False)
    error = job.fails(Refused)
    assert job.backups == [] and job.execute.calls == [] and job.console.asked == []
    assert (job.report.exit_code, job.report.outcome) == (4, "failed") and error.exit_code == 4
    assert job.locks.released == 1


# --- dropping alt names is confirmed on its own ------------------------------------------------------

def test_dropping_an_alt_name_is_warned_and_confirmed(job):
    job.run(drop_alt_names=("puppet.pe-remote.test",))
    assert job.console.asked[0].startswith("Drop DNS:puppet.pe-remote.test")
    assert "will NOT carry DNS:puppet.pe-remote.test" in job.console.text("warn")
    assert job.report.alt_names == ["puppet"] and job.report.outcome == "ok"


def test_no_to_dropping_an_alt_name_aborts_before_the_backup(job):
    job.console.refuse = "Drop "
    error = job.fails(Aborted, drop_alt_names=("puppet.pe-remote.test",))
    assert job.backups == [] and job.execute.calls == []
    assert job.report.exit_code == error.exit_code == 5


# --- each exit code the run can end with ------------------------------------------------------------

def _step_failed():
    return StepFailed("Generate a new cert", "exit 1: boom")


@pytest.mark.parametrize("setup, error_class, code, outcome", [
    (lambda j: setattr(j, "discover_error", ConnectionFailed("no route to m")), ConnectionFailed, 3, "failed"),
    (lambda j: setattr(j, "facts", dataclasses.replace(RECORDED, cert=None)), Refused, 4, "failed"),
    (lambda j: setattr(j.console, "refuse", "Regenerate"), Aborted, 5, "failed"),
    (lambda j: setattr(j, "backup_error", BackupError("tar failed")), BackupError, 6, "failed"),
], ids=["ssh-3", "refused-4", "aborted-5", "backup-6"])
def test_failures_before_any_change_keep_their_own_exit_code(job, setup, error_class, code, outcome):
    setup(job)
    error = job.fails(error_class)
    assert (job.report.exit_code, job.report.outcome) == (code, outcome) == (error.exit_code, outcome)
    assert job.report.error == str(error)
    assert job.execute.calls == [] and job.report.run_id is None
    assert job.locks.released == len(job.locks.taken) == 1


def test_rollback_or_abandon_without_an_unfinished_run_is_bad_input(job):
    for option in ({"rollback": True}, {"abandon": True}, {"run_id": RUN_ID}):
        error = job.fails(InputError, **option)
        assert "there is no unfinished run on m" in str(error)
        assert job.report.exit_code == 2
    assert job.backups == []


def test_a_busy_master_is_refused_before_discovery(job, monkeypatch):
    def busy(remote, task, console=None):
        raise Refused("another run holds m")

    monkeypatch.setattr(master_lock, "acquire", busy)
    job.discover_error = AssertionError("discovery must not run")
    job.fails(Refused)
    assert job.report.exit_code == 4


def test_ctrl_c_before_any_change_exits_130(job):
    job.backup_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert job.report.exit_code == 130
    assert (job.report.outcome, job.report.error) == ("failed", "interrupted before any change")
    assert job.locks.released == 1


def _rollback_fakes(monkeypatch, *, moved_on=(), outcome=None, put_back_error=None):
    """regen's rollback collaborators: ca_changes says `moved_on`; put_back returns `outcome` (default:
    the old cert on disk and served) or raises `put_back_error`. Returns the list of put_back calls."""
    calls = []
    monkeypatch.setattr(runs, "ca_changes", lambda output, certname: list(moved_on))

    def put_back(remote, facts, tarball, sha256, start, console, *, server_timeout):
        calls.append({"tarball": tarball, "sha256": sha256, "start": list(start), "server_timeout": server_timeout})
        if put_back_error is not None:
            raise put_back_error
        return outcome or RestoreOutcome((f"{facts.ssldir}.pe-remote-failed-X",), OLD.sha256, OLD.sha256)

    monkeypatch.setattr(runs, "put_back", put_back)
    return calls


def test_a_failed_step_is_rolled_back_exit_7(job, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    job.execute.fail, job.execute.fail_at = _step_failed(), "generate"
    error = job.fails(RolledBack)
    assert (job.report.exit_code, job.report.outcome) == (7, "rolled-back") == (error.exit_code, "rolled-back")
    assert "Generate a new cert" in job.report.error and "rolled back" in job.report.error
    assert calls == [{"tarball": job.backups[0].remote.path, "sha256": "b" * 64,
                      "start": RECORDED.running_services, "server_timeout": 300}]
    assert job.report.steps[-1].key == "generate" and job.report.steps[-1].outcome == "failed"
    assert job.report.new_cert is None
    assert job.locks.released == 1  # held through the rollback, released after


def test_a_failed_verification_is_rolled_back(job, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    job.verification_for = lambda plan: Verification(new_cert(plan), "", True, ("puppet",), frozenset({OLD.serial}))
    error = job.fails(RolledBack)
    assert "not running: puppet" in str(error) and "nothing answers TLS on port 8140" in str(error)
    assert job.report.exit_code == 7 and len(calls) == 1


def test_a_lost_connection_during_the_steps_is_incomplete_exit_8(job, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    job.execute.fail, job.execute.fail_at = ConnectionFailed("lost the SSH connection to m"), "generate"
    error = job.fails(Incomplete)
    assert (job.report.exit_code, job.report.outcome) == (8, "failed") and error.exit_code == 8
    assert "Run `regen` again on it to resume" in str(error) and job.report.run_id in str(error)
    assert calls == []  # not rolled back from here


def test_a_failed_rollback_is_incomplete_exit_8(job, monkeypatch):
    _rollback_fakes(monkeypatch, put_back_error=BackupError("sha256 mismatch"))
    job.execute.fail = _step_failed()
    error = job.fails(Incomplete)
    assert "ROLLBACK FAILED" in str(error)
    assert (job.report.exit_code, job.report.outcome) == (8, "failed") == (error.exit_code, "failed")


def test_a_library_error_after_the_first_change_is_reported_incomplete(job):
    """Whatever ends a run that changed the master says so (exit 8), never 'nothing touched'."""

    def listener(event):
        if event.name == "verified":
            raise PeRemoteError("the report could not take the new cert")

    with pytest.raises(Incomplete) as info:
        regen.regen(job.remote, job.options(), job.console, job.report, listeners=(listener,))
    assert "part-way through the run" in str(info.value) and "the report could not" in str(info.value)
    assert info.value.exit_code == job.report.exit_code == 8
    assert isinstance(info.value.__cause__, PeRemoteError)


def test_an_unexpected_error_during_the_steps_is_rolled_back(job, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    job.execute.fail = OSError(28, "No space left on device")
    error = job.fails(RolledBack)
    assert "unexpected error during the run: OSError" in str(error) and "No space left" in str(error)
    assert job.report.exit_code == error.exit_code == 7 and len(calls) == 1


def test_a_connection_lost_while_closing_a_good_run_is_incomplete(job):
    def lost_at_close(command, index, kwargs):
        if command == f"{APPEND} {event('finished', outcome='ok')}":
            raise ConnectionFailed("lost the SSH connection to m")
        return job.master(command, index, kwargs)

    job.remote.respond = lost_at_close
    error = job.fails(Incomplete)
    assert "changed and proven" in str(error) and "every step is found done" in str(error)
    assert job.report.exit_code == error.exit_code == 8 and job.report.new_cert["serial"] == "2"


# A lost connection inside the rollback (here journalling 'rolled-back') left the phase incomplete but
# escaped unwrapped: the CLI said 3 ('SSH failed, nothing touched') while the report said 8.
def test_a_connection_lost_while_closing_a_rollback_exits_as_the_report_says(job, monkeypatch):
    _rollback_fakes(monkeypatch)
    job.execute.fail = _step_failed()

    def lost_at_close(command, index, kwargs):
        if command == f"{APPEND} {event('finished', outcome='rolled-back')}":
            raise ConnectionFailed("lost the SSH connection to m")
        return job.master(command, index, kwargs)

    job.remote.respond = lost_at_close
    with pytest.raises(PeRemoteError) as info:
        job.run()
    assert job.report.exit_code == 8
    assert info.value.exit_code == job.report.exit_code


# --- rollback --------------------------------------------------------------------------------------

def _journal(tmp_path, facts=RECORDED):
    return Journal(RUN_ID, facts, ("puppet",), BACKUP, str(tmp_path / "b.tar.gz"),
                   local_path=tmp_path / "b.tar.gz.journal")


def _rollback(tmp_path, remote, journal=None):
    events = Events(ReportWriter(RunReport("m")))
    console = QuietConsole()
    with pytest.raises(PeRemoteError) as info:
        journal = journal or _journal(tmp_path)
        job = regen.RegenJob(remote, events)
        runs.roll_back(remote, journal, job.proof(journal, job.plan(journal)), console,
                       reason="step 'x' failed: boom", events=events)
    return info.value, events, console


def test_a_rollback_puts_the_backup_back_and_says_rolled_back(tmp_path, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    remote = FakeRemote(Master())
    error, events, console = _rollback(tmp_path, remote)
    assert isinstance(error, RolledBack) and error.exit_code == 7 and events.phase is Phase.ROLLED_BACK
    assert calls == [{"tarball": BACKUP.path, "sha256": BACKUP.sha256, "start": RECORDED.running_services,
                      "server_timeout": 300}]
    assert "step 'x' failed: boom" in str(error) and f"serial {OLD.serial}" in str(error)
    assert f"{RECORDED.ssldir}.pe-remote-failed-X" in str(error)
    assert (tmp_path / "b.tar.gz.journal").read_text().splitlines()[-1] == event("finished", outcome="rolled-back")
    assert "step 'x' failed: boom" in console.text("warn")


def test_a_rollback_asks_the_ca_what_changed_since_the_backup(tmp_path, monkeypatch):
    _rollback_fakes(monkeypatch)
    seen = []
    monkeypatch.setattr(runs, "ca_changes", lambda output, certname: seen.append((output, certname)) or [])
    _rollback(tmp_path, FakeRemote(Master(stdout="what the CA said")))
    assert seen == [("what the CA said", C)]


def test_a_ca_that_moved_on_is_not_rolled_back_and_its_services_are_started(tmp_path, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    compared = []

    def moved_on(output, certname):
        compared.append(int(output.split("#")[1]))
        return ["certs signed since the backup: agent2.pem"]

    monkeypatch.setattr(runs, "ca_changes", moved_on)
    master = Master()
    remote = FakeRemote(lambda command, index, kwargs: master(command, index, kwargs)
                        if command.startswith(STEPS_RUNNING) else Result(f"answer #{index}"))
    error, events, _ = _rollback(tmp_path, remote)
    assert isinstance(error, Incomplete) and error.exit_code == 8 and events.phase is Phase.INCOMPLETE
    assert "NOT rolled back" in str(error) and "agent2.pem" in str(error) and f"--abandon {RUN_ID}" in str(error)
    assert "services were started as they are" in str(error)
    assert calls == []  # nothing put back over the live CA
    # after the comparison, one more command: the services started again, allowed to fail quietly
    after = remote.calls[compared[0] + 1:]
    assert len(after) == 1 and after[0][1]["check"] is False
    assert not after[0][0].startswith(APPEND)  # the run is not closed
    assert not (tmp_path / "b.tar.gz.journal").exists()


def test_a_connection_lost_during_the_put_back_is_incomplete(tmp_path, monkeypatch):
    _rollback_fakes(monkeypatch, put_back_error=ConnectionFailed("lost the SSH connection"))
    error, events, _ = _rollback(tmp_path, FakeRemote(Master()))
    assert isinstance(error, Incomplete) and events.phase is Phase.INCOMPLETE
    assert "lost the SSH connection before the rollback finished" in str(error)
    assert "regen --rollback" in str(error) and "ROLLBACK FAILED" not in str(error)


def test_a_put_back_that_fails_otherwise_is_incomplete_rollback_failed(tmp_path, monkeypatch):
    _rollback_fakes(monkeypatch, put_back_error=BackupError("the tarball does not match its sha256"))
    error, events, _ = _rollback(tmp_path, FakeRemote(Master()))
    assert isinstance(error, Incomplete) and events.phase is Phase.INCOMPLETE
    assert "ROLLBACK FAILED too: the tarball does not match" in str(error) and BACKUP.path in str(error)


@pytest.mark.parametrize("disk, served", [(OLD.sha256, "AB:CD"), (OLD.sha256, ""), ("AB:CD", OLD.sha256)])
def test_a_put_back_that_does_not_serve_the_old_cert_is_incomplete(tmp_path, monkeypatch, disk, served):
    _rollback_fakes(monkeypatch, outcome=RestoreOutcome(("x",), served, disk))
    error, events, _ = _rollback(tmp_path, FakeRemote(Master()))
    assert isinstance(error, Incomplete) and events.phase is Phase.INCOMPLETE
    assert "does not serve the old cert" in str(error)
    assert not (tmp_path / "b.tar.gz.journal").exists()


def test_a_server_that_was_not_running_need_not_serve_after_the_rollback(tmp_path, monkeypatch):
    facts = dataclasses.replace(RECORDED, services=tuple(
        dataclasses.replace(s, active=False, state="inactive") if s.name == "puppetserver" else s
        for s in RECORDED.services))
    calls = _rollback_fakes(monkeypatch, outcome=RestoreOutcome(("x",), "", OLD.sha256))
    error, _, _ = _rollback(tmp_path, FakeRemote(Master()), _journal(tmp_path, facts))
    assert isinstance(error, RolledBack)
    assert calls[0]["start"] == ["puppet"]  # left stopped as it was


def test_a_rollback_waits_for_steps_still_running_first(tmp_path, monkeypatch):
    _rollback_fakes(monkeypatch)
    remote = FakeRemote(Master(running=True))
    error, _, console = _rollback(tmp_path, remote)
    assert isinstance(error, RolledBack)
    assert remote.commands[:2] == [f"{STEPS_RUNNING} wait=0", f"{STEPS_RUNNING} wait={runs.STEPS_STILL_RUNNING_WAIT}"]
    assert "still running on the master" in console.text("notice")


# --- steps of an interrupted run still running --------------------------------------------------------

def test_no_step_running_is_no_wait(tmp_path):
    remote = FakeRemote(Master())
    assert runs.wait_for_steps_still_running(remote, _journal(tmp_path), QuietConsole()) is False
    assert remote.commands == [f"{STEPS_RUNNING} wait=0"]


def test_steps_that_end_while_waited_for(tmp_path):
    remote = FakeRemote(Master(running=True))
    console = QuietConsole()
    assert runs.wait_for_steps_still_running(remote, _journal(tmp_path), console) is True
    assert remote.commands == [f"{STEPS_RUNNING} wait=0", f"{STEPS_RUNNING} wait=600"]
    assert f"waiting up to {runs.STEPS_STILL_RUNNING_WAIT}s" in console.text("notice")


def test_steps_that_never_end_are_incomplete(tmp_path):
    journal = _journal(tmp_path)
    with pytest.raises(Incomplete) as info:
        runs.wait_for_steps_still_running(FakeRemote(Master(running=True, never_end=True)), journal, QuietConsole())
    assert f"after {runs.STEPS_STILL_RUNNING_WAIT}s" in str(info.value) and journal.lock_path in str(info.value)
    assert info.value.exit_code == 8


# --- resuming an unfinished run --------------------------------------------------------------------------

def test_an_unfinished_run_found_by_discovery_is_resumed(job):
    run_id = new_run_id(C)
    done = plan_keys()[:2]
    job.facts = with_unfinished(journal_text(run_id, *done))
    result = job.run()
    assert result.outcome == "ok" and job.report.outcome == "ok" and job.report.exit_code == 0
    call = job.execute.calls[0]
    assert call["resume"] is True and call["done"] == tuple(done) and call["journal"].run_id == run_id
    assert job.backups == []  # no second backup
    assert job.report.run_id == run_id and job.report.backup["remote_path"] == call["journal"].backup.path
    assert [q for q in job.console.asked if q.startswith("Resume run " + run_id)]
    assert f"completed steps: {', '.join(done)}" in job.console.text("notice")
    assert job.locks.taken == ["regen"] and job.locks.released == 1


def test_a_journal_that_grew_while_its_steps_ended_is_read_again(job):
    run_id = new_run_id(C)
    keys = plan_keys()
    path, text = journal_text(run_id, keys[0])
    job.facts = with_unfinished((path, text))
    job.master.running = True
    job.master.journal_text = journal_text(run_id, *keys[:3])[1]
    job.run()
    assert job.execute.calls[0]["done"] == tuple(keys[:3])
    assert READ_JOURNAL in job.remote.commands


def test_the_newest_unfinished_run_is_the_one_resumed(job):
    older, newer = "20000101T000000Z-" + C, new_run_id(C)
    job.facts = with_unfinished(journal_text(older), journal_text(newer))
    job.run()
    assert job.report.run_id == newer


def test_rollback_of_an_unfinished_run(job, monkeypatch):
    calls = _rollback_fakes(monkeypatch)
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id, *plan_keys()[:3]))
    error = job.fails(RolledBack, rollback=True)
    assert (job.report.exit_code, job.report.outcome) == (7, "rolled-back") and error.exit_code == 7
    assert f"run {run_id} rolled back on request" in str(error)
    assert calls and calls[0]["tarball"].endswith(f"{run_id[:16]}-{C}-ssl.tar.gz")
    assert job.execute.calls == []  # no step run again
    assert any(q.startswith(f"Roll back run {run_id}") for q in job.console.asked)
    assert job.remote.commands.count(f"{STEPS_RUNNING} wait=0") == 1  # asked once, not again by the rollback


def test_a_rollback_waits_for_the_server_as_long_as_the_run_was_told(job, monkeypatch):
    # Before, the rollback's starts were bounded at 300 s whatever --server-timeout said: a master that
    # needs longer failed every rollback (exit 8), and --rollback failed the same way again.
    calls = _rollback_fakes(monkeypatch)
    job.facts = with_unfinished(journal_text(new_run_id(C), *plan_keys()[:3]))
    job.fails(RolledBack, rollback=True, server_timeout=900)
    assert calls[0]["server_timeout"] == 900
    job.execute.fail = StepFailed("Generate a new cert", "exit 1: boom")
    job.facts = RECORDED
    job.fails(RolledBack, server_timeout=1200)
    assert calls[1]["server_timeout"] == 1200
    # A short one (to fail fast on the new cert) does not shorten the rollback's wait below the default:
    # under load the server restarted with the old cert took longer, and the rollback ended half done.
    job.fails(RolledBack, server_timeout=30)
    assert calls[2]["server_timeout"] == 300


def test_ctrl_c_while_the_result_is_proven_rolls_back_instead_of_being_lost(job, monkeypatch):
    # Before, the latch noted the press during the proof and nobody looked: the run ended ok, exit 0.
    calls = _rollback_fakes(monkeypatch)

    def pressed_during_proof(plan):
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal sends it; the run's latch catches it
        return good_verification(plan)

    job.verification_for = pressed_during_proof
    error = job.fails(RolledBack)
    assert "Prove the cert" in str(error) and "Ctrl-C" in str(error) and error.exit_code == 7
    assert len(calls) == 1 and "while the result was being proven" in job.console.text("warn")


def test_abandoning_an_unfinished_run_closes_its_journal_only(job):
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id, "stop:puppet"))
    result = job.run(abandon=True, run_id=run_id)
    assert result.outcome == "abandoned" and job.report.outcome == "abandoned" and job.report.exit_code == 0
    # "steps still running?", then the journal's closing line, nothing else
    assert job.remote.commands == [f"{STEPS_RUNNING} wait=0", f"{APPEND} {event('finished', outcome='abandoned')}"]
    assert job.execute.calls == [] and job.backups == []
    assert any(q.startswith(f"Close run {run_id} as abandoned") for q in job.console.asked)


def test_abandoning_waits_for_steps_still_running_before_closing_the_journal(job):
    # Closed first, a step still running would write its end after `finished`: the run would look
    # unfinished again and the next regen would resume it, with no new backup.
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id, "stop:puppet"))
    job.master.running, job.master.journal_text = True, journal_text(run_id, "stop:puppet", "stop:puppetserver")[1]
    result = job.run(abandon=True, run_id=run_id)
    assert result.outcome == "abandoned" and job.report.exit_code == 0
    assert job.remote.commands == [f"{STEPS_RUNNING} wait=0", f"{STEPS_RUNNING} wait={runs.STEPS_STILL_RUNNING_WAIT}",
                                   READ_JOURNAL, f"{APPEND} {event('finished', outcome='abandoned')}"]
    assert "still running on the master" in job.console.text("notice")


def test_a_dry_run_abandon_touches_nothing(job):
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id))
    result = job.run(abandon=True, dry_run=True)
    assert result.outcome == "dry-run" and job.report.outcome == "dry-run"
    assert job.remote.commands_run == 0 and job.console.asked == [] and job.locks.taken == []
    assert f"would close run {run_id} as abandoned" in job.console.text("notice")


# --- a freeze of the CA files cut off with its run (the reload path's generate) ---------------------

THAW = sh.thaw_saved_freeze()
THAWED = "gave the CA files back the owners saved in /root/pe-remote-backups/ca-freeze.owners by a freeze that was cut off"


def frozen_unfinished(run_id: str, *done: str):
    return dataclasses.replace(with_unfinished(journal_text(run_id, *done)), ca_freeze_left=True)


def test_abandoning_gives_back_the_owners_of_a_cut_off_freeze_and_says_so(job):
    run_id = new_run_id(C)
    job.facts = frozen_unfinished(run_id, "stop:puppet")
    job.master.answers[THAW] = Result(THAWED + "\n")
    assert job.run(abandon=True, run_id=run_id).outcome == "abandoned"
    assert job.remote.commands == [f"{STEPS_RUNNING} wait=0", THAW, f"{APPEND} {event('finished', outcome='abandoned')}"]
    assert "The CA files still belong to root" in job.console.text("warn")
    assert any("the CA files get their owners back" in q for q in job.console.asked)
    assert "Gave the CA files back the owners saved" in job.console.text("notice")


def test_a_resume_gives_back_the_owners_of_a_cut_off_freeze_before_its_steps(job):
    run_id = new_run_id(C)
    job.facts = frozen_unfinished(run_id, *plan_keys()[:3])
    assert job.run().outcome == "ok"
    assert job.remote.commands.count(THAW) == 1 and job.execute.calls[0]["resume"] is True


def test_a_rollback_gives_back_the_owners_of_a_cut_off_freeze(job, monkeypatch):
    _rollback_fakes(monkeypatch)
    job.facts = frozen_unfinished(new_run_id(C), *plan_keys()[:3])
    job.fails(RolledBack, rollback=True)
    assert THAW in job.remote.commands


def test_owners_that_cannot_be_given_back_stop_the_resume_before_any_step(job):
    job.facts = frozen_unfinished(new_run_id(C), *plan_keys()[:3])
    job.master.answers[THAW] = Result("/root/pe-remote-backups/ca-freeze.owners is damaged (x)\n", ok=False)
    error = job.fails(Incomplete)
    assert "could not give the CA files back the owners" in str(error) and "is damaged (x)" in str(error)
    assert job.execute.calls == []


def test_a_cut_off_freeze_with_no_run_left_is_given_back_before_a_new_runs_backup(job, monkeypatch):
    # Its journal moved aside: nothing to resume or abandon. A backup of the frozen CA would keep its
    # files root's (a rollback would put that back), and the proof would fail on the saved owners.
    job.facts = dataclasses.replace(RECORDED, ca_freeze_left=True)
    job.master.answers[THAW] = Result(THAWED + "\n")
    commands_at_backup = []
    take_backup = job._take_backup
    monkeypatch.setattr(runs, "take_backup",
                        lambda *a: (commands_at_backup.append(list(job.remote.commands)), take_backup(*a))[1])
    assert job.run().outcome == "ok"
    assert commands_at_backup == [[THAW]] and job.remote.commands.count(THAW) == 1
    assert "no run is left to resume" in job.console.text("warn") and "is done first" in job.console.text("warn")
    assert "Gave the CA files back the owners saved" in job.console.text("notice")


def test_a_dry_run_says_a_left_freeze_would_be_given_back_and_touches_nothing(job):
    job.facts = dataclasses.replace(RECORDED, ca_freeze_left=True)
    assert job.run(dry_run=True).outcome == "dry-run"
    assert THAW not in job.remote.commands and "which a real run does first" in job.console.text("warn")


def test_a_left_freeze_that_cannot_be_given_back_stops_a_new_run_before_its_backup(job):
    job.facts = dataclasses.replace(RECORDED, ca_freeze_left=True)
    job.master.answers[THAW] = Result("/root/pe-remote-backups/ca-freeze.owners is damaged (line 2:)\n", ok=False)
    error = job.fails(Incomplete)
    assert "is damaged (line 2:)" in str(error) and job.backups == [] and job.execute.calls == []


def test_without_a_cut_off_freeze_nothing_is_given_back(job):
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id, *plan_keys()[:3]))
    job.run()
    assert THAW not in job.remote.commands and "belong to root" not in job.console.text("warn")


def test_a_dry_run_says_it_would_give_back_the_owners_and_touches_nothing(job):
    job.facts = frozen_unfinished(new_run_id(C))
    assert job.run(abandon=True, dry_run=True).outcome == "dry-run"
    assert job.remote.commands_run == 0
    assert "after giving the CA files back the owners a cut-off freeze saved" in job.console.text("notice")


@pytest.mark.parametrize("rollback, says", [(False, "would resume it"), (True, "would roll it back")])
def test_a_dry_run_on_an_unfinished_run_says_what_it_would_do(job, rollback, says):
    job.facts = with_unfinished(journal_text(new_run_id(C), "stop:puppet"))
    result = job.run(dry_run=True, rollback=rollback)
    assert result.outcome == "dry-run" and job.remote.commands_run == 0 and job.execute.calls == []
    assert says in job.console.text("notice")


def test_a_named_run_that_is_not_there_is_bad_input(job):
    job.facts = with_unfinished(journal_text(new_run_id(C)))
    error = job.fails(InputError, run_id="20000101T000000Z-" + C)
    assert "has no unfinished run '20000101T000000Z-" in str(error)
    assert job.report.exit_code == 2 and job.remote.commands_run == 0


def test_a_stale_unfinished_run_is_refused_unless_named(job):
    stale = "20000101T000000Z-" + C
    job.facts = with_unfinished(journal_text(stale))
    error = job.fails(Refused)
    assert "too old to resume" in str(error) and job.report.exit_code == 4
    assert job.execute.calls == []
    job.report = RunReport("m")
    job.run(run_id=stale)  # named: resumed
    assert job.execute.calls[0]["resume"] is True and job.report.run_id == stale


def test_a_future_dated_unfinished_run_is_refused_unless_named(job):
    # Before, its negative age was never "stale": a run dated by a wrong clock was resumed unasked.
    future = "20990101T000000Z-" + C
    job.facts = with_unfinished(journal_text(future))
    error = job.fails(Refused)
    assert "in the future" in str(error) and f"--rollback {future}" in str(error) and job.execute.calls == []
    job.report = RunReport("m")
    job.run(run_id=future)
    assert job.execute.calls[0]["resume"] is True


def test_a_resume_with_a_done_step_gone_is_refused_before_any_change(job):
    run_id = new_run_id(C)
    keys = plan_keys()
    job.facts = with_unfinished(journal_text(run_id, *keys[:4]))
    job.master.stdout = keys[3] + "\n"  # its check fails on the master now
    error = job.fails(Refused)
    assert "was done, but the master does not show it" in str(error) and job.report.exit_code == 4
    assert f"--rollback {run_id}" in str(error)
    assert job.execute.calls == [] and job.console.asked == []


def test_a_resume_after_the_master_restarted_stops_its_services_again(job):
    # At boot the stopped services came back: the done stops are run again, not refused.
    run_id = new_run_id(C)
    keys = plan_keys()
    job.facts = with_unfinished(journal_text(run_id, *keys[:4]))
    job.master.stdout = "stop:puppet\nstop:puppetserver\n"
    assert job.run().outcome == "ok"
    assert job.execute.calls[0]["done"] == ("clean", "delete-leftovers")
    assert "Run again, their effect is gone since (the master restarted?): Stop puppet" in job.console.text("notice")
    # The executor runs steps whose needs are met at the same time: what follows a stop run again
    # must wait for it, or a start could run beside it and the service end stopped.
    needs = job.execute.calls[0]["plan"].needs()
    later = [key for key in keys[keys.index("stop:puppetserver") + 1:]]
    assert later and all({"stop:puppet", "stop:puppetserver"} <= set(needs[key]) for key in later)


def test_a_resume_after_the_agent_cached_a_catalog_again_removes_it_again(job):
    run_id = new_run_id(C)
    keys = plan_keys()
    done = keys[:keys.index("remove-catalog") + 1]
    job.facts = with_unfinished(journal_text(run_id, *done))
    job.master.stdout = "remove-catalog\n"
    assert job.run().outcome == "ok"
    assert "remove-catalog" not in job.execute.calls[0]["done"]


# --- a resume finishes the run as recorded: flags asking for something else are refused -------------

def _refused_resume(job, **options):
    error = job.fails(InputError, **options)
    assert (job.report.exit_code, error.exit_code) == (2, 2) and "\n" not in str(error)
    assert job.remote.commands_run == 0 and job.execute.calls == [] and job.console.asked == []
    assert job.backups == []
    return str(error)


@pytest.mark.parametrize("options, says", [
    ({"alt_names": ("puppet", "puppet.pe-remote.test", "new.pe-remote.test")},
     "uses alt names puppet, puppet.pe-remote.test, not puppet, puppet.pe-remote.test, new.pe-remote.test"),
    ({"alt_names": ("puppet", "puppet.pe-remote.test", "new.pe-remote.test"), "dry_run": True},
     "not puppet, puppet.pe-remote.test, new.pe-remote.test"),
    ({"drop_alt_names": ("puppet.pe-remote.test",)}, "not puppet: finish it"),
    # names the run's own cert carries, left out without --drop-alt-names: not what that run did either
    ({"alt_names": ("puppet",)},
     "not what the flags given ask for, which does not fit that run (the current cert also carries puppet.pe-remote.test"),
])
def test_a_resume_asking_for_other_alt_names_is_refused_before_any_change(job, options, says):
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id, *plan_keys()[:2]))
    message = _refused_resume(job, **options)
    assert message.startswith(f"the unfinished run {run_id} uses alt names puppet, puppet.pe-remote.test")
    assert says in message
    assert f"`regen --rollback` / `regen --abandon {run_id}` first" in message
    flag = "--drop-alt-names" if "drop_alt_names" in options else "--dns-alt-names"
    assert f"run regen again without {flag})" in message


@pytest.mark.parametrize("options", [
    {"alt_names": ("puppet.pe-remote.test", C, "puppet")},  # the same names, in another order
    {"alt_names": ("other.pe-remote.test",), "alt_names_from_inventory": True},  # not given: the journal's
    {"restart": True},  # the run takes the stop/start path anyway (this master cannot reload)
])
def test_a_resume_asking_for_what_the_run_recorded_goes_on(job, options):
    job.facts = with_unfinished(journal_text(run_id := new_run_id(C)))
    result = job.run(**options)
    assert result.outcome == "ok" and job.report.run_id == run_id and job.execute.calls[0]["resume"] is True
    assert job.plans[-1].alt_names == ("puppet", "puppet.pe-remote.test")  # the journal's


def test_a_resume_with_the_names_it_dropped_dropped_again_goes_on(job):
    job.facts = with_unfinished(journal_text(run_id := new_run_id(C), alt_names=("puppet",)))
    result = job.run(drop_alt_names=("puppet.pe-remote.test",))
    assert result.outcome == "ok" and job.report.run_id == run_id and job.plans[-1].alt_names == ("puppet",)


def test_a_resume_of_a_reload_path_run_refuses_restart(job):
    run_id = new_run_id(C)
    reloads = dataclasses.replace(RECORDED, reloadable=("puppetserver",))
    job.facts = with_unfinished(journal_text(run_id, facts=reloads, job={"restart": False}))
    message = _refused_resume(job, restart=True)
    assert message.startswith(f"the unfinished run {run_id} uses the reload path, not the stop/start procedure")
    assert "run regen again without --restart)" in message


def test_a_resume_of_a_run_started_with_restart_accepts_it_again(job):
    reloads = dataclasses.replace(RECORDED, reloadable=("puppetserver",))
    job.facts = with_unfinished(journal_text(run_id := new_run_id(C), facts=reloads, job={"restart": True}))
    assert job.run(restart=True).outcome == "ok" and job.report.run_id == run_id
    assert job.plans[-1].path == "restart"


def test_names_and_restart_both_differing_are_said_in_one_line(job):
    reloads = dataclasses.replace(RECORDED, reloadable=("puppetserver",))
    job.facts = with_unfinished(journal_text(new_run_id(C), facts=reloads))
    message = _refused_resume(job, restart=True, alt_names=("puppet", "puppet.pe-remote.test", "x.pe-remote.test"))
    assert "; the reload path" in message and "without --dns-alt-names and --restart)" in message


def test_other_names_do_not_stop_a_rollback_or_an_abandon(job):
    run_id = new_run_id(C)
    job.facts = with_unfinished(journal_text(run_id))
    result = job.run(abandon=True, run_id=run_id, alt_names=("x.pe-remote.test",), restart=True)
    assert result.outcome == "abandoned"


# --- re-checking the steps a journal marks done -----------------------------------------------------

def _plan_and_journal(*done):
    plan = build_plan(RECORDED, ("puppet",))
    journal = Journal(RUN_ID, RECORDED, ("puppet",), BACKUP, "", done=list(done))
    return plan, journal


def test_unknown_steps_in_a_journal_are_refused():
    plan, journal = _plan_and_journal("stop:puppet", "format-the-disk", "alien:x")
    remote = FakeRemote()
    with pytest.raises(Refused) as info:
        runs.recheck_done_steps(remote, plan, journal)
    assert "alien:x, format-the-disk" in str(info.value) and f"--abandon {RUN_ID}" in str(info.value)
    assert remote.commands_run == 0


def test_a_done_step_whose_check_fails_now_is_refused():
    plan, journal = _plan_and_journal("clean", "stop:puppet", "stop:puppetserver")
    title = next(s.title for s in plan.steps if s.key == "clean")
    remote = FakeRemote(lambda command, index, kwargs: Result("clean\nstop:puppetserver\n", ok=False))
    with pytest.raises(Refused) as info:
        runs.recheck_done_steps(remote, plan, journal)
    assert f"'{title}' was done" in str(info.value) and "Stop puppet" not in str(info.value)
    assert remote.commands_run == 1 and remote.calls[0][1]["check"] is False


def test_a_done_service_step_whose_effect_is_gone_is_run_again_not_refused():
    plan, journal = _plan_and_journal("clean", "stop:puppet", "stop:puppetserver")
    remote = FakeRemote(lambda command, index, kwargs: Result("stop:puppetserver\n", ok=False))
    assert runs.recheck_done_steps(remote, plan, journal) == ("stop:puppetserver",)


def test_a_step_superseded_by_one_cut_off_while_running_is_not_checked():
    # Killed during generate: its end was never journalled, but it may have run (new key, new cert):
    # what delete-leftovers deleted is there again, and that is no sign of a changed master.
    plan, journal = _plan_and_journal("clean", "delete-leftovers")
    journal.begun = ["clean", "delete-leftovers", "generate"]
    remote = FakeRemote(lambda command, index, kwargs: Result("delete-leftovers\n", ok=False))
    assert runs.recheck_done_steps(remote, plan, journal) == ()
    assert "delete-leftovers" not in "".join(call[0] for call in remote.calls)
    journal.begun = ["clean", "delete-leftovers"]  # generate never began: checked, and refused
    with pytest.raises(Refused):
        runs.recheck_done_steps(remote, plan, journal)


def test_done_steps_whose_checks_pass_are_trusted_in_one_command():
    plan, journal = _plan_and_journal("stop:puppet", "stop:puppetserver")
    remote = FakeRemote()
    runs.recheck_done_steps(remote, plan, journal)
    assert remote.commands_run == 1


def test_nothing_done_is_nothing_to_recheck():
    plan, journal = _plan_and_journal()
    remote = FakeRemote()
    runs.recheck_done_steps(remote, plan, journal)
    assert remote.commands_run == 0
