"""SSH to a master as root, with host keys checked and nothing left to hang.

Fabric alone accepts unknown host keys and never reads known_hosts, and waits
forever on a dead network: here the policy is OpenSSH's `StrictHostKeyChecking
yes` unless the operator opts in to accepting a new key, and connect, banner and
auth timeouts and keepalives are always set.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko

from invoke.exceptions import CommandTimedOut

from pe_remote.errors import ConnectionFailed, HostKeyRejected, InputError, RemoteCommandFailed, RemoteCommandTimedOut
from pe_remote.inventory import Target
from pe_remote.names import printable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15
KEEPALIVE_SECONDS = 15
DEAD_LINK_SECONDS = 45  # no reply to a keepalive for this long: the link is dead
SFTP_IDLE_TIMEOUT = 300  # an SFTP transfer with no reply for this long is given up
COMMAND_TIMEOUT = 1800  # no remote command runs longer without saying so (steps have tighter bounds)
# What to do about an unknown host key (the master's or a ProxyJump hop's).
UNKNOWN_KEY_ADVICE = ("verify its fingerprint and add it (ssh-keyscan), pass --known-hosts FILE, or opt in with "
                      "--accept-new-host-key")


class _AcceptNewHostKey(paramiko.MissingHostKeyPolicy):
    """OpenSSH's `accept-new`: trust an unknown key once and save it; a changed key is still refused."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        pattern = self._pattern_matching(hostname)
        if pattern:
            raise HostKeyRejected(f"{hostname} matches the pattern {pattern!r} in {self.known_hosts}, which pe-remote "
                                  "cannot check a key against: not adding a new key for it; add the host's own line "
                                  "(ssh-keyscan, after checking its fingerprint)")
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.known_hosts, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("accepted new host key for %s (%s %s)", hostname, key.get_name(),
                    key.fingerprint if hasattr(key, "fingerprint") else "")

    def _pattern_matching(self, hostname: str) -> str:
        """A wildcard host pattern of known_hosts that matches `hostname` (paramiko skips those lines, so
        a host pinned by one looks unknown; OpenSSH would check it against that key)."""
        try:
            lines = self.known_hosts.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in lines:
            fields = line.split()
            if fields and fields[0].startswith("@"):
                fields = fields[1:]
            if not fields or fields[0].startswith("#"):
                continue
            for pattern in fields[0].split(","):
                if any(c in pattern for c in "*?") and _ssh_pattern(pattern.lstrip("!")).fullmatch(hostname):
                    return printable(pattern)[:80]
        return ""


def _ssh_pattern(pattern: str) -> re.Pattern:
    """OpenSSH's host pattern: `*` any run, `?` one character, everything else itself (no [classes])."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.I)


class _RejectHopKey(paramiko.MissingHostKeyPolicy):
    """A ProxyJump hop whose host key is not in known_hosts is refused, naming the hop."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise HostKeyRejected(f"host key of the ProxyJump hop {hostname} is unknown: it is not in {self.known_hosts}; "
                              f"{UNKNOWN_KEY_ADVICE}")


def _check_host_keys(client: paramiko.SSHClient, known_hosts: Path, policy: paramiko.MissingHostKeyPolicy) -> None:
    if known_hosts.exists():
        try:
            client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise InputError(f"cannot read known_hosts file {known_hosts}: {exc}") from None
        except paramiko.hostkeys.InvalidHostKey as exc:  # not an SSHException: e.g. an @cert-authority line
            line = printable(str(exc.line).strip())[:80]
            raise InputError(f"cannot read known_hosts file {known_hosts}: paramiko cannot read its line {line!r} "
                             "(@cert-authority and @revoked lines are not supported): pass --known-hosts FILE "
                             "with plain host key lines") from None
    client.set_missing_host_key_policy(policy)


@dataclass
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class _SinkFailed(Exception):
    """The sink of `Remote.stream` failed (this machine's disk): not the connection."""

    def __init__(self, error: OSError) -> None:
        self.error = error


class Remote:
    """One SSH connection to one master; every remote command goes through `run`."""

    def __init__(self, connection: fabric.Connection, target: Target) -> None:
        self.connection = connection
        self.target = target
        self.commands_run = 0
        self._count_lock = threading.Lock()  # the executor runs overlapping steps from threads
        self.on_command = None  # optional callback(command) for --verbose
        self.watchdog: LinkWatchdog | None = None

    def _announce(self, command: str) -> None:
        """Count the command and show it (--verbose), whichever way it runs."""
        with self._count_lock:
            self.commands_run += 1
        if self.on_command:
            self.on_command(command)
        log.debug("remote: %s", command)

    def run(self, command: str, *, check: bool = True, timeout: float | None = None) -> CommandResult:
        """Run `command` on the master; a command without a bound of its own is given up after
        COMMAND_TIMEOUT seconds (steps pass theirs)."""
        timeout = COMMAND_TIMEOUT if timeout is None else timeout
        self._announce(command)
        started = time.monotonic()
        try:
            result = self.connection.run(command, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False,
                                         env={})
        except CommandTimedOut:
            raise RemoteCommandTimedOut(command, timeout) from None
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise ConnectionFailed(f"lost the SSH connection to {self.target.label}: {exc}") from exc
        transport = self.connection.transport
        alive = transport is not None and transport.is_active()
        if result.exited == -1 and alive and time.monotonic() - started >= timeout:
            # Invoke closed the channel at the time limit but did not say so (its timer thread had not
            # ended yet): a hung command, on a connection that is still there.
            raise RemoteCommandTimedOut(command, timeout)
        if result.exited == -1 or not alive:
            # The channel closed without an exit status: the connection is gone, not the command failed.
            raise ConnectionFailed(f"lost the SSH connection to {self.target.label} during a remote command")
        outcome = CommandResult(command, result.exited, result.stdout, result.stderr)
        if check and not outcome.ok:
            raise RemoteCommandFailed(command, outcome.exit_status, outcome.stdout + outcome.stderr)
        return outcome

    def hold(self, command: str, *, timeout: float = CONNECT_TIMEOUT) -> tuple[str, "HeldCommand"]:
        """Start `command` on its own channel and return its first line of output and the running
        command, which keeps running (reading its input) until `.close()` ends its input."""
        self._announce(command)
        try:
            channel = self.connection.transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            line = channel.makefile("rb").readline(4096)
            channel.settimeout(None)
        except (paramiko.SSHException, socket.error, EOFError, AttributeError) as exc:
            raise ConnectionFailed(f"lost the SSH connection to {self.target.label}: {exc}") from exc
        return line.decode(errors="replace").strip(), HeldCommand(channel)

    def stream(self, command: str, sink, *, window: int = 16 << 20, chunk: int = 1 << 20,
               idle_timeout: float = 300, what: str = "a remote command") -> tuple[int, str]:
        """Run `command` on its own channel; its stdout goes to `sink.write` as it arrives.

        Returns (exit status, stderr). stderr is drained while stdout flows, so a chatty command
        cannot stall the channel window; `idle_timeout` seconds without a byte is a lost connection.
        An OSError from the sink (this machine's disk) is raised as it is: it is not the connection.
        """
        self._announce(command)
        lost = f"lost the SSH connection to {self.target.label} during {what}"
        transport = self.connection.transport
        if transport is None or not transport.is_active():
            raise ConnectionFailed(f"no open SSH connection to {self.target.label} for {what}")
        try:
            channel = transport.open_session(window_size=window)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"{lost}: {exc}") from exc
        errors = bytearray()
        try:
            channel.settimeout(idle_timeout)
            channel.exec_command(command)
            while data := channel.recv(chunk):
                try:
                    sink.write(data)
                except OSError as exc:
                    raise _SinkFailed(exc) from exc
                while channel.recv_stderr_ready():
                    errors += channel.recv_stderr(65536)
            while more := channel.recv_stderr(65536):
                errors += more
            if not channel.status_event.wait(idle_timeout):
                raise ConnectionFailed(f"{lost}: no exit status after {idle_timeout:.0f}s")
            status = channel.recv_exit_status()
        except _SinkFailed as failed:
            raise failed.error from None
        except socket.timeout:
            raise ConnectionFailed(f"{lost}: nothing received for {idle_timeout:.0f}s") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"{lost}: {exc}") from exc
        finally:
            channel.close()
        if status == -1 or not transport.is_active():
            raise ConnectionFailed(lost)
        return status, errors.decode(errors="replace")

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP client. A transfer that receives nothing for SFTP_IDLE_TIMEOUT seconds
        fails (socket.timeout): sshd answers the watchdog's keepalives even while sftp-server is stuck."""
        try:
            client = self.connection.sftp()
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise ConnectionFailed(f"lost the SSH connection to {self.target.label}: {exc}") from exc
        client.get_channel().settimeout(SFTP_IDLE_TIMEOUT)
        return client

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.connection.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LinkWatchdog(threading.Thread):
    """Notice a dead link within `dead_after` seconds: ask the server for a reply every `interval`
    seconds (as OpenSSH's ServerAliveInterval does) and close the transport when none comes.

    paramiko's own keepalive sends packets that expect no answer, so a peer that vanished (a
    pulled cable, a dropped NAT entry) is never noticed and a run waits forever. Closing the
    transport makes every command waiting on it fail as a lost connection.
    """

    def __init__(self, transport, *, interval: float = KEEPALIVE_SECONDS, dead_after: float = DEAD_LINK_SECONDS):
        super().__init__(name="pe-remote link watchdog", daemon=True)
        self.transport, self.interval, self.dead_after = transport, interval, dead_after
        self.stopped = threading.Event()
        self.declared_dead = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval) and self.transport.is_active():
            answered = threading.Event()

            def ask() -> None:
                try:
                    # OpenSSH answers an unknown global request with a failure: any answer is a reply.
                    self.transport.global_request("keepalive@openssh.com", wait=True)
                except Exception:  # noqa: BLE001 - a closed transport ends the loop anyway
                    pass
                finally:
                    answered.set()

            threading.Thread(target=ask, daemon=True).start()
            if not answered.wait(self.dead_after) and not self.stopped.is_set():
                log.warning("no answer from the master for %ss: closing the connection", self.dead_after)
                self.declared_dead = True
                self.transport.close()
                return

    def stop(self) -> None:
        self.stopped.set()


class HeldCommand:
    """A remote command kept running on its own channel (see Remote.hold)."""

    def __init__(self, channel) -> None:
        self.channel = channel

    def close(self) -> None:
        try:
            self.channel.shutdown_write()  # end of its input: `cat` exits
        except (paramiko.SSHException, socket.error, EOFError):
            pass
        self.channel.close()


class OneLinkConnection(fabric.Connection):
    """A Fabric connection that never opens a second link by itself.

    Fabric's `run` opens the connection again, silently, when its link has closed. A run that went
    on over a new link after its own was cut between two commands would have lost what lived on the
    first one: the run's lock (held by a command on it, see lock.py) and the dead-link watchdog. A
    lost link is a lost connection here, as it is during a command (exit 8, the journal kept).
    """

    def open(self):
        if self.transport is not None and not self.is_connected:
            raise paramiko.SSHException("the connection closed between two commands (it is not opened again "
                                        "mid-run)")
        return super().open()


def connection_config() -> fabric.Config:
    """Fabric's defaults and the SSH config files (host aliases, ProxyCommand), never Fabric's own config
    files (/etc/fabric.*, ~/.fabric.*): a `run: {pty: true}` there (a common tip for sudo) would merge
    stderr into stdout, turn Ctrl-C into a ^C sent to a restore half-way through, and hang up a
    command when its channel closes; a `run.env` would prefix every remote command."""
    config = fabric.Config(lazy=True)
    config.load_ssh_config()
    return config


def ssh_hostname(address: str, config: fabric.Config | None = None) -> str:
    """The host `address` reaches once the SSH config's `HostName` is applied (lower case): two aliases
    of one host are one host. `config`: a connection_config() already loaded, for several addresses."""
    config = config if config is not None else connection_config()
    return str(config.base_ssh_config.lookup(address).get("hostname", address)).lower()


def new_connection(target: Target, connect_kwargs: dict) -> fabric.Connection:
    """The Fabric connection (one link: OneLinkConnection), never forwarding the operator's SSH agent.

    Fabric honours `ForwardAgent yes` from ~/.ssh/config; root on the master could then use the
    operator's agent (log in elsewhere as the operator) for as long as the run lasts.
    """
    return OneLinkConnection(host=target.address, user=target.user, port=target.port, config=connection_config(),
                             connect_timeout=CONNECT_TIMEOUT, connect_kwargs=connect_kwargs, forward_agent=False)


def check_login(target: Target) -> list[str]:
    """What `connect` refuses before it opens anything (InputError): a user other than root, a key file that
    does not exist. Callers check hosts they connect to later with it (`extend-ca --agents`: before the
    master is changed). Returns the key files, `~` expanded."""
    if target.user != "root":
        raise InputError(
            f"pe-remote logs in as root (the procedure stops services and rewrites the CA), "
            f"not as {target.user!r}: use root@{target.address}"
        )
    key_files = [os.path.expanduser(k) for k in target.key_files or ()]
    for key in key_files:
        if not os.path.isfile(key):
            raise InputError(f"key file {key} does not exist: give the private key that logs in as root")
    return key_files


def connect(target: Target, *, accept_new_host_key: bool = False) -> Remote:
    """Open the SSH connection, refusing non-root users and unknown host keys."""
    key_files = check_login(target)
    known_hosts = Path(os.path.expanduser(target.known_hosts))
    connect_kwargs = {
        "banner_timeout": CONNECT_TIMEOUT,
        "auth_timeout": CONNECT_TIMEOUT,
        "channel_timeout": CONNECT_TIMEOUT,
    }
    if key_files:
        connect_kwargs["key_filename"] = key_files
    connection = new_connection(target, connect_kwargs)
    _check_host_keys(connection.client, known_hosts,
                     _AcceptNewHostKey(known_hosts) if accept_new_host_key else paramiko.RejectPolicy())
    # A ProxyJump hop from the SSH config: Fabric makes it a plain Connection, which accepts any host key
    # and has no timeouts. Each hop gets the master's rules; its channel_timeout also bounds the forwarded
    # channel to the next host (paramiko waits an hour for it by default).
    hop = connection.gateway
    while isinstance(hop, fabric.Connection):
        _check_host_keys(hop.client, known_hosts,
                         _AcceptNewHostKey(known_hosts) if accept_new_host_key else _RejectHopKey(known_hosts))
        hop.connect_timeout, hop.forward_agent = CONNECT_TIMEOUT, False
        hop.connect_kwargs = dict(connect_kwargs)
        hop = hop.gateway
    try:
        connection.open()
    except paramiko.BadHostKeyException as exc:
        raise HostKeyRejected(
            f"host key of {target.label} does NOT match {known_hosts} (got {exc.key.get_name()}): "
            "possible man-in-the-middle; if the master was rebuilt, remove the old line and verify the new key"
        ) from None
    except paramiko.AuthenticationException as exc:  # an SSHException too: before it
        raise ConnectionFailed(f"SSH login as {target.user} to {target.label} failed: {exc}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostKeyRejected(
                f"host key of {target.label} is unknown: it is not in {known_hosts}; {UNKNOWN_KEY_ADVICE}"
            ) from None
        raise ConnectionFailed(f"SSH to {target.label} failed: {exc}") from None
    except (OSError, socket.timeout, EOFError) as exc:
        raise ConnectionFailed(f"cannot connect to {target.label}: {exc}") from None
    remote = Remote(connection, target)
    remote.watchdog = LinkWatchdog(connection.transport)
    remote.watchdog.start()
    return remote
