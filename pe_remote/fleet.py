"""Several masters: read-only work in parallel, changes one host (or one wave) at a time.

`run_parallel` runs a read-only per-host function (discover, backup, verify) on
many targets at once, with at most `max_workers` hosts in flight. Every worker
thread opens its own SSH connection (paramiko connections are not shared between
threads), and one host's failure is recorded for that host without stopping
the others.

`run_in_waves` is for changes (`regen`): hosts go one at a time, or in waves of
at most `wave_size`, and nothing after the first failure is started, so a
broken procedure is found on one master instead of the whole fleet. With a wave
size of 1 the host's function runs in the calling thread, so regen's Ctrl-C
handling (which needs the main thread) stays in force. With larger waves the
main thread catches Ctrl-C for the worker threads (executor.InterruptLatch.
for_workers): a host part-way through its steps finishes the running step and
rolls back, a host not yet changing stops before its first change (exit 130),
and no further wave starts.

Both return one `HostResult` per target, in the order given; `render_table`
prints them as a plain-text table.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from pe_remote.errors import PeRemoteError
from pe_remote.events import INTERRUPTED_EXIT
from pe_remote.inventory import Target

DEFAULT_PARALLEL = 4

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"  # not started: an earlier host (or wave) failed


@dataclass(frozen=True)
class HostResult:
    target: Target
    status: str  # ok, failed, skipped
    elapsed: float  # seconds, connection included; 0 when skipped
    value: Any = None  # what the per-host function returned
    error: str | None = None  # one line, when failed or skipped
    exit_code: int | None = None  # the PeRemoteError's exit code, when it was one

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def label(self) -> str:
        return self.target.label


def _default_connect(target: Target, *, accept_new_host_key: bool = False):
    from pe_remote.connection import connect

    return connect(target, accept_new_host_key=accept_new_host_key)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PeRemoteError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def run_on_host(target: Target, fn: Callable[[Any], Any], *, accept_new_host_key: bool = False,
                connect: Callable[..., Any] | None = None) -> HostResult:
    """Connect to one target, run `fn(remote)`, close; any error becomes a failed HostResult."""
    connect = connect or _default_connect
    started = time.monotonic()
    try:
        remote = connect(target, accept_new_host_key=accept_new_host_key)
        try:
            value = fn(remote)
        finally:
            remote.close()
    except Exception as exc:  # noqa: BLE001 - recorded per host; KeyboardInterrupt still propagates
        return HostResult(target, FAILED, time.monotonic() - started, error=_describe(exc),
                          exit_code=getattr(exc, "exit_code", None))
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise
        # A worker thread's job stopped for the main thread's Ctrl-C before its first change (see
        # executor.InterruptLatch): that host's result, beside the others of its wave.
        return HostResult(target, FAILED, time.monotonic() - started,
                          error="interrupted (Ctrl-C) before any change", exit_code=INTERRUPTED_EXIT)
    return HostResult(target, OK, time.monotonic() - started, value=value)


def _check_bound(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def run_parallel(targets: Iterable[Target], fn: Callable[[Any], Any], *, max_workers: int = DEFAULT_PARALLEL,
                 accept_new_host_key: bool = False, connect: Callable[..., Any] | None = None) -> list[HostResult]:
    """Run a READ-ONLY `fn(remote)` on every target, at most `max_workers` at once.

    Each host gets its own thread and connection; a failure is that host's result and the
    others go on. Results come back in the order of `targets`. Ctrl-C cancels the hosts not
    yet started, waits for the running ones, and is raised again.
    """
    targets = list(targets)
    _check_bound("max_workers", max_workers)
    if not targets:
        return []
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(targets)), thread_name_prefix="pe-remote-host")
    try:
        futures = [pool.submit(run_on_host, t, fn, accept_new_host_key=accept_new_host_key, connect=connect)
                   for t in targets]
        return [f.result() for f in futures]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: start no more hosts
        raise
    finally:
        pool.shutdown(wait=True)


def run_in_waves(targets: Sequence[Target], fn: Callable[[Any], Any], *, wave_size: int = 1,
                 accept_new_host_key: bool = False, connect: Callable[..., Any] | None = None,
                 on_result: Callable[[HostResult], None] | None = None) -> list[HostResult]:
    """Run a CHANGING `fn(remote)` (regen) wave by wave; stop at the first failure.

    A wave is at most `wave_size` hosts run in parallel (1: strictly one at a time, in the
    calling thread). After a wave with a failure no further host is started: those are
    returned as skipped, naming the host that failed. `on_result` is called as each host
    finishes (progress output).
    """
    targets = list(targets)
    _check_bound("wave_size", wave_size)
    if wave_size > 1 and len(targets) > 1:
        from pe_remote.executor import InterruptLatch

        with InterruptLatch.for_workers() as latch:
            return _waves(targets, fn, wave_size, accept_new_host_key, connect, on_result, latch)
    return _waves(targets, fn, wave_size, accept_new_host_key, connect, on_result, None)


def _waves(targets: list[Target], fn, wave_size: int, accept_new_host_key: bool, connect, on_result,
           latch) -> list[HostResult]:
    results: list[HostResult] = []
    failed_at: str | None = None
    for start in range(0, len(targets), wave_size):
        wave = targets[start:start + wave_size]
        if latch is not None and latch.interrupted:
            results.extend(HostResult(t, SKIPPED, 0.0, error="not started: interrupted (Ctrl-C)",
                                      exit_code=INTERRUPTED_EXIT) for t in wave)
            continue
        if failed_at is not None:
            results.extend(HostResult(t, SKIPPED, 0.0, error=f"not started: {failed_at} failed")
                           for t in wave)
            continue
        if wave_size == 1:
            outcome = [run_on_host(wave[0], fn, accept_new_host_key=accept_new_host_key, connect=connect)]
            if on_result:
                on_result(outcome[0])
        else:
            outcome = _run_wave(wave, fn, accept_new_host_key, connect, on_result)
        results.extend(outcome)
        failures = [r.label for r in outcome if not r.ok]
        if failures:
            failed_at = ", ".join(failures)
    return results


def _run_wave(wave: list[Target], fn, accept_new_host_key: bool, connect, on_result) -> list[HostResult]:
    pool = ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="pe-remote-wave")
    try:
        futures = [pool.submit(run_on_host, t, fn, accept_new_host_key=accept_new_host_key, connect=connect)
                   for t in wave]
        pending = set(futures)
        while pending:
            # A timeout keeps the main thread running now and then, so that its SIGINT handler (the latch
            # the workers read) runs at once even when the signal reached another thread.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                if on_result:
                    on_result(future.result())
        return [f.result() for f in futures]
    finally:
        # A changing run is never abandoned half-way: even on Ctrl-C, wait for the hosts in flight.
        pool.shutdown(wait=True)


def render_table(results: Sequence[HostResult], *, describe: Callable[[Any], str] = str,
                 title: str | None = None) -> str:
    """Plain-text table: host, result, seconds, and the value (or the error) per host; then a total line."""
    rows = [("HOST", "RESULT", "SECONDS", "DETAIL")]
    for r in results:
        if r.ok:
            detail = "" if r.value is None else describe(r.value)
        else:
            detail = r.error or ""
        result = {OK: "ok", FAILED: "FAILED", SKIPPED: "skipped"}.get(r.status, r.status)
        if r.status == FAILED and r.exit_code is not None:
            result = f"FAILED({r.exit_code})"
        seconds = "-" if r.status == SKIPPED else f"{r.elapsed:.1f}"
        rows.append((r.label, result, seconds, " ".join(str(detail).split())))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [title] if title else []
    for host, result, seconds, detail in rows:
        lines.append(f"{host:<{widths[0]}}  {result:<{widths[1]}}  {seconds:>{widths[2]}}  {detail}".rstrip())
    counts = {status: sum(1 for r in results if r.status == status) for status in (OK, FAILED, SKIPPED)}
    summary = f"{len(results)} host{'' if len(results) == 1 else 's'}: {counts[OK]} ok, {counts[FAILED]} failed"
    if counts[SKIPPED]:
        summary += f", {counts[SKIPPED]} skipped"
    lines.append(summary)
    return "\n".join(lines)
