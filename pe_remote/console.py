"""What the operator sees and answers: plan, step lines, waits, warnings, confirmations.

On a terminal everything is shown, and long steps tick ("still waiting, 20s").
Not on a terminal (CI), only step lines, notices and warnings are printed; the
plan goes to the log. `--verbose` adds every remote command. Everything shown
or not is also written, with UTC timestamps, to the run's log file if one is
given (no key material ever reaches the console, so none reaches the log).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from pe_remote.errors import Aborted, InputError
from pe_remote.names import printable

TICK_SECONDS = 10


class Console:
    def __init__(self, out: TextIO | None = None, *, verbose: bool = False, assume_yes: bool = False,
                 stdin: TextIO | None = None, log_path: str | Path | None = None,
                 interactive: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self.assume_yes = assume_yes
        self.stdin = stdin or sys.stdin
        self.interactive = (hasattr(self.out, "isatty") and self.out.isatty()) if interactive is None else interactive
        self._log = None
        self._lock = threading.RLock()
        self.log_path = None
        if log_path:
            path = Path(log_path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._log = open(path, "a", buffering=1)
            except OSError as exc:
                raise InputError(f"cannot write the log file {path} ({exc.strerror}): "
                                 "choose another with --log-file") from None
            self.log_path = path

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def _emit(self, text: str, *, show: bool) -> None:
        text = printable(text)  # much of it comes from the master
        with self._lock:
            if show:
                print(text, file=self.out, flush=True)
            if self._log:
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                for line in text.splitlines() or [""]:
                    self._log.write(f"{stamp} {line}\n")

    def info(self, message: str = "") -> None:
        """Detail: shown on a terminal, logged always."""
        self._emit(message, show=self.interactive or self.verbose)

    def notice(self, message: str) -> None:
        """What every operator and every CI log must see (backup path, result)."""
        self._emit(message, show=True)

    def warn(self, message: str) -> None:
        self._emit(f"WARNING: {message}", show=True)

    def command(self, command: str) -> None:
        self._emit(f"    $ {command}", show=self.verbose)

    def step_started(self, number: int, total: int, title: str) -> None:
        self._emit(f"[{number}/{total}] {title} ...", show=True)

    def step_finished(self, number: int, total: int, title: str, seconds: float, outcome: str = "done") -> None:
        self._emit(f"[{number}/{total}] {title}: {outcome} ({seconds:.1f}s)", show=True)

    @contextlib.contextmanager
    def waiting(self, what: str):
        """On a terminal, say every few seconds what is awaited and for how long."""
        if not self.interactive:
            yield
            return
        stop = threading.Event()
        started = time.monotonic()

        def tick() -> None:
            while not stop.wait(TICK_SECONDS):
                self._emit(f"    ... {what}: still waiting ({time.monotonic() - started:.0f}s)", show=True)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def confirm(self, question: str) -> None:
        """Ask yes/no; anything but yes aborts. Without a terminal, --yes is required."""
        if self.assume_yes:
            self._emit(f"{question} yes (--yes)", show=False)
            return
        if not (hasattr(self.stdin, "isatty") and self.stdin.isatty()):
            raise Aborted(f"{question} -- no terminal to ask on: pass --yes to confirm non-interactively")
        print(f"{question} [y/N] ", end="", file=self.out, flush=True)
        answer = self.stdin.readline().strip().lower()
        self._emit(f"{question} answered {answer!r}", show=False)
        if answer not in ("y", "yes"):
            raise Aborted("aborted by the operator; nothing was changed on the master")
