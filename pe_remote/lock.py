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

from pe_remote.errors import Refused
from pe_remote.names import printable
from pe_remote.shell import q

LOCK_FOLDERS = ("/run/lock", "/var/lock", "/tmp")
HELD, BUSY, UNAVAILABLE = "@@lock held", "@@lock busy", "@@lock unavailable"


def lock_script(owner: str, folders: tuple[str, ...] = LOCK_FOLDERS) -> str:
    """Shell that takes the lock (or says who has it) and then holds it until its input ends."""
    candidates = " ".join(q(f) for f in folders)
    return (f"L=; for d in {candidates}; do if [ -d \"$d\" ]; then L=$d; break; fi; done\n"
            f"command -v flock >/dev/null 2>&1 && [ -n \"$L\" ] || {{ echo '{UNAVAILABLE}'; exec cat >/dev/null; }}\n"
            "exec 8>>\"$L/pe-remote.lock\"\n"
            f"if flock -n 8; then printf '%s\\n' {q(owner)} > \"$L/pe-remote.owner\"; echo '{HELD}'; "
            "exec cat >/dev/null; fi\n"
            f"echo \"{BUSY} $(head -c 300 \"$L/pe-remote.owner\" 2>/dev/null)\"; exit 75")


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
    if first_line.startswith(HELD):
        return MasterLock(held)
    if first_line.startswith(UNAVAILABLE):
        if console is not None:
            console.warn(f"{remote.target.label} has no flock(1): pe-remote cannot keep a second run out")
        return MasterLock(held)
    held.close()
    holder = printable(first_line[len(BUSY):].strip()) or "another run (it left no name)"
    raise Refused(f"another run holds {remote.target.label}: {holder}. Wait for it to end; nothing was changed")
