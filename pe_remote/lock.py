"""One run at a time on a master: an exclusive lock held by a remote process for the whole run.

The lock is flock(1) on a file in the master's run-time lock folder (tmpfs: nothing persists),
taken by a remote `cat` that the run keeps reading from its own channel of the SSH connection.
The run releases it by closing that channel; if the workstation or the connection dies, `cat`
sees end-of-input and exits, and the kernel frees the lock with it. A second run is refused at once,
naming the holder (who, from where, since when).
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime, timezone

from pe_remote.commands.run import BUSY, HELD, LOCK_FOLDERS, UNAVAILABLE, lock_answer, lock_script
from pe_remote.errors import Refused
from pe_remote.names import printable

__all__ = ["BUSY", "HELD", "LOCK_FOLDERS", "UNAVAILABLE", "MasterLock", "acquire", "lock_script"]


def owner_text(task: str) -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is no reason to fail
        user = "?"
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"pe-remote {task} by {user}@{socket.gethostname()} (pid {os.getpid()}) since {since}"


class MasterLock:
    """The held lock; `release()` (or leaving the `with` block) lets the next run in."""

    def __init__(self, held) -> None:
        self._held = held

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> "MasterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(remote, task: str, console=None, *, folders: tuple[str, ...] = LOCK_FOLDERS) -> MasterLock:
    """Take the master's run lock or raise Refused (exit 4) naming the run that holds it."""
    first_line, held = remote.hold(lock_script(owner_text(task), folders))
    answer, holder = lock_answer(first_line)
    if answer == HELD:
        return MasterLock(held)
    if answer == UNAVAILABLE:
        if console is not None:
            console.warn(f"{remote.target.label} has no flock(1): pe-remote cannot keep a second run out")
        return MasterLock(held)
    held.close()
    if answer != BUSY:
        raise Refused(f"could not take the run lock on {remote.target.label}: the master answered "
                      f"{printable(first_line.strip())[:200]!r}; nothing was changed")
    holder = printable(holder.strip()) or "another run (it left no name)"
    raise Refused(f"another run holds {remote.target.label}: {holder}. Wait for it to end; nothing was changed")
