"""Unit tests for pe_remote.connection: host keys, login, remote commands, held commands, streams and
the dead-link watchdog.

A small SSH server runs in this process on 127.0.0.1 (paramiko's server side, public-key login as
root); an exec request is answered by running the command with `sh -c` here. The error mappings that
a live server cannot produce on demand use a fake fabric Connection instead.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import fabric
import paramiko
import pytest
from invoke.exceptions import CommandTimedOut

from pe_remote import connection as conn
from pe_remote.connection import HeldCommand, LinkWatchdog, Remote, connect
from pe_remote.errors import ConnectionFailed, HostKeyRejected, InputError, RemoteCommandFailed, RemoteCommandTimedOut
from pe_remote.inventory import Target


# --- an SSH server in this process --------------------------------------------------------------

class _Handler(paramiko.ServerInterface):
    def __init__(self, server: "SSHServer") -> None:
        self.server = server

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if username == "root" and key.get_base64() == self.server.client_key.get_base64():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        # A hop whose sshd never answers a forwarding (its connect to the master hangs): held until released.
        if self.server.forwarding_held is not None:
            self.server.forwarding_held.wait(30)
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=self.server.execute, args=(channel, command.decode()), daemon=True).start()
        return True

    def check_global_request(self, kind, msg):
        self.server.global_requests.append(kind)
        return False  # as OpenSSH answers an unknown request: a failure, but an answer


class SSHServer:
    """Accepts connections on 127.0.0.1; runs each exec request with `sh -c` and sends back its output."""

    def __init__(self, host_key: paramiko.PKey, client_key: paramiko.PKey) -> None:
        self.host_key, self.client_key = host_key, client_key
        self.global_requests: list[str] = []
        self.commands: list[str] = []
        self.transports: list[paramiko.Transport] = []
        self.forwarding_held: threading.Event | None = None
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(client)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(event=threading.Event(), server=_Handler(self))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def execute(self, channel: paramiko.Channel, command: str) -> None:
        self.commands.append(command)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

        def feed() -> None:  # the channel's input to the command; its end (or the channel's) ends that input
            try:
                while data := channel.recv(65536):
                    proc.stdin.write(data)
                    proc.stdin.flush()
            except (OSError, EOFError, socket.timeout):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                if channel.closed:  # the client gave up on the command (a timeout): end it
                    proc.kill()

        def errors() -> None:
            try:
                while chunk := proc.stderr.read1(65536):
                    channel.sendall_stderr(chunk)
            except (OSError, EOFError, paramiko.SSHException):
                pass

        threading.Thread(target=feed, daemon=True).start()
        drain = threading.Thread(target=errors, daemon=True)
        drain.start()
        try:
            while chunk := proc.stdout.read1(65536):
                channel.sendall(chunk)
            drain.join()
            status = proc.wait()
            channel.send_exit_status(status if status >= 0 else 128 - status)  # killed: 128 + signal, as sh says
        except (OSError, EOFError, paramiko.SSHException):
            proc.kill()
        finally:
            try:
                channel.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the client closed the connection first

    def close(self) -> None:
        self.listener.close()
        for transport in self.transports:
            transport.close()


def known_hosts_line(port: int, key: paramiko.PKey) -> str:
    return f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n"


@pytest.fixture(scope="module")
def keys():
    return SimpleNamespace(host=paramiko.ECDSAKey.generate(), client=paramiko.ECDSAKey.generate(),
                           other=paramiko.ECDSAKey.generate())


@pytest.fixture
def server(keys):
    running = SSHServer(keys.host, keys.client)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def no_agent_no_home_keys(tmp_path, monkeypatch):
    """Only the key a test names logs in: no ssh-agent, no ~/.ssh of whoever runs the tests."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def client_key_file(tmp_path, keys) -> str:
    path = tmp_path / "id_ecdsa"
    keys.client.write_private_key_file(str(path))
    return str(path)


def target_for(server, tmp_path, key_file: str, *, known: paramiko.PKey | None = None, user: str = "root") -> Target:
    known_hosts = tmp_path / "known_hosts"
    if known is not None:
        known_hosts.write_text(known_hosts_line(server.port, known))
    return Target(address="127.0.0.1", port=server.port, user=user, key_files=(key_file,),
                  known_hosts=str(known_hosts))


@pytest.fixture
def remote(server, tmp_path, keys, client_key_file):
    opened = connect(target_for(server, tmp_path, client_key_file, known=keys.host))
    yield opened
    opened.close()


# --- connect: host keys -----------------------------------------------------------------------------

def test_an_unknown_host_key_is_refused_by_default(server, tmp_path, client_key_file):
    target = target_for(server, tmp_path, client_key_file)
    with pytest.raises(HostKeyRejected) as info:
        connect(target)
    assert info.value.exit_code == 3
    assert f"host key of 127.0.0.1:{server.port} is unknown" in str(info.value)
    assert "--accept-new-host-key" in str(info.value)
    assert not Path(target.known_hosts).exists()  # nothing trusted, nothing written
    assert server.commands == []


def test_accept_new_saves_the_key_and_it_is_trusted_next_time(server, tmp_path, keys, client_key_file):
    target = target_for(server, tmp_path, client_key_file).with_overrides(
        known_hosts=str(tmp_path / "fresh" / "ssh" / "known_hosts"))
    with connect(target, accept_new_host_key=True) as remote:
        assert remote.run("echo hello").stdout == "hello\n"
    saved = Path(target.known_hosts)
    assert saved.read_text() == known_hosts_line(server.port, keys.host)
    assert saved.parent.stat().st_mode & 0o777 == 0o700
    with connect(target) as again:  # the saved key is now known: no opt-in needed
        assert again.run("echo again").stdout == "again\n"
    assert saved.read_text().count("\n") == 1  # not saved twice


@pytest.mark.parametrize("pattern", ["[127.0.0.?]:*", "[127.0.0.1]:*", "*"])
def test_accept_new_never_adds_a_key_for_a_host_a_wildcard_line_pins(server, tmp_path, keys, client_key_file,
                                                                       pattern):
    # paramiko skips wildcard lines: the host looks unknown, though OpenSSH would check it against that key.
    target = target_for(server, tmp_path, client_key_file)
    pinned = f"{pattern} {keys.other.get_name()} {keys.other.get_base64()}\n"
    Path(target.known_hosts).write_text(pinned)
    with pytest.raises(HostKeyRejected, match=rf"matches the pattern '{re.escape(pattern)}' in .*not adding a new key"):
        connect(target, accept_new_host_key=True)
    assert Path(target.known_hosts).read_text() == pinned


def test_accept_new_is_not_stopped_by_a_wildcard_line_for_other_hosts(server, tmp_path, keys, client_key_file):
    target = target_for(server, tmp_path, client_key_file)
    other = f"*.example.com,!db.example.com {keys.other.get_name()} {keys.other.get_base64()}\n"
    Path(target.known_hosts).write_text(other)
    with connect(target, accept_new_host_key=True) as remote:
        assert remote.run("echo hello").stdout == "hello\n"
    assert Path(target.known_hosts).read_text() == other + known_hosts_line(server.port, keys.host)


@pytest.mark.parametrize("accept_new", [False, True])
def test_a_changed_host_key_is_refused_even_with_accept_new(server, tmp_path, keys, client_key_file, accept_new):
    target = target_for(server, tmp_path, client_key_file, known=keys.other)
    with pytest.raises(HostKeyRejected, match="does NOT match"):
        connect(target, accept_new_host_key=accept_new)
    assert Path(target.known_hosts).read_text() == known_hosts_line(server.port, keys.other)  # left as it was


def test_an_unreadable_known_hosts_is_an_input_error(server, tmp_path, client_key_file):
    target = target_for(server, tmp_path, client_key_file)
    Path(target.known_hosts).mkdir()
    with pytest.raises(InputError, match="cannot read known_hosts file"):
        connect(target)


# --- connect: login and reachability -------------------------------------------------------------

def test_a_key_the_master_does_not_accept_is_a_connection_failure(server, tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # An Ed25519 key (OpenSSH format, as ssh-keygen writes it): the last kind paramiko tries, so the
    # error that reaches pe-remote is the server's refusal, not a failed parse of the file.
    wrong = tmp_path / "id_ed25519"
    wrong.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    with pytest.raises(ConnectionFailed) as info:
        connect(target_for(server, tmp_path, str(wrong), known=keys.host))
    assert info.value.exit_code == 3 and not isinstance(info.value, HostKeyRejected)
    assert f"127.0.0.1:{server.port}" in str(info.value) and "uthentication" in str(info.value)


def test_a_closed_port_is_a_connection_failure(tmp_path, client_key_file):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    target = Target(address="127.0.0.1", port=port, key_files=(client_key_file,),
                    known_hosts=str(tmp_path / "known_hosts"))
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=f"cannot connect to 127.0.0.1:{port}"):
        connect(target)
    assert time.monotonic() - started < 5


def test_only_root_logs_in(tmp_path):
    with pytest.raises(InputError, match="not as 'admin': use root@127.0.0.1"):
        connect(Target(address="127.0.0.1", user="admin"))


def test_a_missing_key_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="key file .*absent.* does not exist"):
        connect(Target(address="127.0.0.1", key_files=(str(tmp_path / "absent"),)))


def test_fabric_config_files_are_not_read_but_ssh_config_is(tmp_path, monkeypatch):
    # `run: {pty: true}` in ~/.fabric.yaml would merge stderr into stdout and send Ctrl-C to the master.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".fabric.yaml").write_text("run:\n  pty: true\n  env:\n    PATH: /tmp/evil\n")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host master-alias\n  HostName 192.0.2.7\n")
    assert fabric.Config().run.pty is True  # what Fabric alone would do with that file
    made = conn.new_connection(Target(address="master-alias"), {})
    assert made.config.run.pty is False and made.config.run.env == {}
    assert made.host == "192.0.2.7"


def test_a_proxyjump_hop_must_have_a_known_host_key_too(server, tmp_path, keys, client_key_file, monkeypatch):
    # Fabric alone makes the hop a plain Connection that accepts any host key.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host master-alias\n  HostName 127.0.0.1\n"
                                              f"  ProxyJump root@localhost:{server.port}\n")
    target = target_for(server, tmp_path, client_key_file, known=keys.host)
    target = Target(address="master-alias", port=server.port, key_files=target.key_files,
                    known_hosts=target.known_hosts)
    with pytest.raises(HostKeyRejected, match=rf"ProxyJump hop \[localhost\]:{server.port} is unknown"):
        connect(target)
    # Known, the hop is used: this test server then refuses to forward, a connection failure.
    with open(target.known_hosts, "a") as fh:
        fh.write(f"[localhost]:{server.port} {keys.host.get_name()} {keys.host.get_base64()}\n")
    with pytest.raises(ConnectionFailed) as info:
        connect(target)
    assert not isinstance(info.value, HostKeyRejected)


def test_a_proxyjump_hop_that_never_answers_the_forwarding_is_given_up_after_the_connect_timeout(
        server, tmp_path, keys, client_key_file, monkeypatch):
    # paramiko waits an hour for a channel to open unless told otherwise; the hop gets our timeout.
    monkeypatch.setattr(conn, "CONNECT_TIMEOUT", 1)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host master-alias\n  HostName 127.0.0.1\n"
                                              f"  ProxyJump root@localhost:{server.port}\n")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[localhost]:{server.port} {keys.host.get_name()} {keys.host.get_base64()}\n")
    target = Target(address="master-alias", port=server.port, key_files=(client_key_file,),
                    known_hosts=str(known_hosts))
    server.forwarding_held = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionFailed, match="Timeout opening channel"):
            connect(target)
        assert time.monotonic() - started < 10
    finally:
        server.forwarding_held.set()


def test_a_known_hosts_line_paramiko_cannot_read_is_a_one_line_input_error(tmp_path, client_key_file):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n")
    target = Target(address="127.0.0.1", port=1, key_files=(client_key_file,), known_hosts=str(known_hosts))
    with pytest.raises(InputError) as info:
        connect(target)
    message = str(info.value)
    assert f"cannot read known_hosts file {known_hosts}" in message and "@cert-authority" in message
    assert "--known-hosts FILE" in message and "\n" not in message


def test_the_agent_is_never_forwarded():
    made = conn.new_connection(Target(address="127.0.0.1"), {})
    assert made.forward_agent is False
    assert made.connect_timeout == conn.CONNECT_TIMEOUT


# --- Remote.run over the live connection ---------------------------------------------------------

def test_run_returns_output_and_counts_commands(remote):
    shown = []
    remote.on_command = shown.append
    result = remote.run("echo out; echo err >&2")
    assert (result.ok, result.exit_status, result.stdout, result.stderr) == (True, 0, "out\n", "err\n")
    assert shown == ["echo out; echo err >&2"] and remote.commands_run == 1


def test_a_failing_command_raises_with_its_status_and_last_line(remote):
    with pytest.raises(RemoteCommandFailed) as info:
        remote.run("echo first; echo 'the reason' >&2; exit 3")
    assert info.value.exit_status == 3 and info.value.exit_code == 6
    assert str(info.value).endswith(": the reason")


def test_a_failing_command_without_check_is_a_result(remote):
    result = remote.run("exit 4", check=False)
    assert (result.ok, result.exit_status) == (False, 4)


def test_a_hung_command_is_given_up_after_its_timeout(remote):
    started = time.monotonic()
    with pytest.raises(RemoteCommandTimedOut):
        remote.run("sleep 5", timeout=0.3)
    assert time.monotonic() - started < 3


def test_a_timed_out_command_is_never_taken_for_a_lost_connection(remote, monkeypatch):
    import fabric.runners

    kill = fabric.runners.Remote.kill

    # Invoke reports a timeout only once its timer thread has ended; when the command's wait ends first,
    # the closed channel (exited -1) must still be a timeout, not a lost connection (no rollback).
    def slow_kill(self):  # the timer thread is descheduled right after closing the channel
        kill(self)
        time.sleep(0.5)

    monkeypatch.setattr(fabric.runners.Remote, "kill", slow_kill)
    with pytest.raises(RemoteCommandTimedOut):
        remote.run("sleep 5", timeout=0.2)


# --- hold: a command kept running on its own channel ---------------------------------------------

def test_hold_returns_the_first_line_and_close_ends_the_input(remote, tmp_path):
    done = tmp_path / "done"
    shown = []
    remote.on_command = shown.append
    line, held = remote.hold(f"echo '  ready  '; cat >/dev/null; touch {done}")
    assert line == "ready"
    assert shown and remote.commands_run == 1
    time.sleep(0.1)
    assert not done.exists()  # still running, reading its input
    held.close()
    deadline = time.monotonic() + 5
    while not done.exists():
        assert time.monotonic() < deadline, "the held command did not end with its input"
        time.sleep(0.02)


def test_hold_without_a_connection_is_a_connection_failure():
    remote = Remote(SimpleNamespace(transport=None), Target(address="m.example.com"))
    with pytest.raises(ConnectionFailed, match="lost the SSH connection to m.example.com"):
        remote.hold("cat")


def test_hold_whose_channel_cannot_open(monkeypatch):
    class Transport:
        def open_session(self, timeout=None):
            raise paramiko.SSHException("administratively prohibited")

    remote = Remote(SimpleNamespace(transport=Transport()), Target(address="m.example.com"))
    with pytest.raises(ConnectionFailed, match="administratively prohibited"):
        remote.hold("cat")


class _Channel:
    def __init__(self, fail_shutdown: bool = False) -> None:
        self.fail_shutdown = fail_shutdown
        self.calls: list[str] = []

    def shutdown_write(self):
        self.calls.append("shutdown_write")
        if self.fail_shutdown:
            raise EOFError

    def close(self):
        self.calls.append("close")


@pytest.mark.parametrize("fail_shutdown", [False, True])
def test_held_command_close_always_closes_the_channel(fail_shutdown):
    channel = _Channel(fail_shutdown)
    HeldCommand(channel).close()
    assert channel.calls == ["shutdown_write", "close"]


# --- stream ------------------------------------------------------------------------------------

def test_stream_sends_stdout_to_the_sink_and_returns_status_and_stderr(remote):
    sink = io.BytesIO()
    status, errors = remote.stream("head -c 300000 /dev/zero; echo warn >&2; exit 2", sink, chunk=65536)
    assert (status, errors) == (2, "warn\n")
    assert sink.getvalue() == b"\0" * 300000


def test_a_sink_error_is_raised_as_it_is(remote):
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as info:
        remote.stream("echo data", Full())
    assert not isinstance(info.value, ConnectionFailed)


def test_a_silent_stream_is_a_lost_connection(remote):
    with pytest.raises(ConnectionFailed, match="nothing received for"):
        remote.stream("sleep 3", io.BytesIO(), idle_timeout=0.2, what="the backup")


def test_stream_without_an_open_connection():
    remote = Remote(SimpleNamespace(transport=None), Target(address="m.example.com"))
    with pytest.raises(ConnectionFailed, match="no open SSH connection to m.example.com for the backup"):
        remote.stream("true", io.BytesIO(), what="the backup")


def test_stream_whose_channel_cannot_open():
    class Transport:
        def is_active(self):
            return True

        def open_session(self, window_size=None):
            raise paramiko.SSHException("no more sessions")

    remote = Remote(SimpleNamespace(transport=Transport()), Target(address="m.example.com"))
    with pytest.raises(ConnectionFailed, match="during a remote command: no more sessions"):
        remote.stream("true", io.BytesIO())


def test_a_link_closed_between_two_commands_is_a_lost_connection_never_a_new_link(server, remote):
    # Fabric alone opens a new link, silently, and the run would go on without its lock and watchdog.
    remote.run("true")
    links = len(server.transports)
    remote.connection.transport.close()
    with pytest.raises(ConnectionFailed, match="lost the SSH connection to 127.0.0.1.*between two commands"):
        remote.run("true")
    with pytest.raises(ConnectionFailed, match="between two commands"):
        remote.sftp()
    assert len(server.transports) == links and not remote.connection.is_connected


# --- Remote.run: failures mapped from a fake fabric Connection -----------------------------------

class _FakeConnection:
    def __init__(self, *, raises=None, exited=0, active=True) -> None:
        self.raises, self.exited = raises, exited
        self.transport = SimpleNamespace(is_active=lambda: active)
        self.kwargs = None
        self.closed = False
        self.sftp_channel = SimpleNamespace(timeout=None)
        self.sftp_channel.settimeout = lambda seconds: setattr(self.sftp_channel, "timeout", seconds)
        self.sftp_client = SimpleNamespace(get_channel=lambda: self.sftp_channel)

    def run(self, command, **kwargs):
        self.kwargs = kwargs
        if self.raises is not None:
            raise self.raises
        return SimpleNamespace(exited=self.exited, stdout="o", stderr="e")

    def sftp(self):
        return self.sftp_client

    def close(self):
        self.closed = True


def test_run_never_waits_forever_and_never_reads_stdin():
    fake = _FakeConnection()
    Remote(fake, Target(address="m.example.com")).run("true")
    assert fake.kwargs == {"hide": True, "warn": True, "in_stream": False, "timeout": conn.COMMAND_TIMEOUT,
                           "pty": False, "env": {}}


def test_run_timeout_from_fabric():
    fake = _FakeConnection(raises=CommandTimedOut(SimpleNamespace(), 7))
    with pytest.raises(RemoteCommandTimedOut, match="no end within 7s"):
        Remote(fake, Target(address="m.example.com")).run("sleep 100", timeout=7)


@pytest.mark.parametrize("error", [paramiko.SSHException("Socket is closed"), ConnectionResetError("reset"),
                                   EOFError()])
def test_run_on_a_broken_connection(error):
    with pytest.raises(ConnectionFailed, match="lost the SSH connection to m.example.com"):
        Remote(_FakeConnection(raises=error), Target(address="m.example.com")).run("true")


@pytest.mark.parametrize("exited, active", [(-1, True), (0, False)])
def test_a_command_cut_off_with_its_connection_is_not_a_command_failure(exited, active):
    with pytest.raises(ConnectionFailed, match="during a remote command"):
        Remote(_FakeConnection(exited=exited, active=active), Target(address="m.example.com")).run("true")


def test_sftp_and_close_stop_the_watchdog():
    fake = _FakeConnection()
    remote = Remote(fake, Target(address="m.example.com"))
    remote.watchdog = LinkWatchdog(SimpleNamespace(is_active=lambda: True), interval=60)
    assert remote.sftp() is fake.sftp_client
    assert fake.sftp_channel.timeout == conn.SFTP_IDLE_TIMEOUT  # a stuck sftp-server cannot hang a restore
    with remote:
        pass
    assert fake.closed and remote.watchdog.stopped.is_set()


# --- the dead-link watchdog ----------------------------------------------------------------------

def test_connect_starts_a_watchdog_that_close_stops(server, tmp_path, keys, client_key_file):
    remote = connect(target_for(server, tmp_path, client_key_file, known=keys.host))
    watchdog = remote.watchdog
    assert watchdog.is_alive() and watchdog.transport is remote.connection.transport
    remote.close()
    watchdog.join(timeout=2)
    assert not watchdog.is_alive() and not watchdog.declared_dead


def test_a_live_master_answers_the_watchdog(remote, server):
    # Bounds far above an answer's time: on two busy cores (a CI run beside it) a 2 s bound once failed.
    watchdog = LinkWatchdog(remote.connection.transport, interval=0.05, dead_after=15)
    watchdog.start()
    deadline = time.monotonic() + 15
    while server.global_requests.count("keepalive@openssh.com") < 2:
        assert time.monotonic() < deadline, "no keepalive reached the master"
        time.sleep(0.02)
    watchdog.stop()
    watchdog.join(timeout=2)
    assert not watchdog.declared_dead and remote.connection.transport.is_active()
    assert remote.run("echo still here").stdout == "still here\n"


class _SilentTransport:
    """A transport whose peer vanished: a keepalive never gets an answer."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.requests = 0

    def is_active(self):
        return not self.closed.is_set()

    def global_request(self, kind, wait=True):
        self.requests += 1
        self.closed.wait(5)

    def close(self):
        self.closed.set()


def test_no_answer_within_dead_after_closes_the_transport():
    transport = _SilentTransport()
    watchdog = LinkWatchdog(transport, interval=0.01, dead_after=0.1)
    watchdog.start()
    watchdog.join(timeout=3)
    assert not watchdog.is_alive()
    assert watchdog.declared_dead and transport.closed.is_set() and transport.requests == 1


def test_a_stopped_watchdog_declares_nothing():
    transport = _SilentTransport()
    watchdog = LinkWatchdog(transport, interval=0.01, dead_after=0.3)
    watchdog.start()
    time.sleep(0.05)
    watchdog.stop()
    watchdog.join(timeout=3)
    assert not watchdog.declared_dead and not transport.closed.is_set()
    transport.close()


def test_the_watchdog_ends_when_the_transport_closes():
    transport = _SilentTransport()
    transport.close()
    watchdog = LinkWatchdog(transport, interval=0.01, dead_after=0.1)
    watchdog.start()
    watchdog.join(timeout=2)
    assert not watchdog.is_alive() and not watchdog.declared_dead and transport.requests == 0


# --- the run lock, held by a command on its own channel (pe_remote.lock over Remote.hold) -----------

@pytest.fixture
def lock_folders(tmp_path):
    if subprocess.run(["sh", "-c", "command -v flock"], capture_output=True).returncode != 0:
        pytest.skip("flock(1) is not installed here")
    return (str(tmp_path / "no-such-folder"), str(tmp_path))


def test_the_lock_over_ssh_keeps_a_second_run_out_until_released(server, tmp_path, keys, client_key_file,
                                                                 lock_folders):
    from pe_remote import lock
    from pe_remote.errors import Refused

    target = target_for(server, tmp_path, client_key_file, known=keys.host)
    with connect(target) as first, connect(target) as second:
        with lock.acquire(first, "regen", folders=lock_folders) as held:
            assert isinstance(held, lock.MasterLock)
            with pytest.raises(Refused) as info:
                lock.acquire(second, "verify", folders=lock_folders)
            assert info.value.exit_code == 4
            assert f"another run holds 127.0.0.1:{server.port}: pe-remote regen by" in str(info.value)
            assert "nothing was changed" in str(info.value)
        deadline = time.monotonic() + 5
        while True:  # released on leaving the `with`: the next run gets in
            try:
                lock.acquire(second, "regen", folders=lock_folders).release()
                break
            except Refused:
                assert time.monotonic() < deadline, "the lock was not released"
                time.sleep(0.05)


class _HoldRemote:
    """A remote whose `hold` runs the lock script in a local shell, as the master's sshd would."""

    target = Target(address="master.example.com")

    def __init__(self, first_line: str | None = None) -> None:
        self.first_line = first_line
        self.held: list = []

    def hold(self, command):
        if self.first_line is not None:
            held = _Channel()
            self.held.append(held)
            return self.first_line, HeldCommand(held)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = proc.stdout.readline().decode().strip()

        class Held:
            def close(self):
                proc.stdin.close()
                proc.wait(timeout=5)
                self.closed = True

        held = Held()
        self.held.append(held)
        return line, held


def test_without_a_lock_folder_the_run_goes_on_with_a_warning(tmp_path):
    from pe_remote import lock
    from pe_remote.console import Console

    out = io.StringIO()
    remote = _HoldRemote()
    held = lock.acquire(remote, "regen", Console(out, interactive=False), folders=(str(tmp_path / "none"),))
    assert "WARNING: master.example.com has no flock(1): pe-remote cannot keep a second run out" in out.getvalue()
    held.release()
    held.release()  # a second release is harmless
    assert getattr(remote.held[0], "closed", False)


def test_without_a_lock_folder_and_no_console_nothing_is_printed(tmp_path, capsys):
    from pe_remote import lock

    lock.acquire(_HoldRemote(), "regen", folders=(str(tmp_path / "none"),)).release()
    assert capsys.readouterr().out == ""


def test_an_answer_that_is_not_the_lock_scripts_is_refused_and_the_command_closed():
    from pe_remote import lock
    from pe_remote.errors import Refused

    remote = _HoldRemote(first_line="sh: 1: something unexpected")
    with pytest.raises(Refused):
        lock.acquire(remote, "regen")
    assert remote.held[0].calls == ["shutdown_write", "close"]


def test_the_owner_names_an_unknown_user_as_a_question_mark(monkeypatch):
    from pe_remote import lock

    def no_user():
        raise KeyError("no passwd entry")

    monkeypatch.setattr(lock.getpass, "getuser", no_user)
    text = lock.owner_text("regen")
    assert text.startswith(f"pe-remote regen by ?@{socket.gethostname()} (pid ")
    assert text.endswith("Z")
