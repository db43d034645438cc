"""The library's exceptions: one root, one subclass per kind of failure.

Each class carries the process exit code the CLI layer uses for it, so that the
codes are distinct for bad input, a master refused as unsafe, a failure before
any change, and a failure after the master was changed.
"""


class PeRemoteError(Exception):
    """Root of every error pe-remote raises on purpose."""

    exit_code = 1


class InputError(PeRemoteError):
    """The operator's input is wrong (flags, target, inventory); nothing was touched."""

    exit_code = 2


class InventoryError(InputError):
    """inventory.toml is missing, unreadable, or has a bad entry."""


class InvalidName(InputError):
    """A certname or alt name is not a valid host name or IP address."""


class ConnectionFailed(PeRemoteError):
    """The SSH connection could not be made (network, auth, timeout)."""

    exit_code = 3


class HostKeyRejected(ConnectionFailed):
    """The master's host key is unknown or does not match known_hosts."""


class Refused(PeRemoteError):
    """The master is not one pe-remote will change (not root, hostile certname, ...)."""

    exit_code = 4


class Aborted(PeRemoteError):
    """The operator answered no; nothing was changed."""

    exit_code = 5


class RemoteCommandFailed(PeRemoteError):
    """A remote command exited non-zero where it must not."""

    exit_code = 6

    def __init__(self, command: str, exit_status: int, output: str) -> None:
        self.command = command
        self.exit_status = exit_status
        self.output = output
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"remote command failed (exit {exit_status}): {command}: {last}")


class RemoteCommandTimedOut(RemoteCommandFailed):
    """A remote command did not end within the time its step allows (the workstation stopped waiting)."""

    def __init__(self, command: str, seconds: float | None) -> None:
        super().__init__(command, -1, f"no end within {seconds:.0f}s: given up as hung" if seconds else "timed out")


class DiscoveryError(PeRemoteError):
    """The master could not be described (no puppet, unreadable settings, ...)."""

    exit_code = 6


class JournalDamaged(DiscoveryError):
    """A run journal on the master cannot be trusted (damaged, unknown fields' values, hostile values)."""


class UnreadableCert(DiscoveryError):
    """A cert or CRL that parses as PEM/DER but whose contents cannot be read (a malformed extension,
    an unknown key type): nothing is decided on what could not be read."""


class BackupError(PeRemoteError):
    """The SSL backup could not be made, pulled back or verified; nothing was changed."""

    exit_code = 6


class BackupChanged(BackupError):
    """tar saw a file change while it read the SSL folders (an agent run writing them); worth a retry."""


class StepFailed(PeRemoteError):
    """A step of the procedure failed (internal: the job turns it into RolledBack or Incomplete)."""

    exit_code = 8

    def __init__(self, step_title: str, reason: str) -> None:
        self.step_title = step_title
        self.reason = reason
        super().__init__(f"step '{step_title}' failed: {reason}")


class VerificationFailed(PeRemoteError):
    """The procedure ran but the result is not what it must be (internal: triggers a rollback)."""

    exit_code = 8


class Interrupted(StepFailed):
    """Ctrl-C during the steps: treated as a failure, so the master is rolled back."""

    def __init__(self, step_title: str) -> None:
        super().__init__(step_title, "interrupted by the operator (Ctrl-C)")


class RolledBack(PeRemoteError):
    """The run failed after changing the master, and the master was put back as it was."""

    exit_code = 7


class Incomplete(PeRemoteError):
    """The run stopped part-way and the master was NOT put back (connection lost, rollback failed)."""

    exit_code = 8


class Mismatch(PeRemoteError):
    """`verify` found the master's cert or services not as they must be (nothing was changed)."""

    exit_code = 9


class FleetFailed(PeRemoteError):
    """One or more hosts of a multi-host run failed; carries the most severe of their exit codes."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AgentsNotUpdated(PeRemoteError):
    """The master's job is done, but the new CA bundle did not reach every agent named (`--agents`):
    each agent's row says why, and where its old CA bundle is kept."""

    exit_code = 10


# Several hosts that end differently (`--host a,b`, `--wave N`) exit with the MOST SEVERE host's code, ranked
# by how much the operator must do about a master, and how soon (README, "Exit codes"); most severe first:
#   8    a master changed and NOT put back (or its rollback refused): act by hand now (resume, roll back)
#   1    an unexpected error (a bug) on a host: what became of that master is unknown, so look at it next
#   7    a master was changed, failed and was put back: it serves its old cert, the job did not happen
#   10   a master's CA was renewed, but agents still need the new bundle before the date printed
#   9    `verify` found a master that needs action (pe-remote changed nothing)
#   6    discovery, the backup or a command failed before any change: the job did not happen, nothing changed
#   4    a master refused as unsafe or unsupported: nothing changed, the operator must decide about it
#   3    SSH failed: nothing changed, try again once the master answers
#   130  Ctrl-C before that master's first change: the operator stopped it, nothing changed
#   5    the operator said no: nothing changed, as asked
#   2    bad input: nothing touched (flags are checked before any connection; what is left is per-host)
# A code not listed counts as an unexpected error (1).
EXIT_SEVERITY = (8, 1, 7, 10, 9, 6, 4, 3, 130, 5, 2)


def most_severe(codes) -> int:
    """The exit code of a run over several hosts: the most severe of theirs (EXIT_SEVERITY; 0 when none
    failed). None (a host with no code of its own) and unknown codes count as 1."""
    failed = [1 if code is None or code not in EXIT_SEVERITY else code for code in codes if code != 0]
    return min(failed, key=EXIT_SEVERITY.index) if failed else 0
