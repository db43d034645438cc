"""Unit tests for pe_remote.fleet: parallel read-only work, regen wave by wave, the result table.

No network: `connect` is a fake that hands out FakeRemote objects, and the per-host
functions are plain callables.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pe_remote.errors import ConnectionFailed, Refused
from pe_remote.fleet import FAILED, OK, SKIPPED, HostResult, render_table, run_in_waves, run_on_host, run_parallel
from pe_remote.inventory import Target, parse_target


def targets(n: int) -> list[Target]:
    return [parse_target(f"root@master{i}.example.com") for i in range(n)]


class FakeRemote:
    def __init__(self, target: Target, log: list) -> None:
        self.target = target
        self.log = log
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.log.append(("close", self.target.label))


class FakeConnect:
    """Records connections; `refuse` names hosts whose connection fails."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.log: list = []
        self.remotes: list[FakeRemote] = []
        self.accept_new: list[bool] = []
        self.lock = threading.Lock()

    def __call__(self, target: Target, *, accept_new_host_key: bool = False) -> FakeRemote:
        with self.lock:
            self.accept_new.append(accept_new_host_key)
            self.log.append(("connect", target.label))
            if target.address in self.refuse:
                raise ConnectionFailed(f"cannot connect to {target.label}: refused")
            remote = FakeRemote(target, self.log)
            self.remotes.append(remote)
            return remote


class ConcurrencyMeter:
    """A per-host function that counts how many calls run at the same time."""

    def __init__(self, seconds: float = 0.05, fail: tuple[str, ...] = ()) -> None:
        self.seconds = seconds
        self.fail = fail
        self.current = 0
        self.peak = 0
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, remote) -> str:
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
            self.calls.append(remote.target.label)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.seconds)
            if remote.target.address in self.fail:
                raise Refused(f"{remote.target.label} is not the CA")
            return f"facts of {remote.target.label}"
        finally:
            with self.lock:
                self.current -= 1


# --- run_parallel (read-only) ---------------------------------------------------------------------

@pytest.mark.parametrize("bound", [1, 2, 3])
def test_parallel_respects_the_bound(bound):
    meter = ConcurrencyMeter()
    results = run_parallel(targets(7), meter, max_workers=bound, connect=FakeConnect())
    assert meter.peak == bound
    assert len(meter.calls) == 7
    assert all(r.ok for r in results)


def test_parallel_really_overlaps():
    meter = ConcurrencyMeter(seconds=0.2)
    started = time.monotonic()
    run_parallel(targets(4), meter, max_workers=4, connect=FakeConnect())
    assert time.monotonic() - started < 0.6  # 4 x 0.2 s one after the other would be 0.8 s
    assert meter.peak == 4


def test_parallel_results_in_target_order_with_values_and_times():
    fleet = targets(5)
    results = run_parallel(fleet, ConcurrencyMeter(), max_workers=3, connect=FakeConnect())
    assert [r.target for r in results] == fleet
    assert [r.value for r in results] == [f"facts of {t.label}" for t in fleet]
    assert all(r.status == OK and r.error is None and r.elapsed >= 0.05 for r in results)


def test_parallel_errors_are_per_host_and_do_not_stop_the_others():
    fleet = targets(5)
    connect = FakeConnect(refuse=("master1.example.com",))
    meter = ConcurrencyMeter(fail=("master3.example.com",))
    results = run_parallel(fleet, meter, max_workers=2, connect=connect)
    assert [r.status for r in results] == [OK, FAILED, OK, FAILED, OK]
    assert results[1].error == "cannot connect to master1.example.com: refused"
    assert results[1].exit_code == 3
    assert results[3].error == "master3.example.com is not the CA"
    assert results[3].exit_code == 4
    assert results[3].value is None
    # every host but the unreachable one was worked on, and every opened connection closed
    assert sorted(meter.calls) == [t.label for t in fleet if t.address != "master1.example.com"]
    assert all(remote.closed for remote in connect.remotes)


def test_parallel_unexpected_exception_is_captured_with_its_type():
    def boom(remote):
        raise KeyError("ssldir")

    [result] = run_parallel(targets(1), boom, connect=FakeConnect())
    assert result.status == FAILED
    assert result.error == "KeyError: 'ssldir'"
    assert result.exit_code is None


def test_parallel_each_host_gets_its_own_connection_and_the_host_key_option():
    connect = FakeConnect()
    run_parallel(targets(3), ConcurrencyMeter(), max_workers=3, accept_new_host_key=True, connect=connect)
    assert sorted(label for what, label in connect.log if what == "connect") == [t.label for t in targets(3)]
    assert connect.accept_new == [True, True, True]
    assert len({id(r) for r in connect.remotes}) == 3


def test_parallel_empty_and_bad_bound():
    assert run_parallel([], ConcurrencyMeter(), connect=FakeConnect()) == []
    with pytest.raises(ValueError, match="max_workers"):
        run_parallel(targets(2), ConcurrencyMeter(), max_workers=0, connect=FakeConnect())


def test_run_on_host_closes_the_connection_when_the_function_fails():
    connect = FakeConnect()
    result = run_on_host(targets(1)[0], ConcurrencyMeter(seconds=0, fail=("master0.example.com",)), connect=connect)
    assert result.status == FAILED
    assert connect.log == [("connect", "master0.example.com"), ("close", "master0.example.com")]


# --- run_in_waves (regen) ---------------------------------------------------------------------------

def test_waves_of_one_run_in_order_in_the_calling_thread():
    meter = ConcurrencyMeter(seconds=0.01)
    fleet = targets(4)
    results = run_in_waves(fleet, meter, connect=FakeConnect())
    assert meter.calls == [t.label for t in fleet]
    assert meter.peak == 1
    assert meter.threads == {threading.get_ident()}  # regen's SIGINT latch needs the main thread
    assert [r.status for r in results] == [OK] * 4


def test_waves_stop_at_the_first_failure():
    meter = ConcurrencyMeter(seconds=0.01, fail=("master1.example.com",))
    fleet = targets(4)
    seen = []
    results = run_in_waves(fleet, meter, connect=FakeConnect(), on_result=seen.append)
    assert meter.calls == ["master0.example.com", "master1.example.com"]  # 2 and 3 never started
    assert [r.status for r in results] == [OK, FAILED, SKIPPED, SKIPPED]
    assert results[2].error == results[3].error == "not started: master1.example.com failed"
    assert results[2].elapsed == 0.0
    assert [r.label for r in seen] == ["master0.example.com", "master1.example.com"]


def test_waves_stop_when_a_connection_fails():
    meter = ConcurrencyMeter(seconds=0)
    results = run_in_waves(targets(3), meter, connect=FakeConnect(refuse=("master0.example.com",)))
    assert meter.calls == []
    assert [r.status for r in results] == [FAILED, SKIPPED, SKIPPED]


def test_waves_of_two_run_in_parallel_and_finish_the_failing_wave():
    meter = ConcurrencyMeter(seconds=0.1, fail=("master2.example.com",))
    fleet = targets(6)
    results = run_in_waves(fleet, meter, wave_size=2, connect=FakeConnect())
    assert meter.peak == 2
    # wave 1 (0, 1) ok; wave 2 (2, 3): 2 fails, 3 still finishes; waves 3 (4, 5) never start
    assert sorted(meter.calls) == [t.label for t in fleet[:4]]
    assert [r.status for r in results] == [OK, OK, FAILED, OK, SKIPPED, SKIPPED]
    assert results[4].error == "not started: master2.example.com failed"


def test_ctrl_c_during_a_wave_reaches_every_host_of_it_and_starts_no_further_wave():
    """The worker threads' latches read the main thread's: a host part-way through its steps sees the
    Ctrl-C (its executor then rolls back), a host that gets to its steps after it stops before them."""
    from pe_remote.executor import InterruptLatch

    class Quiet:
        def warn(self, message):
            pass

    stray = []  # a Ctrl-C the wave did not catch lands here (not as a KeyboardInterrupt ending the test run)

    def recorder(signum, frame):
        stray.append(signum)

    handler = signal.signal(signal.SIGINT, recorder)
    pressed = threading.Event()
    saw: dict[str, bool] = {}

    def job(remote):
        name = remote.target.address
        if name == "master1.example.com":
            assert pressed.wait(5)  # gets to its steps after Ctrl-C: stops before its first change
        with InterruptLatch(Quiet()) as latch:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal sends it: to the process, its main thread
            deadline = time.monotonic() + 5
            while not latch.interrupted and time.monotonic() < deadline:
                time.sleep(0.01)
            saw[name] = latch.interrupted
            pressed.set()
            raise Refused(f"{name} rolled back")  # what run_steps does once its step is finished

    try:
        results = run_in_waves(targets(4), job, wave_size=2, connect=FakeConnect())
        ours = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stray == [] and saw == {"master0.example.com": True}
    assert [r.status for r in results] == [FAILED, FAILED, SKIPPED, SKIPPED]
    assert results[1].exit_code == 130 and results[1].error == "interrupted (Ctrl-C) before any change"
    assert results[2].exit_code == results[3].exit_code == 130
    assert results[2].error == "not started: interrupted (Ctrl-C)"
    assert ours is recorder  # the handler from before the wave is back
    assert InterruptLatch.workers is None


def test_a_wave_job_pressed_during_its_backup_starts_no_journal():
    # Before, its journal was written and its steps then refused: the next regen "resumed" a run that
    # never changed anything (and took no backup of its own).
    from fakes import FakeRemote, QuietConsole
    from pe_remote import runs
    from pe_remote.events import Events
    from pe_remote.executor import InterruptLatch
    from test_unit_trust import RECORDED

    handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
    remote, raised = FakeRemote(), []

    def worker():
        try:
            runs.start_journal(remote, RECORDED, None, QuietConsole(), Events(), task="regen")
        except KeyboardInterrupt:
            raised.append(True)

    try:
        with InterruptLatch.for_workers() as latch:
            thread = threading.Thread(target=worker)
            os.kill(os.getpid(), signal.SIGINT)
            assert latch.interrupted
            thread.start()
            thread.join(5)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert raised == [True] and remote.commands_run == 0
    InterruptLatch.stop_if_pressed()  # the main thread: nothing (it raises KeyboardInterrupt by itself)


def test_waves_bad_size():
    with pytest.raises(ValueError, match="wave_size"):
        run_in_waves(targets(2), ConcurrencyMeter(), wave_size=0, connect=FakeConnect())


# --- render_table ---------------------------------------------------------------------------------

def test_table_shows_every_host_with_result_time_and_detail():
    a, b, c = parse_target("root@a.example.com"), parse_target("root@b.example.com:2222"), \
        parse_target("root@c.example.com")
    results = [HostResult(a, OK, 1.234, value="serial 0x0A -> 0x0B"),
               HostResult(b, FAILED, 0.5, error="SSH to b.example.com:2222 failed:\n  timed out", exit_code=3),
               HostResult(c, SKIPPED, 0.0, error="not started: b.example.com:2222 failed")]
    table = render_table(results, title="regen")
    lines = table.splitlines()
    assert lines[0] == "regen"
    assert lines[1].split() == ["HOST", "RESULT", "SECONDS", "DETAIL"]
    assert lines[2].split() == ["a.example.com", "ok", "1.2", "serial", "0x0A", "->", "0x0B"]
    assert lines[3].split()[:3] == ["b.example.com:2222", "FAILED(3)", "0.5"]
    assert lines[3].endswith("SSH to b.example.com:2222 failed: timed out")  # one line per host
    assert lines[4].split()[:3] == ["c.example.com", "skipped", "-"]
    assert lines[-1] == "3 hosts: 1 ok, 1 failed, 1 skipped"
    # columns line up: every row's RESULT starts where the header's does
    column = lines[1].index("RESULT")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines[2:5])


def test_table_uses_describe_for_values():
    [r] = run_parallel(targets(1), lambda remote: {"serial": "0x05"}, connect=FakeConnect())
    table = render_table([r], describe=lambda v: f"serial {v['serial']}")
    assert "master0.example.com  ok" in table
    assert table.splitlines()[1].endswith("serial 0x05")
    assert table.splitlines()[-1] == "1 host: 1 ok, 0 failed"
