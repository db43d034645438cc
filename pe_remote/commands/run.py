"""The run's own machinery on the master: the wrapper every step runs in, the journal's writes and
its lock, and the lock that keeps a second run out."""

from __future__ import annotations

from dataclasses import dataclass

from pe_remote.commands import sections as protocol
from pe_remote.commands.sections import mark
from pe_remote.commands.shell import join, q

# --- the journal -------------------------------------------------------------------------------


def append_line(path: str, line: str) -> str:
    """Shell that appends one line to `path` (the line is quoted, never interpreted)."""
    return f"printf '%s\\n' {q(line)} >> {q(path)}"


def create_private(path: str, first_line: str) -> str:
    return f"umask 077 && {append_line(path, first_line)}"


def read_file(path: str) -> str:
    return f"cat {q(path)}"


def move_aside(path: str) -> str:
    """The command that moves a damaged file out of the way (shown to the operator, quoted)."""
    return join(["mv", path, path + ".damaged"])


def hold_shared_lock(path: str) -> str:
    """Shell for the start of a step: hold the run's lock (shared) until the step's shell ends.
    Without flock(1) there is no lock and nothing waits."""
    return f"exec 9>>{q(path)}; if command -v flock >/dev/null 2>&1; then flock -s 9; fi"


def no_holder(path: str, wait: int = 0) -> str:
    """Exit 0 once nobody holds the lock `path` (waiting up to `wait` seconds), 1 if someone does."""
    how = f"-w {int(wait)}" if wait else "-n"
    return f"command -v flock >/dev/null 2>&1 || exit 0; exec 9>>{q(path)}; flock -x {how} 9"


def exit_status_of(name: str, argv: list[str]) -> str:
    """Shell: section `name` holds the exit status of `argv`, run with its output discarded."""
    return f"{mark(name)}; {join(argv)} >/dev/null 2>&1 </dev/null; echo \"$?\""


# --- one step ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutput:
    rc: int | None  # the command's exit status (None: it did not run to its end)
    check: int | None  # the check's exit status (None: not run)
    text: str  # the command's and the check's own output
    already_done: bool  # resume found its effect there and did not run it


def step_script(command: str, check: str | None, *, begin: str = "", end: str = "true", lock: str = "",
                check_first: bool = False) -> str:
    """The remote shell for one step: `begin`, the command, its check, `end` only if both passed.

    The command and check write into a file on the master, not into the SSH channel, and the shell
    ignores SIGPIPE and SIGHUP: if the connection drops, the step still runs to its end (and `end`
    is still written) instead of dying half-way at its next line of output. Their output is sent,
    base64-encoded (it can never pass for a section), once they have ended. `lock`: shell run first
    (the journal's shared lock). With check_first (resume), a step whose effect is there is not re-run.
    """
    check = check or "true"
    prologue = "trap '' PIPE HUP; O=$(mktemp) || O=/dev/null\n" + (f"{lock}\n" if lock else "")
    begin = f"{begin}\n" if begin else ""
    # `9>&-`: a daemon the command starts must not inherit (and hold) the run's lock.
    run_check = (f"( {check}\n) >\"$O\" 2>&1 </dev/null 9>&-; c=$?; {mark('check-output')}; base64 < \"$O\"; "
                 f"{mark('check')}; echo \"$c\"")
    body = (f"( {command}\n) >\"$O\" 2>&1 </dev/null 9>&-; rc=$?; {mark('output')}; base64 < \"$O\"; "
            f"{mark('rc')}; echo \"$rc\"\nif [ $rc = 0 ]; then {run_check}; fi\n")
    if check_first and check != "true":
        body = (f"if ( {check}\n) >/dev/null 2>&1 </dev/null 9>&-; then {mark('already-done')}; rc=0; c=0\n"
                f"else\n{body}fi\n")
    return (f"{prologue}{begin}{body}if [ \"$rc\" = 0 ] && [ \"${{c:-1}}\" = 0 ]; then {end}; fi; "
            f"[ \"$O\" = /dev/null ] || rm -f \"$O\"")


def parse_step_output(output: str) -> StepOutput:
    found = protocol.split(output)
    if "already-done" in found:
        return StepOutput(0, 0, "", True)

    texts = [protocol.decoded(found.get(name, [])).decode(errors="replace") for name in ("output", "check-output")]
    text = "\n".join(t.rstrip("\n") for t in texts if t.strip())
    if not protocol.parse(output):  # the wrapper never ran (no shell, say): what came back is the reason
        text = output.strip()
    return StepOutput(protocol.number(found.get("rc", [])), protocol.number(found.get("check", [])), text, False)


# --- the run lock (one run at a time on a master) ------------------------------------------------

LOCK_FOLDERS = ("/run/lock", "/var/lock", "/tmp")
HELD, BUSY, UNAVAILABLE = "lock-held", "lock-busy", "lock-unavailable"


def lock_script(owner: str, folders: tuple[str, ...] = LOCK_FOLDERS) -> str:
    """Shell that takes the lock (or says who has it: its first line is a marker) and then holds
    it until its input ends."""
    candidates = join(folders)
    busy = protocol.marker(BUSY, "%s")
    return (f"L=; for d in {candidates}; do if [ -d \"$d\" ]; then L=$d; break; fi; done\n"
            f"command -v flock >/dev/null 2>&1 && [ -n \"$L\" ] || {{ {mark(UNAVAILABLE)}; exec cat >/dev/null; }}\n"
            "exec 8>>\"$L/pe-remote.lock\"\n"
            f"if flock -n 8; then printf '%s\\n' {q(owner)} > \"$L/pe-remote.owner\"; {mark(HELD)}; "
            "exec cat >/dev/null; fi\n"
            f"printf '{busy}\\n' \"$(head -c 300 \"$L/pe-remote.owner\" 2>/dev/null | tr -d '\\n<>')\"; exit 75")


def lock_answer(first_line: str) -> tuple[str, str]:
    """(HELD | BUSY | UNAVAILABLE | "", the holder named) from the lock script's first line."""
    found = protocol.marker_name(first_line)
    if found is None or found[0] not in (HELD, BUSY, UNAVAILABLE):
        return "", ""
    return found
