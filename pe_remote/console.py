"""What the operator sees and answers: plan, step lines, warnings, confirmations.

The library reports through this small interface so that it stays testable
without a terminal; tests pass a Console writing to a buffer.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pe_remote.errors import Aborted


class Console:
    def __init__(self, out: TextIO | None = None, *, verbose: bool = False, assume_yes: bool = False,
                 stdin: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self.assume_yes = assume_yes
        self.stdin = stdin or sys.stdin

    def info(self, message: str = "") -> None:
        print(message, file=self.out, flush=True)

    def warn(self, message: str) -> None:
        print(f"WARNING: {message}", file=self.out, flush=True)

    def command(self, command: str) -> None:
        if self.verbose:
            print(f"    $ {command}", file=self.out, flush=True)

    def step_started(self, number: int, total: int, title: str) -> None:
        print(f"[{number}/{total}] {title} ...", file=self.out, flush=True)

    def step_finished(self, number: int, total: int, title: str, seconds: float, outcome: str = "done") -> None:
        print(f"[{number}/{total}] {title}: {outcome} ({seconds:.1f}s)", file=self.out, flush=True)

    def confirm(self, question: str) -> None:
        """Ask yes/no; anything but yes aborts. Without a terminal, --yes is required."""
        if self.assume_yes:
            return
        if not (hasattr(self.stdin, "isatty") and self.stdin.isatty()):
            raise Aborted(f"{question} -- no terminal to ask on: pass --yes to confirm non-interactively")
        print(f"{question} [y/N] ", end="", file=self.out, flush=True)
        answer = self.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Aborted("aborted by the operator; nothing was changed on the master")
