"""Shared helpers for pe-remote's tests. The staging-master fixtures come from
the `pe_remote.testing` pytest plugin, opted in here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import tarfile
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pe_remote.commands.steps import REMOTE_STATE_DIR

pytest_plugins = ["pe_remote.testing.plugin"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_cli(program: str, *args: str, cwd: Path = ROOT, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `fab` or `invoke` executable of this environment."""
    executable = BIN / program
    assert executable.exists(), f"{executable} is not installed (pip install -e .)"
    full_env = {**os.environ, "PE_REMOTE_INVENTORY": str(ROOT / "inventory.toml"), **(env or {})}
    return subprocess.run([str(executable), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def fab_target_args(master) -> list[str]:
    return ["-H", master.target, "-i", str(master.key_path)]


def write_backup(tarball: Path, members: dict[str, bytes]) -> Path:
    """A tarball of `members` (path inside it -> bytes) with its `.sha256` beside it, as `backup` writes
    them: what `restore` takes."""
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    tarball.with_name(tarball.name + ".sha256").write_text(f"{digest}  {tarball.name}\n")
    return tarball


def fab_on(master, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`fab -H master ... ARGS --known-hosts ...`: a task run the way an operator runs it."""
    return run_cli("fab", *fab_target_args(master), *args, "--known-hosts", str(master.known_hosts_path),
                   timeout=timeout)


def fab_until(args: list[str], *needles: str, timeout: float = 300) -> tuple[subprocess.Popen, list[str]]:
    """Start `fab ARGS` and read its output until every needle was printed (in any order: some steps
    overlap). Returns the running process and the lines read so far."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(BIN / "fab"), *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    missing = set(needles)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"fab ended before printing {sorted(missing)!r}:\n{''.join(seen)}")
        seen.append(line)
        missing = {n for n in missing if n not in line}
    if missing:
        raise AssertionError(f"no {sorted(missing)!r} within {timeout}s:\n{''.join(seen)}")
    return proc, seen


def finish(proc: subprocess.Popen, seen: list[str], timeout: float = 600) -> str:
    """The rest of a fab_until run's output, all of it."""
    out, _ = proc.communicate(timeout=timeout)
    return "".join(seen) + out


# Kills every SSH session of root. [s]: do not match the shell running it; OpenSSH 9.8+ (trixie) names
# a session's process sshd-session.
CUT = "pkill -KILL -f '[s]shd(-session)?: root'"
FIRED = "/run/pe-remote-test-fault"  # the mark of on_master_when's action
ARMED = "/run/pe-remote-test-armed"  # touched when on_master_when is armed


def journalled(step: str, event: str = "end") -> str:
    """Shell condition: a run's journal on the master, written since on_master_when was armed, holds
    `event` of `step` (the step's shell wrote it). An earlier run's journal does not count."""
    line = json.dumps({"event": event, "step": step})
    return (f"j=$(find {REMOTE_STATE_DIR} -maxdepth 1 -name '*.journal' -newer {ARMED} 2>/dev/null); "
            f"[ -n \"$j\" ] && grep -qsF {shlex.quote(line)} $j")


def running(pattern: str) -> str:
    """Shell condition: a process whose command line matches `pattern` (pgrep -f) runs on the master."""
    return f"pgrep -f {shlex.quote(pattern)} >/dev/null"


@contextlib.contextmanager
def on_master_when(master, condition: str, action: str, *, hold: str = ""):
    """While inside: as soon as the shell `condition` holds on the master, it runs the shell `action`
    once (a fault at a known point of a run). Watched on the master itself, every 20 ms: a fault sent
    from outside after a step's output can land after the next steps have already finished. `hold`: a
    pgrep -f pattern whose processes are paused (SIGSTOP) across the action, so they are certainly
    still running when it lands. Fails if the action never ran."""
    pause, go_on = (f"p=$(pgrep -f {shlex.quote(hold)}); kill -STOP $p; ", "; kill -CONT $p") if hold else ("", "")
    watcher = (f"i=0; until {condition}; do i=$((i+1)); [ $i -lt 15000 ] || exit 1; sleep 0.02; done; "
               f"{pause}{action}{go_on}; touch {FIRED}")
    master.check(f"rm -f {FIRED}; touch {ARMED}; nohup sh -c {shlex.quote(watcher)} >/dev/null 2>&1 & echo $! > {FIRED}.pid")
    try:
        yield
    finally:  # an action that ran is followed by its mark within milliseconds
        fired = master.exec(f"for i in $(seq 100); do [ -e {FIRED} ] && exit 0; sleep 0.05; done; exit 1")[0] == 0
        master.exec(f"kill $(cat {FIRED}.pid) 2>/dev/null; rm -f {FIRED}.pid")
    assert fired, f"{action!r} never ran: {condition!r} did not hold during the run"


def cut_when(master, condition: str, *, hold: str = ""):
    """While inside: the workstation's connection is lost once `condition` holds (see on_master_when)."""
    return on_master_when(master, condition, CUT, hold=hold)


@contextlib.contextmanager
def failing_command(master, name: str):
    """While inside: `name` on the master's PATH (over SSH) exits 1 at once, a fault injected into a step."""
    path = f"/usr/local/bin/{name}"
    master.check(f"printf '#!/bin/sh\\nexit 1\\n' > {path} && chmod 755 {path}")
    try:
        yield
    finally:
        master.check(f"rm -f {path}")


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


@pytest.fixture
def cli():
    return run_cli


# Figures the end-to-end tests measure (the downtime beside a bare restart, per generation): printed
# at the end of the run, whatever pytest captures.
MEASURED: list[str] = []


@pytest.fixture
def measured():
    return MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured by the end-to-end tests")
        for line in MEASURED:
            terminalreporter.write_line(line)
