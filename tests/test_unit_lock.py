"""Unit tests: one run at a time on a master (the lock script runs for real in a local shell).

Before: two `regen --yes` started together on one master both went ahead unless their backup file
names collided.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from pe_remote import lock
from pe_remote.errors import Refused
from pe_remote.inventory import Target


class _Held:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class LocalRemote:
    """Runs `hold` commands in a local shell, as the master's sshd would."""

    target = Target(address="master.example.com")

    def hold(self, command: str):
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = proc.stdout.readline().decode().strip()
        return line, _Held(proc)


@pytest.fixture
def folders(tmp_path):
    if subprocess.run(["sh", "-c", "command -v flock"], capture_output=True).returncode != 0:
        pytest.skip("flock(1) is not installed here")
    return (str(tmp_path / "missing"), str(tmp_path))


def test_a_second_run_is_refused_naming_the_first(folders):
    first = lock.acquire(LocalRemote(), "regen", folders=folders)
    try:
        with pytest.raises(Refused) as info:
            lock.acquire(LocalRemote(), "regen", folders=folders)
        message = str(info.value)
        assert info.value.exit_code == 4
        assert "another run holds master.example.com: pe-remote regen by" in message
        assert f"(pid {os.getpid()})" in message and "nothing was changed" in message
    finally:
        first.release()
    lock.acquire(LocalRemote(), "regen", folders=folders).release()  # free again once released


def test_the_lock_dies_with_its_holder(folders):
    remote = LocalRemote()
    first = lock.acquire(remote, "regen", folders=folders)
    holder = first._held.proc
    os.kill(holder.pid, signal.SIGKILL)  # the connection or the workstation died
    holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            lock.acquire(remote, "regen", folders=folders).release()
            break
        except Refused:
            assert time.monotonic() < deadline, "the lock outlived its holder"
            time.sleep(0.1)


def test_the_owner_is_shell_quoted():
    script = lock.lock_script("x'; touch /tmp/pwned; '")
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert "'x'\"'\"'; touch /tmp/pwned; '\"'\"''" in script
