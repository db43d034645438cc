"""The real `pe-remote` program run in this process (so coverage sees pe_remote/tasks.py, cli.py and
program.py), with the SSH connection and the library's entry points replaced by fakes.

What is checked: every flag reaches the library as the option it stands for; bad input is a one-line
error with exit 2 before any connection; a library error becomes its own exit code; several hosts give
a table and per-host reports; --report and the run's log are written whatever the outcome.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_fakes import FakeConnect, make_cert, make_facts, run_program
from pe_remote import errors
from pe_remote.console import Console
from pe_remote.expiry import Dated
from pe_remote.regen import RegenOptions
from pe_remote.restore import LocalBackup
from pe_remote.tasks import ns
from pe_remote.verify import Verification

RUN_ID = "20261128T001500Z-master.example.com"

INVENTORY = """\
default = "a"

[hosts.a]
address = "a.example.com"
backup_dir = "{tmp}/backups-a"
dns_alt_names = ["puppet", "puppet.example.com"]

[hosts.b]
address = "b.example.com"
port = 2200

[hosts.c]
address = "c.example.com"
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real ~/.pe-remote.yaml, ~/.ssh, log folder or inventory of the machine running the tests."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("PE_REMOTE_INVENTORY", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def inventory(tmp_path) -> str:
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY.format(tmp=tmp_path))
    return str(path)


@pytest.fixture
def connect(monkeypatch) -> FakeConnect:
    fake = FakeConnect()
    monkeypatch.setattr("pe_remote.connection.connect", fake)
    return fake


class Library:
    """The library's entry points as the tasks call them: every call recorded; `fail` maps a host's
    address to the exception that host's call raises."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {"regen": [], "backup": [], "restore": [], "verify": [], "discover": []}
        self.fail: dict[str, BaseException] = {}
        self.problems: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def _record(self, kind: str, remote, **details) -> None:
        with self.lock:
            self.calls[kind].append(SimpleNamespace(remote=remote, **details))
        if remote.target.address in self.fail:
            raise self.fail[remote.target.address]

    def regen(self, remote, options, console, record):
        self._record("regen", remote, options=options, console=console, record=record)
        console.notice(f"regenerated {remote.target.label}")
        record.outcome, record.certname = ("dry-run" if options.dry_run else "ok"), "master.example.com"
        return SimpleNamespace(outcome=record.outcome, old_serial="1A", new_serial="1B")

    def backup_only(self, remote, backup_dir, console, flavor=None):
        self._record("backup", remote, backup_dir=backup_dir, console=console, flavor=flavor)
        return SimpleNamespace(local_path=Path(backup_dir) / "x-ssl.tar.gz", sha256="0123456789abcdef" * 4)

    def restore_backup(self, remote, backup, console, *, flavor=None, server_timeout=None):
        self._record("restore", remote, tarball=backup.path, console=console, sha256=backup.sha256, flavor=flavor,
                     server_timeout=server_timeout)

    def discover(self, remote, flavor_override=None):
        self._record("discover", remote, flavor=flavor_override)
        return make_facts(flavor_override or "puppet6")

    def verify_master(self, remote, facts, alt_names=None, *, warn_days=90):
        self._record("verify", remote, facts=facts, alt_names=alt_names, warn_days=warn_days)
        ends = datetime.now(timezone.utc) + timedelta(days=400)
        result = Verification(make_cert(), "AB:CD:EF", True, ())
        return result, list(self.problems.get(remote.target.address, [])), [Dated("master cert", facts.hostcert, ends)]

    def called(self) -> int:
        return sum(len(calls) for calls in self.calls.values())


@pytest.fixture
def library(monkeypatch) -> Library:
    fake = Library()
    monkeypatch.setattr("pe_remote.tasks.run_regen", fake.regen)
    monkeypatch.setattr("pe_remote.tasks.backup_only", fake.backup_only)
    monkeypatch.setattr("pe_remote.tasks.restore_backup", fake.restore_backup)
    # restore's local checks (a tarball on this machine) pass: the tests below name no real file
    monkeypatch.setattr("pe_remote.restore.check_local_backup",
                        lambda tarball, sha256: LocalBackup(tarball, sha256 or "0" * 64))
    monkeypatch.setattr("pe_remote.tasks.discover_master", fake.discover)
    monkeypatch.setattr("pe_remote.tasks.verify_master", fake.verify_master)
    return fake


def one_line_error(ran) -> str:
    assert ran.err.startswith("pe-remote: "), ran
    assert ran.err.count("\n") == 1, ran.err
    return ran.err


# --- the program: --list, --help, version --------------------------------------------------------

def test_list_names_every_task_with_its_summary(capsys):
    ran = run_program(capsys, "--list")
    assert ran.code == 0, ran
    for task, words in [("discover", "read-only"), ("backup", "Back up"), ("regen", "Regenerate"),
                        ("restore", "backup back"), ("verify", "Check")]:
        line = next((l for l in ran.out.splitlines() if l.strip().startswith(task + " ")), "")
        assert words in line, f"{task}: {line!r}\n{ran.out}"


# invoke's Task pops each flag's help text off `task.help` as it builds the parser, so only a process's
# first run shows them; this suite runs the program many times in one process: keep them from import time.
HELP_TEXTS = {name: dict(task.help) for name, task in ns.tasks.items()}


def test_help_regen_documents_every_flag(capsys, monkeypatch):
    monkeypatch.setattr("invoke.program.pty_size", lambda: (100, 40))  # no terminal under pytest
    for name, task in ns.tasks.items():
        monkeypatch.setattr(task, "help", dict(HELP_TEXTS[name]))
    ran = run_program(capsys, "--help", "regen")
    assert ran.code == 0, ran
    assert "Regenerate the master's SSL cert" in ran.out
    flags = ("--host", "--inventory", "--key-file", "--known-hosts", "--accept-new-host-key", "--dns-alt-names",
             "--drop-alt-names", "--yes", "--dry-run", "--backup-dir", "--flavor", "--verbose", "--force",
             "--rollback", "--resume", "--abandon", "--server-timeout", "--report", "--log-file", "--wave")
    for flag in flags:
        line = next((l for l in ran.out.splitlines() if l.strip().startswith(flag)), "")
        assert len(line.split()) > 1, f"{flag} undocumented:\n{ran.out}"


def test_an_unknown_flag_is_a_parse_error_and_nothing_runs(capsys, connect, library):
    ran = run_program(capsys, "regen", "--host", "a", "--no-such-flag")
    assert ran.code != 0 and "--no-such-flag" in ran.err
    assert connect.targets == [] and library.called() == 0


def test_version_without_an_installed_package_is_unknown(monkeypatch):
    from importlib.metadata import PackageNotFoundError

    from pe_remote import program as module

    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(module, "version", missing)
    assert module._version() == "unknown"


def test_main_runs_the_program(monkeypatch):
    from pe_remote import program as module

    seen = []
    monkeypatch.setattr(module.program, "run", lambda *args, **kwargs: seen.append((args, kwargs)))
    module.main()
    assert seen == [((), {})]


# --- discover ------------------------------------------------------------------------------------

def test_discover_one_host_prints_its_facts(capsys, inventory, connect, library):
    ran = run_program(capsys, "discover", "--host", "a", "--inventory", inventory)
    assert ran.code == 0, ran
    assert connect.labels == ["a"] and connect.accept_new == [False]
    assert library.calls["discover"][0].flavor is None
    assert "a (hostname master)" in ran.out and "master.example.com" in ran.out and "1A" in ran.out
    assert all(remote.closed for remote in connect.remotes)


def test_discover_flavor_and_accept_new_host_key_reach_the_library(capsys, inventory, connect, library):
    ran = run_program(capsys, "discover", "--host", "b", "--inventory", inventory, "--flavor", "pe2019",
                      "--accept-new-host-key")
    assert ran.code == 0, ran
    assert library.calls["discover"][0].flavor == "pe2019"
    assert connect.accept_new == [True]
    assert connect.targets[0].port == 2200


def test_discover_several_hosts_prints_a_table_and_every_host(capsys, inventory, connect, library):
    ran = run_program(capsys, "discover", "--host", "a,b", "--inventory", inventory, "--parallel", "2")
    assert ran.code == 0, ran
    assert sorted(connect.labels) == ["a", "b"]
    assert "discover" in ran.out and "puppet6 master.example.com serial 1A" in ran.out
    assert "2 hosts: 2 ok, 0 failed" in ran.out
    assert "a (hostname master)" in ran.out and "b (hostname master)" in ran.out


def test_discover_one_failing_host_of_several_exits_with_its_code(capsys, inventory, connect, library):
    library.fail["b.example.com"] = errors.DiscoveryError("no puppet on it")
    ran = run_program(capsys, "discover", "--host", "a,b", "--inventory", inventory)
    assert ran.code == 6, ran
    assert "FAILED(6)" in ran.out and "no puppet on it" in ran.out
    err = one_line_error(ran)
    assert "1 of 2 hosts did not succeed; most severe: b (exit 6): no puppet on it" in err
    assert all(remote.closed for remote in connect.remotes)


def test_discover_unreachable_host_is_exit_3(capsys, inventory, connect, library):
    connect.refuse["a.example.com"] = errors.ConnectionFailed("cannot connect to a: refused")
    ran = run_program(capsys, "discover", "--host", "a", "--inventory", inventory)
    assert ran.code == 3
    assert one_line_error(ran) == "pe-remote: cannot connect to a: refused\n"
    assert library.called() == 0


def test_discover_bad_flavor_is_refused_before_connecting(capsys, inventory, connect, library):
    ran = run_program(capsys, "discover", "--host", "a", "--inventory", inventory, "--flavor", "pe9")
    assert ran.code == 2
    assert "--flavor 'pe9'" in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0


# --- fab -H: the target comes from fabric's Connection ---------------------------------------------

def test_dash_h_and_dash_i_become_the_target(capsys, tmp_path, connect, library):
    key = tmp_path / "id_test"
    ran = run_program(capsys, "-H", "root@127.0.0.1:2222", "-i", str(key), "discover",
                      "--inventory", str(tmp_path / "none.toml"))
    assert ran.code == 0, ran
    [target] = connect.targets
    assert (target.address, target.port, target.user, target.key_files) == ("127.0.0.1", 2222, "root", (str(key),))


def test_dash_h_with_several_hosts_runs_the_task_once_per_host(capsys, inventory, connect, library):
    ran = run_program(capsys, "-H", "a,b", "discover", "--inventory", inventory)
    assert ran.code == 0, ran
    assert connect.labels == ["a", "b"]


def test_dash_h_alias_typo_is_an_input_error(capsys, inventory, connect, library):
    ran = run_program(capsys, "-H", "stagign", "regen", "--inventory", inventory)
    assert ran.code == 2
    assert "unknown host alias 'stagign'" in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0


def test_a_non_root_user_is_refused_by_the_real_connect(capsys, tmp_path, library):
    ran = run_program(capsys, "-H", "admin@127.0.0.1:1", "discover", "--inventory", str(tmp_path / "none.toml"))
    assert ran.code == 2
    assert "not as 'admin'" in one_line_error(ran)
    assert library.called() == 0


# --- backup --------------------------------------------------------------------------------------

def test_backup_goes_to_the_inventorys_folder_by_default(capsys, inventory, tmp_path, connect, library):
    ran = run_program(capsys, "backup", "--host", "a", "--inventory", inventory)
    assert ran.code == 0, ran
    [call] = library.calls["backup"]
    assert call.backup_dir == f"{tmp_path}/backups-a" and call.flavor is None
    assert isinstance(call.console, Console)


def test_backup_dir_and_flavor_flags_win(capsys, inventory, connect, library):
    ran = run_program(capsys, "backup", "--host", "a", "--inventory", inventory, "--backup-dir", "/elsewhere",
                      "--flavor", "pe37")
    assert ran.code == 0, ran
    [call] = library.calls["backup"]
    assert (call.backup_dir, call.flavor) == ("/elsewhere", "pe37")


def test_backup_of_several_hosts_names_each_tarball(capsys, inventory, connect, library):
    ran = run_program(capsys, "backup", "--host", "b,c", "--inventory", inventory)
    assert ran.code == 0, ran
    assert {call.backup_dir for call in library.calls["backup"]} == {"backups"}
    assert ran.out.count("x-ssl.tar.gz sha256 0123456789abcdef...") == 2


def test_backup_error_is_exit_6(capsys, inventory, connect, library):
    library.fail["a.example.com"] = errors.BackupError("disk full")
    ran = run_program(capsys, "backup", "--host", "a", "--inventory", inventory)
    assert ran.code == 6
    assert one_line_error(ran) == "pe-remote: disk full\n"


# --- regen: each flag reaches RegenOptions -------------------------------------------------------

def regen_call(library) -> SimpleNamespace:
    [call] = library.calls["regen"]
    return call


def test_regen_defaults_come_from_the_inventory(capsys, inventory, tmp_path, connect, library):
    ran = run_program(capsys, "regen", "--inventory", inventory)  # the inventory's default host: a
    assert ran.code == 0, ran
    call = regen_call(library)
    assert call.options == RegenOptions(alt_names=("puppet", "puppet.example.com"), alt_names_from_inventory=True,
                                        backup_dir=f"{tmp_path}/backups-a", server_timeout=300)
    assert call.console.assume_yes is False and call.console.verbose is False
    assert call.remote.on_command is None
    assert call.record.host == "a"
    assert connect.remotes[0].closed


def test_regen_flags_reach_the_library(capsys, inventory, connect, library):
    ran = run_program(capsys, "regen", "--host", "b", "--inventory", inventory,
                      "--dns-alt-names", "puppet, DNS:puppet.example.com,10.0.0.1",
                      "--drop-alt-names", "old.example.com", "--dry-run", "--backup-dir", "/bk", "--flavor", "pe2019",
                      "--force", "--server-timeout", "600", "--yes", "--verbose")
    assert ran.code == 0, ran
    call = regen_call(library)
    assert call.options == RegenOptions(alt_names=("puppet", "puppet.example.com", "10.0.0.1"),
                                        drop_alt_names=("old.example.com",), dry_run=True, backup_dir="/bk",
                                        flavor="pe2019", force=True, server_timeout=600)
    assert call.console.assume_yes is True and call.console.verbose is True
    assert call.remote.on_command == call.console.command  # --verbose shows every remote command
    assert "regenerated b" in ran.out


def test_dns_alt_names_given_are_not_the_inventorys_and_restart_reaches_the_library(capsys, inventory, connect,
                                                                                    library):
    # Host a has dns_alt_names in the inventory: given on the command line, a resume compares them.
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--dns-alt-names", "puppet",
                      "--restart", "--yes")
    assert ran.code == 0, ran
    options = regen_call(library).options
    assert options.alt_names == ("puppet",) and options.alt_names_from_inventory is False
    assert options.restart is True


def test_an_empty_dns_alt_names_means_none(capsys, inventory, connect, library):
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--dns-alt-names", "", "--yes")
    assert ran.code == 0, ran
    assert regen_call(library).options.alt_names == ()


@pytest.mark.parametrize("flags, rollback, abandon, run_id", [
    (["--rollback"], True, False, None),
    (["--rollback", RUN_ID], True, False, RUN_ID),
    (["--resume", RUN_ID], False, False, RUN_ID),
    (["--abandon", RUN_ID], False, True, RUN_ID),
])
def test_unfinished_run_flags(capsys, inventory, connect, library, flags, rollback, abandon, run_id):
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes", *flags)
    assert ran.code == 0, ran
    options = regen_call(library).options
    assert (options.rollback, options.abandon, options.run_id) == (rollback, abandon, run_id)


@pytest.mark.parametrize("flags, words", [
    (["--rollback", RUN_ID, "--resume", RUN_ID], "give one of --rollback, --resume and --abandon"),
    (["--resume", "yesterday"], "--resume 'yesterday' is not a run id"),
    (["--rollback", "20261128T001500Z-BAD HOST"], "is not a run id"),
    (["--abandon", ""], "--abandon needs the run id"),
    (["--server-timeout", "5"], "--server-timeout 5"),
    (["--server-timeout", "3601"], "from 10 to 3600"),
    (["--flavor", "pe9"], "--flavor 'pe9'"),
    (["--drop-alt-names", "bad name!"], "--drop-alt-names"),
    (["--dns-alt-names", "puppet,$(reboot)"], "--dns-alt-names"),
    (["--wave", "0"], "--wave 0"),
    (["--wave", "two", "--host", "a,b"], "--wave two: give a whole number of hosts"),
    (["--server-timeout", "5m"], "--server-timeout 5m: give whole seconds from 10 to 3600"),
    (["--resume", ""], "--resume needs the run id of the run to resume"),
    (["--rollback="], "--rollback needs the run id"),
    (["--report", "{tmp}/no/such/folder/r.json"], "--report"),
    (["--report", "{tmp}"], "cannot write there"),
    (["--host", " , "], "names no master"),
    (["--host", "nosuchalias"], "unknown host alias 'nosuchalias'"),
])
def test_bad_input_is_exit_2_before_any_connection(capsys, inventory, tmp_path, connect, library, flags, words):
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    ran = run_program(capsys, "regen", "--inventory", inventory, "--yes", *flags)
    assert ran.code == 2, ran
    assert words in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0


@pytest.mark.parametrize("error, code", [
    (errors.Aborted("aborted by the operator; nothing was changed on the master"), 5),
    (errors.Refused("the master is not the CA"), 4),
    (errors.RemoteCommandFailed("true", 1, "boom\n"), 6),
    (errors.DiscoveryError("no puppet"), 6),
    (errors.JournalDamaged("journal damaged"), 6),
    (errors.RolledBack("failed and rolled back"), 7),
    (errors.Incomplete("connection lost part-way"), 8),
    (errors.ConnectionFailed("lost the SSH connection"), 3),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value))
def test_a_library_error_becomes_its_exit_code(capsys, inventory, connect, library, error, code):
    library.fail["a.example.com"] = error
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes")
    assert ran.code == code
    assert one_line_error(ran) == f"pe-remote: {error}\n"
    assert connect.remotes[0].closed  # the connection is closed whatever the outcome


def test_ctrl_c_exits_130(capsys, inventory, connect, library):
    library.fail["a.example.com"] = KeyboardInterrupt()
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes")
    assert ran.code == 130
    assert ran.err == "pe-remote: interrupted\n"
    assert connect.remotes[0].closed


def test_a_bug_in_the_library_is_not_hidden_as_an_exit_code(inventory, connect, library):
    from pe_remote.program import program

    library.fail["a.example.com"] = ZeroDivisionError("a real bug")
    with pytest.raises(ZeroDivisionError):
        program.run(["pe-remote", "regen", "--host", "a", "--inventory", inventory, "--yes"], exit=True)


# --- regen: --report and the run's log -------------------------------------------------------------

def test_report_of_a_run_that_worked(capsys, inventory, tmp_path, connect, library):
    report = tmp_path / "r.json"
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes", "--report", str(report))
    assert ran.code == 0, ran
    data = json.loads(report.read_text())
    assert (data["host"], data["outcome"], data["exit_code"], data["error"]) == ("a", "ok", 0, None)
    assert data["certname"] == "master.example.com"
    assert not list(tmp_path.glob(".r.json.partial"))


def test_report_of_a_run_that_failed_names_the_error_and_code(capsys, inventory, tmp_path, connect, library):
    library.fail["a.example.com"] = errors.RolledBack("step 'generate' failed: rolled back")
    report = tmp_path / "r.json"
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes", "--report", str(report))
    assert ran.code == 7
    data = json.loads(report.read_text())
    assert (data["exit_code"], data["error"]) == (7, "step 'generate' failed: rolled back")


def test_report_is_written_when_the_connection_is_refused(capsys, inventory, tmp_path, connect, library):
    connect.refuse["a.example.com"] = errors.HostKeyRejected("host key of a is unknown")
    report = tmp_path / "r.json"
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes", "--report", str(report))
    assert ran.code == 3
    data = json.loads(report.read_text())
    assert (data["host"], data["exit_code"], data["error"]) == ("a", 3, "host key of a is unknown")
    assert data["ended"] and data["outcome"] == "failed"
    assert library.called() == 0


def test_no_report_is_written_for_bad_input(capsys, inventory, tmp_path, connect, library):
    report = tmp_path / "r.json"
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--report", str(report),
                      "--flavor", "nope")
    assert ran.code == 2 and not report.exists()


def test_log_file_flag(capsys, inventory, tmp_path, connect, library):
    log = tmp_path / "logs" / "run.log"
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes", "--log-file", str(log))
    assert ran.code == 0, ran
    assert regen_call(library).console.log_path == log
    text = log.read_text()
    assert "regenerated a" in text and f"Log: {log}" in text


def test_default_log_is_under_xdg_state_home_named_after_the_host(capsys, tmp_path, connect, library):
    ran = run_program(capsys, "regen", "--host", "root@m.example.com:2222", "--yes",
                      "--inventory", str(tmp_path / "none.toml"))
    assert ran.code == 0, ran
    path = regen_call(library).console.log_path
    assert path.parent == tmp_path / "state" / "pe-remote" / "logs"
    assert path.name.endswith("-m.example.com_2222-regen.log")
    assert "regenerated m.example.com:2222" in path.read_text()


def test_an_unwritable_log_file_is_exit_2(capsys, inventory, tmp_path, connect, library):
    blocker = tmp_path / "file"
    blocker.write_text("")
    ran = run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--yes",
                      "--log-file", str(blocker / "run.log"))
    assert ran.code == 2
    assert "cannot write the log file" in one_line_error(ran)
    assert library.called() == 0


# --- regen on several hosts ----------------------------------------------------------------------

def test_regen_several_hosts_one_report_and_one_log_each(capsys, inventory, tmp_path, connect, library):
    report = tmp_path / "out" / "r.json"
    report.parent.mkdir()
    ran = run_program(capsys, "regen", "--host", "a,b", "--inventory", inventory, "--yes",
                      "--report", str(report), "--log-file", str(tmp_path / "logs" / "run"))
    assert ran.code == 0, ran
    assert connect.labels == ["a", "b"]  # one at a time, in the order given
    assert sorted(p.name for p in report.parent.iterdir()) == ["r-a.json", "r-b.json"]
    assert json.loads((report.parent / "r-b.json").read_text())["host"] == "b"
    # --log-file too is one file per host (it was ignored with several hosts: the default logs were used).
    logs = [call.console.log_path for call in library.calls["regen"]]
    assert logs == [tmp_path / "logs" / "run-a.log", tmp_path / "logs" / "run-b.log"]
    assert "regenerated b" in logs[1].read_text() and "regenerated a" not in logs[1].read_text()
    assert "ok: serial 1A -> 1B" in ran.out and "2 hosts: 2 ok, 0 failed" in ran.out


def test_regen_stops_at_the_first_failing_host(capsys, inventory, tmp_path, connect, library):
    library.fail["b.example.com"] = errors.RolledBack("rolled back on b")
    report = tmp_path / "r.json"
    ran = run_program(capsys, "regen", "--host", "a,b,c", "--inventory", inventory, "--yes", "--report", str(report))
    assert ran.code == 7
    assert connect.labels == ["a", "b"]  # c never started
    assert "skipped" in ran.out and "not started: b failed" in ran.out
    assert "1 of 3 hosts did not succeed" not in ran.err  # c was skipped, not failed
    assert "2 of 3 hosts did not succeed; most severe: b (exit 7): rolled back on b" in one_line_error(ran)
    assert (tmp_path / "r-a.json").exists() and (tmp_path / "r-b.json").exists()
    assert not (tmp_path / "r-c.json").exists() and not report.exists()
    assert json.loads((tmp_path / "r-b.json").read_text())["exit_code"] == 7


def test_regen_in_waves_of_two(capsys, inventory, connect, library):
    library.fail["a.example.com"] = errors.Refused("not the CA")
    ran = run_program(capsys, "regen", "--host", "a,b,c", "--inventory", inventory, "--yes", "--wave", "2")
    assert ran.code == 4
    assert sorted(connect.labels) == ["a", "b"]  # a's wave ran to its end; c was not started


def test_several_hosts_exit_with_the_most_severe_code_not_the_first(capsys, inventory, connect, library):
    library.fail["a.example.com"] = errors.Refused("not the CA")  # 4: nothing changed
    library.fail["b.example.com"] = errors.Incomplete("connection lost part-way")  # 8: needs a hand now
    ran = run_program(capsys, "regen", "--host", "a,b", "--inventory", inventory, "--yes", "--wave", "2")
    assert ran.code == 8, ran
    assert "2 of 2 hosts did not succeed; most severe: b (exit 8): connection lost part-way" in one_line_error(ran)


def test_several_read_only_hosts_exit_with_the_most_severe_code(capsys, inventory, connect, library):
    connect.refuse["a.example.com"] = errors.ConnectionFailed("cannot connect to a: refused")  # 3
    library.fail["b.example.com"] = errors.DiscoveryError("no puppet on it")  # 6
    library.fail["c.example.com"] = errors.Refused("not the CA")  # 4
    ran = run_program(capsys, "discover", "--host", "a,b,c", "--inventory", inventory)
    assert ran.code == 6, ran
    assert "most severe: b (exit 6)" in one_line_error(ran)


def test_regen_of_several_masters_at_once_needs_yes(capsys, inventory, connect, library):
    ran = run_program(capsys, "regen", "--host", "a,b", "--inventory", inventory, "--wave", "2")
    assert ran.code == 2, ran
    assert "--wave 2 regenerates 2 masters at once: add --yes" in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0
    # A dry run asks nothing; one host (or fab -H a,b: one call per host) runs one at a time anyway.
    assert run_program(capsys, "regen", "--host", "a,b", "--inventory", inventory, "--wave", "2",
                       "--dry-run").code == 0
    assert run_program(capsys, "regen", "--host", "a", "--inventory", inventory, "--wave", "2").code == 0


@pytest.mark.parametrize("task, flags, words", [
    ("discover", ["--parallel", "x"], "--parallel x: give a whole number of hosts, 1 or more"),
    ("backup", ["--parallel", "1.5"], "--parallel 1.5: give a whole number of hosts"),
    ("verify", ["--warn-days", "soon"], "--warn-days soon: give a whole number of days, 0 or more"),
    ("refresh-crl", ["--days", "1y"], "--days 1y: give whole days from 1 to"),
    ("extend-ca", ["--years", "ten"], "--years ten: give whole years from 1 to"),
    ("extend-ca", ["--years", ""], "--years '': give whole years from 1 to"),
])
def test_a_value_invoke_cannot_convert_is_a_one_line_input_error(capsys, inventory, connect, library, task, flags,
                                                                 words):
    ran = run_program(capsys, task, "--host", "a", "--inventory", inventory, *flags)
    assert ran.code == 2, ran
    assert words in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0


@pytest.mark.parametrize("task", ["regen", "verify"])
def test_fab_with_several_hosts_writes_one_report_per_host(capsys, inventory, tmp_path, connect, library, task):
    report = tmp_path / "r.json"
    ran = run_program(capsys, "-H", "a,b", task, "--inventory", inventory, *(["--yes"] if task == "regen" else []),
                      "--report", str(report))
    assert ran.code == 0, ran
    assert connect.labels == ["a", "b"]  # fab calls the task once per host
    assert sorted(p.name for p in tmp_path.glob("r*.json")) == ["r-a.json", "r-b.json"]
    assert json.loads((tmp_path / "r-b.json").read_text())["host"] == "b"
    # One host keeps FILE exactly.
    ran = run_program(capsys, "-H", "a", task, "--inventory", inventory, *(["--yes"] if task == "regen" else []),
                      "--report", str(report))
    assert ran.code == 0, ran
    assert json.loads(report.read_text())["host"] == "a"


def test_fab_with_several_hosts_names_the_report_of_a_host_refused_before_connecting(capsys, inventory, tmp_path,
                                                                                    connect, library):
    connect.refuse["b.example.com"] = errors.HostKeyRejected("host key of b is unknown")
    ran = run_program(capsys, "-H", "a,b", "regen", "--inventory", inventory, "--yes",
                      "--report", str(tmp_path / "r.json"))
    assert ran.code == 3, ran
    assert json.loads((tmp_path / "r-b.json").read_text())["exit_code"] == 3
    assert json.loads((tmp_path / "r-a.json").read_text())["exit_code"] == 0
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("task", ["regen", "verify"])
def test_a_report_under_the_home_folder_goes_there(capsys, inventory, tmp_path, connect, library, task):
    ran = run_program(capsys, task, "--host", "a", "--inventory", inventory, *(["--yes"] if task == "regen" else []),
                      "--report=~/r.json")
    assert ran.code == 0, ran
    assert json.loads((tmp_path / "home" / "r.json").read_text())["host"] == "a"
    assert not (tmp_path / "~").exists()


# --- restore -------------------------------------------------------------------------------------

def test_restore_passes_the_tarball_checksum_and_flags(capsys, inventory, tmp_path, connect, library):
    ran = run_program(capsys, "restore", "~/backups/x-ssl.tar.gz", "--host", "a", "--inventory", inventory,
                      "--sha256", "ab" * 32, "--yes", "--flavor", "pe2019")
    assert ran.code == 0, ran
    [call] = library.calls["restore"]
    assert call.tarball == tmp_path / "home" / "backups" / "x-ssl.tar.gz"
    assert (call.sha256, call.flavor, call.console.assume_yes) == ("ab" * 32, "pe2019", True)
    assert connect.remotes[0].closed


def test_restore_without_yes_asks(capsys, inventory, connect, library):
    ran = run_program(capsys, "restore", "x.tar.gz", "--host", "a", "--inventory", inventory)
    assert ran.code == 0, ran
    [call] = library.calls["restore"]
    # No --sha256: the library gets the one the local check found (the fixture's stand-in for the sidecar's).
    assert call.console.assume_yes is False and call.sha256 == "0" * 64 and call.flavor is None
    assert call.server_timeout == 300


@pytest.mark.parametrize("given, code", [("900", 0), ("5m", 2), ("9", 2)])
def test_restore_server_timeout(capsys, inventory, connect, library, given, code):
    ran = run_program(capsys, "restore", "x.tar.gz", "--host", "a", "--inventory", inventory, "--server-timeout",
                      given)
    assert ran.code == code, ran
    if code:
        assert "--server-timeout" in ran.err and library.called() == 0 and connect.targets == []
    else:
        assert library.calls["restore"][0].server_timeout == 900


def test_restore_needs_a_tarball(capsys, inventory, connect, library):
    ran = run_program(capsys, "restore", "--host", "a", "--inventory", inventory)
    assert ran.code != 0 and "tarball" in ran.err
    assert library.called() == 0 and connect.targets == []


def test_restore_error_keeps_its_code(capsys, inventory, connect, library):
    library.fail["a.example.com"] = errors.BackupError("checksum mismatch")
    ran = run_program(capsys, "restore", "x.tar.gz", "--host", "a", "--inventory", inventory, "--yes")
    assert ran.code == 6 and one_line_error(ran) == "pe-remote: checksum mismatch\n"


def test_restore_bad_flavor(capsys, inventory, connect, library):
    ran = run_program(capsys, "restore", "x.tar.gz", "--host", "a", "--inventory", inventory, "--flavor", "x")
    assert ran.code == 2 and connect.targets == []


@pytest.mark.parametrize("sidecar, given, says", [
    (None, None, "does not exist or is not a file"),  # no tarball at all (made below only when sidecar is set)
    ("", None, "b.tar.gz.sha256 is empty"),
    ("not-a-checksum  b.tar.gz\n", None, "b.tar.gz.sha256 is garbled"),
    ("0" * 64 + "  b.tar.gz\n", None, "does not match its sha256"),
    ("", "0" * 64, "does not match its sha256"),
], ids=["no-tarball", "empty-sidecar", "garbled-sidecar", "wrong-sidecar", "wrong-given"])
def test_restore_checks_the_local_tarball_before_connecting(capsys, inventory, tmp_path, connect, monkeypatch,
                                                            sidecar, given, says):
    """The real local checks (not the `library` stub): exit 2, one line, no connection, no traceback."""
    called = []
    monkeypatch.setattr("pe_remote.tasks.restore_backup", lambda *args, **kwargs: called.append(args))
    if sidecar is not None:
        (tmp_path / "b.tar.gz").write_bytes(b"backup bytes")
        (tmp_path / "b.tar.gz.sha256").write_text(sidecar)
    ran = run_program(capsys, "restore", str(tmp_path / "b.tar.gz"), "--host", "a", "--inventory", inventory,
                      "--yes", *(("--sha256", given) if given else ()))
    assert ran.code == 2 and says in one_line_error(ran), ran
    assert connect.targets == [] and called == []


def test_restore_with_a_good_local_tarball_connects(capsys, inventory, tmp_path, connect, monkeypatch):
    import hashlib

    called = []
    monkeypatch.setattr("pe_remote.tasks.restore_backup", lambda *args, **kwargs: called.append(kwargs))
    (tmp_path / "b.tar.gz").write_bytes(b"backup bytes")
    (tmp_path / "b.tar.gz.sha256").write_text(hashlib.sha256(b"backup bytes").hexdigest() + "  b.tar.gz\n")
    ran = run_program(capsys, "restore", str(tmp_path / "b.tar.gz"), "--host", "a", "--inventory", inventory, "--yes")
    assert ran.code == 0, ran
    assert connect.labels == ["a"] and len(called) == 1


# --- verify --------------------------------------------------------------------------------------

def test_verify_ok(capsys, inventory, connect, library):
    ran = run_program(capsys, "verify", "--host", "a", "--inventory", inventory)
    assert ran.code == 0, ran
    [call] = library.calls["verify"]
    assert call.alt_names == ("puppet", "puppet.example.com")  # the inventory's
    assert call.warn_days == 90
    assert "a: master.example.com serial 1A" in ran.out
    assert "a: end dates (warn under 90 days)" in ran.out
    assert "a: OK" in ran.out


def test_verify_flags_reach_the_library(capsys, inventory, connect, library):
    ran = run_program(capsys, "verify", "--host", "b", "--inventory", inventory, "--dns-alt-names", "x.example.com",
                      "--warn-days", "30", "--flavor", "pe2016")
    assert ran.code == 0, ran
    [call] = library.calls["verify"]
    assert (call.alt_names, call.warn_days) == (("x.example.com",), 30)
    assert library.calls["discover"][0].flavor == "pe2016"
    assert "warn under 30 days" in ran.out


def test_verify_alt_names_default_to_none_without_an_inventory_entry(capsys, tmp_path, connect, library):
    ran = run_program(capsys, "verify", "--host", "root@m.example.com", "--inventory", str(tmp_path / "none.toml"))
    assert ran.code == 0, ran
    assert library.calls["verify"][0].alt_names is None


def test_verify_problems_are_exit_9_and_in_the_report(capsys, inventory, tmp_path, connect, library):
    library.problems["a.example.com"] = ["SANs differ", "puppetserver is not running"]
    report = tmp_path / "v.json"
    ran = run_program(capsys, "verify", "--host", "a", "--inventory", inventory, "--report", str(report))
    assert ran.code == 9
    assert "a fails verification: SANs differ; puppetserver is not running" in one_line_error(ran)
    assert "a: OK" not in ran.out
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["problems"] == ["SANs differ", "puppetserver is not running"]
    assert data["host"] == "a" and data["dates"][0]["what"] == "master cert"


def test_verify_several_hosts_one_report_each(capsys, inventory, tmp_path, connect, library):
    library.problems["c.example.com"] = ["CRL expired"]
    report = tmp_path / "v.json"
    ran = run_program(capsys, "verify", "--host", "a,c", "--inventory", inventory, "--report", str(report))
    assert ran.code == 9
    assert json.loads((tmp_path / "v-a.json").read_text())["ok"] is True
    assert json.loads((tmp_path / "v-c.json").read_text())["problems"] == ["CRL expired"]
    assert not report.exists()
    assert "FAILED(9)" in ran.out


@pytest.mark.parametrize("flags, words", [
    (["--warn-days=-1"], "--warn-days -1"),
    (["--dns-alt-names", "bad name"], "--dns-alt-names"),
    (["--parallel", "0", "--host", "a,b"], "--parallel 0"),
    (["--report", "{tmp}/missing/v.json"], "--report"),
])
def test_verify_bad_input(capsys, inventory, tmp_path, connect, library, flags, words):
    ran = run_program(capsys, "verify", "--inventory", inventory, *[f.format(tmp=tmp_path) for f in flags])
    assert ran.code == 2
    assert words in one_line_error(ran)
    assert connect.targets == [] and library.called() == 0


# --- extend-ca --agents --------------------------------------------------------------------------

@pytest.mark.parametrize("agents, words", [
    ("web1.example.com,bob@web2.example.com", "--agents web2.example.com: pe-remote logs in as root"),
    ("web1.example.com,web", "--agents web: key file "),
])
def test_extend_ca_checks_every_agents_login_before_the_job_starts(capsys, tmp_path, connect, library, agents,
                                                                   words):
    inventory = tmp_path / "agents.toml"
    inventory.write_text(f'[hosts.m]\naddress = "m.example.com"\n\n[hosts.web]\naddress = "web.example.com"\n'
                         f'key_file = "{tmp_path}/no_such_key"\n')
    ran = run_program(capsys, "extend-ca", "--host", "m", "--inventory", str(inventory), "--yes", "--agents", agents)
    assert ran.code == 2, ran
    assert words in one_line_error(ran)
    assert connect.targets == []  # refused before the master's CA is touched, not in the push after it (10)


# --- refresh-crl --days, extend-ca --years: not given is None (the default, or a resumed run's own) ---------

@pytest.mark.parametrize("task, entry, flag, given, passed", [
    ("refresh-crl", "refresh", "days", [], None),
    ("refresh-crl", "refresh", "days", ["--days", "30"], 30),
    ("extend-ca", "extend", "years", [], None),
    ("extend-ca", "extend", "years", ["--years", "5"], 5),
])
def test_a_ca_jobs_number_reaches_the_library_only_when_given(capsys, monkeypatch, inventory, connect, task, entry,
                                                              flag, given, passed):
    calls = []
    monkeypatch.setattr(f"pe_remote.tasks.{entry}", lambda remote, console, **kwargs: calls.append(kwargs))
    ran = run_program(capsys, task, "--host", "a", "--inventory", inventory, "--yes", *given)
    assert ran.code == 0, ran
    assert [call[flag] for call in calls] == [passed]
