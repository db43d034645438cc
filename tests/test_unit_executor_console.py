"""Unit tests for pe_remote.executor (running a plan's steps) and pe_remote.console (what the operator sees)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from pe_remote.errors import InputError

import pe_remote.executor as executor
from pe_remote.connection import CommandResult
from pe_remote.console import Console
from pe_remote.discovery import parse_discovery
from pe_remote.errors import Aborted, StepFailed
from pe_remote.journal import Journal
from pe_remote.plan import Plan, Step

DATA = Path(__file__).parent / "data"
RECORDED = parse_discovery((DATA / "discovery-oss7.txt").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class ShellRemote:
    """A fake remote: records every command and runs it in a local shell, returning CommandResult objects.

    A command may carry `# tick=N`: the fake clock then advances N seconds, as if the step took that long.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.commands: list[str] = []
        self.clock = clock

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        if self.clock:
            self.clock.now += sum(int(n) for n in re.findall(r"# tick=(\d+)", command))
        return CommandResult(command, proc.returncode, proc.stdout, proc.stderr)


def log_step(log: Path, key: str, *, fail_command: bool = False, fail_check: bool = False, tick: int = 0,
             server_ready: bool = False, check: bool = True) -> Step:
    q = shlex.quote(str(log))
    command = f"echo cmd:{key} >> {q}"
    if fail_command:
        command += "; echo 'boom: it broke' >&2; exit 3"
    if tick:
        command += f"  # tick={tick}"
    check_cmd = f"echo chk:{key} >> {q}" + ("; echo 'still running'; false" if fail_check else "")
    return Step(key, f"Title of {key}", command, check_cmd if check else None, server_ready=server_ready)


def plan_of(*steps: Step) -> Plan:
    return Plan(RECORDED, (), tuple(steps), (), (), ())


def logged(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def console():
    return Console(io.StringIO())


# --- order and checks ---------------------------------------------------------------------------

def test_runs_each_command_then_its_check_in_order(tmp_path, console):
    log = tmp_path / "log"
    plan = plan_of(log_step(log, "clean"), log_step(log, "stop:a"), log_step(log, "generate"),
                   log_step(log, "start:a"))
    run = executor.execute(ShellRemote(), plan, console)
    assert logged(log) == ["cmd:clean", "chk:clean", "cmd:stop:a", "chk:stop:a",
                           "cmd:generate", "chk:generate", "cmd:start:a", "chk:start:a"]
    assert [r.key for r in run.records] == ["clean", "stop:a", "generate", "start:a"]
    assert all(r.outcome == "ok" for r in run.records)


def test_step_without_check_runs_only_its_command(tmp_path, console):
    log = tmp_path / "log"
    executor.execute(ShellRemote(), plan_of(log_step(log, "a", check=False), log_step(log, "b")), console)
    assert logged(log) == ["cmd:a", "cmd:b", "chk:b"]


def test_failing_check_raises_step_failed_and_stops_there(tmp_path, console):
    log = tmp_path / "log"
    plan = plan_of(log_step(log, "a"), log_step(log, "b", fail_check=True), log_step(log, "c"))
    with pytest.raises(StepFailed) as info:
        executor.execute(ShellRemote(), plan, console)
    assert info.value.step_title == "Title of b"
    assert "Title of b" in str(info.value)
    assert "check failed" in info.value.reason
    assert logged(log) == ["cmd:a", "chk:a", "cmd:b", "chk:b"]  # c never ran


def test_failing_command_raises_step_failed_skips_its_check_and_stops(tmp_path, console):
    log = tmp_path / "log"
    plan = plan_of(log_step(log, "a", fail_command=True), log_step(log, "b"))
    with pytest.raises(StepFailed) as info:
        executor.execute(ShellRemote(), plan, console)
    assert info.value.step_title == "Title of a"
    assert "exit 3" in info.value.reason
    assert "boom: it broke" in info.value.reason  # the command's last output line
    assert logged(log) == ["cmd:a"]


def test_failure_is_reported_on_the_console(tmp_path, console):
    log = tmp_path / "log"
    with pytest.raises(StepFailed):
        executor.execute(ShellRemote(), plan_of(log_step(log, "a"), log_step(log, "b", fail_check=True)), console)
    out = console.out.getvalue()
    assert "[1/2] Title of a: done" in out
    assert "[2/2] Title of b: FAILED" in out


def test_progress_lines(tmp_path, console):
    log = tmp_path / "log"
    executor.execute(ShellRemote(), plan_of(log_step(log, "a"), log_step(log, "b")), console)
    lines = console.out.getvalue().splitlines()
    assert lines[0] == "[1/2] Title of a ..."
    assert lines[1].startswith("[1/2] Title of a: done (")
    assert lines[2] == "[2/2] Title of b ..."
    assert lines[3].startswith("[2/2] Title of b: done (")


def test_verbose_console_shows_the_step_command(tmp_path):
    log = tmp_path / "log"
    step = log_step(log, "a")
    out = io.StringIO()
    executor.execute(ShellRemote(), plan_of(step), Console(out, verbose=True))
    assert f"    $ {step.command}" in out.getvalue()


# --- steps that overlap ---------------------------------------------------------------------------

def test_steps_whose_needs_are_met_run_at_the_same_time(tmp_path, console):
    # b and c each wait for the other's mark: they finish only if they run at the same time.
    a, b, c = (tmp_path / n for n in "abc")
    plan = plan_of(
        Step("first", "First", f"touch {a}"),
        Step("b", "B", f"touch {b}; for i in $(seq 100); do [ -e {c} ] && exit 0; sleep 0.05; done; exit 9"),
        Step("c", "C", f"touch {c}; for i in $(seq 100); do [ -e {b} ] && exit 0; sleep 0.05; done; exit 9",
             needs=("first",)),
        Step("last", "Last", f"test -e {b} && test -e {c}", needs=("b", "c")))
    run = executor.execute(ShellRemote(), plan, console)
    assert [r.key for r in run.records][0] == "first" and run.records[-1].key == "last"
    assert all(r.outcome == "ok" for r in run.records)
    by_key = {r.key: r for r in run.records}
    assert by_key["c"].started < by_key["b"].ended and by_key["b"].started < by_key["c"].ended


def test_after_a_failure_no_step_starts_but_running_ones_finish(tmp_path, console):
    log = tmp_path / "log"
    slow = Step("slow", "Slow", f"sleep 0.5; echo cmd:slow >> {shlex.quote(str(log))}", needs=())
    plan = plan_of(slow, Step("fails", "Fails", "exit 4", needs=()), log_step(log, "never"))
    with pytest.raises(StepFailed) as info:
        executor.execute(ShellRemote(), plan, console)
    assert info.value.step_title == "Fails"
    assert logged(log) == ["cmd:slow"]  # finished after the failure; "never" did not start


def test_a_step_waits_for_every_step_it_needs(tmp_path, console):
    log = tmp_path / "log"
    q = shlex.quote(str(log))
    plan = plan_of(Step("a", "A", f"sleep 0.3; echo a >> {q}"), Step("b", "B", f"echo b >> {q}", needs=()),
                   Step("c", "C", f"echo c >> {q}", needs=("a", "b")))
    executor.execute(ShellRemote(), plan, console)
    assert logged(log) == ["b", "a", "c"]


def test_a_plan_running_steps_again_makes_every_later_step_wait_for_them(tmp_path, console):
    # A resume after a reboot: stop:a is run again, start:a was never done. Without the added need,
    # start:a (its own needs met) would run beside the stop, and the service could end stopped.
    log = tmp_path / "log"
    q = shlex.quote(str(log))
    plan = plan_of(Step("stop:a", "Stop a", f"sleep 0.3; echo stop >> {q}"),
                   Step("generate", "Generate", "true"),
                   Step("start:a", "Start a", f"echo start >> {q}", needs=("generate",)))
    again = plan.running_again(("stop:a",))
    assert again.needs()["start:a"] == ("generate", "stop:a") and again.needs()["generate"] == ("stop:a",)
    executor.execute(ShellRemote(), again, console, done=("generate",))
    assert logged(log) == ["stop", "start"]
    assert plan.running_again(()) == plan


# --- downtime --------------------------------------------------------------------------------

def test_downtime_runs_from_the_first_stop_to_the_server_ready_step(tmp_path, console, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(executor.time, "monotonic", clock.monotonic)
    log = tmp_path / "log"
    plan = plan_of(
        log_step(log, "clean", tick=1),  # before the first stop: not downtime
        log_step(log, "stop:a", tick=2),
        log_step(log, "stop:b", tick=4),
        log_step(log, "generate", tick=8),
        log_step(log, "start:a", tick=16),
        log_step(log, "wait-server", tick=32, server_ready=True),
        log_step(log, "start:b", tick=64),  # after the server answers: not downtime
    )
    run = executor.execute(ShellRemote(clock), plan, console)
    assert run.downtime_started == 1001.0
    assert run.downtime_ended == 1063.0
    assert run.downtime == 2 + 4 + 8 + 16 + 32


def test_no_server_ready_step_means_no_downtime_figure(tmp_path, console):
    log = tmp_path / "log"
    run = executor.execute(ShellRemote(), plan_of(log_step(log, "stop:a"), log_step(log, "start:a")), console)
    assert run.downtime_started is not None
    assert run.downtime_ended is None
    assert run.downtime is None


def test_empty_plan_runs_nothing(console):
    remote = ShellRemote()
    run = executor.execute(remote, plan_of(), console)
    assert remote.commands == []
    assert run.records == [] and run.downtime is None


# --- Console.confirm -----------------------------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Exploding(io.StringIO):
    def isatty(self) -> bool:
        raise AssertionError("must not look at stdin with --yes")

    def readline(self, *args):
        raise AssertionError("must not read stdin with --yes")


def test_confirm_assume_yes_passes_without_asking():
    out = io.StringIO()
    Console(out, assume_yes=True, stdin=Exploding()).confirm("Regenerate?")
    assert out.getvalue() == ""


def test_confirm_without_a_tty_aborts_and_mentions_yes():
    with pytest.raises(Aborted) as info:
        Console(io.StringIO(), stdin=io.StringIO("y\n")).confirm("Regenerate the cert?")
    assert "--yes" in str(info.value)
    assert "Regenerate the cert?" in str(info.value)
    assert info.value.exit_code == 5


@pytest.mark.parametrize("answer", ["n\n", "no\n", "\n", "", "maybe\n", "yess\n"])
def test_confirm_anything_but_yes_aborts(answer):
    out = io.StringIO()
    with pytest.raises(Aborted) as info:
        Console(out, stdin=Tty(answer)).confirm("Regenerate?")
    assert "nothing was changed" in str(info.value)
    assert "Regenerate? [y/N]" in out.getvalue()


@pytest.mark.parametrize("answer", ["y\n", "yes\n", "Y\n", " YES \n"])
def test_confirm_yes_passes(answer):
    out = io.StringIO()
    Console(out, stdin=Tty(answer)).confirm("Regenerate?")
    assert out.getvalue() == "Regenerate? [y/N] "


def test_console_on_a_terminal_shows_info_and_hides_commands():
    out = io.StringIO()
    console = Console(out, interactive=True)
    console.info("hello")
    console.warn("careful")
    console.command("rm -rf /nothing")  # not verbose: not shown
    assert out.getvalue() == "hello\nWARNING: careful\n"


def test_console_off_a_terminal_shows_only_steps_notices_and_warnings(tmp_path):
    out = io.StringIO()
    console = Console(out, interactive=False, log_path=tmp_path / "logs" / "run.log")
    console.info("the plan")
    console.notice("backup at X")
    console.step_started(1, 2, "Stop puppet")
    console.step_finished(1, 2, "Stop puppet", 1.25)
    console.warn("careful")
    console.command("systemctl stop puppet")
    console.close()
    assert out.getvalue() == ("backup at X\n[1/2] Stop puppet ...\n[1/2] Stop puppet: done (1.2s)\n"
                              "WARNING: careful\n")
    logged = (tmp_path / "logs" / "run.log").read_text()
    for text in ("the plan", "backup at X", "Stop puppet: done", "careful", "systemctl stop puppet"):
        assert text in logged, f"{text!r} missing from the log"


def test_console_verbose_shows_commands_and_info():
    out = io.StringIO()
    console = Console(out, interactive=False, verbose=True)
    console.info("the plan")
    console.command("systemctl stop puppet")
    assert out.getvalue() == "the plan\n    $ systemctl stop puppet\n"


def test_console_log_file_that_cannot_be_written_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="--log-file"):
        Console(io.StringIO(), log_path=blocker / "run.log")


def test_console_step_lines():
    out = io.StringIO()
    console = Console(out)
    console.step_started(2, 9, "Stop puppet")
    console.step_finished(2, 9, "Stop puppet", 1.234)
    assert out.getvalue() == "[2/9] Stop puppet ...\n[2/9] Stop puppet: done (1.2s)\n"



# --- a step outlives a dropped connection ---------------------------------------------------------

class _FileJournal:
    """Only what step_script asks of a journal: the shell that appends an event, and the run's lock."""

    hold_lock_command = Journal.hold_lock_command
    steps_running_command = Journal.steps_running_command

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = str(path) + ".lock"

    def append_command(self, entry: str) -> str:
        return f"echo {shlex.quote(json.loads(entry)['event'])} >> {shlex.quote(str(self.path))}"


def test_a_step_runs_to_its_end_and_journals_it_when_its_output_is_gone(tmp_path):
    # The reader of the step's output (the SSH channel) is gone before the step writes anything:
    # without the step's output file and ignored SIGPIPE, its first line of output would kill it.
    done, journal = tmp_path / "done", tmp_path / "journal"
    step = Step("slow", "Slow", f"sleep 0.3; echo progress; echo notice >&2; touch {done}", check=f"test -e {done}")
    reader, writer = os.pipe()
    os.close(reader)
    proc = subprocess.Popen(["sh", "-c", executor.step_script(step, _FileJournal(journal))],
                            stdout=writer, stderr=writer)
    os.close(writer)
    fake = _FileJournal(journal)
    time.sleep(0.1)
    # While the orphaned step runs, its run's lock is held: a resume would wait for it.
    assert subprocess.run(["sh", "-c", fake.steps_running_command()]).returncode == 1
    assert subprocess.run(["sh", "-c", fake.steps_running_command(wait=10)]).returncode == 0
    proc.wait(timeout=10)
    assert done.exists(), "the step's command did not run to its end"
    assert journal.read_text().split() == ["begin", "end"]


def test_a_daemon_started_by_a_step_does_not_hold_the_runs_lock(tmp_path):
    fake = _FileJournal(tmp_path / "journal")
    step = Step("start", "Start", "sleep 30 >/dev/null 2>&1 &")  # a daemon that outlives its step
    subprocess.run(["sh", "-c", executor.step_script(step, fake)], capture_output=True, timeout=10)
    try:
        assert subprocess.run(["sh", "-c", fake.steps_running_command()]).returncode == 0
    finally:
        subprocess.run(["pkill", "-f", "^sleep 30$"])
