"""stream_backup (the backup as `regen` and `backup` take it): success, tar failure, corruption, lost connection.

The remote is the real `Remote` (its `stream` is the only way the backup travels); only the SSH channel
underneath is a double, running the command in a local `sh` (channel-level, as fabric.testing mocks)."""
import dataclasses, hashlib, subprocess, threading
from pathlib import Path
import pytest
import pe_remote.backup as backup
from pe_remote.backup import Backup, sha256_file, stream_backup, take_backup
from pe_remote.connection import Remote
from pe_remote.errors import BackupError, ConnectionFailed
from pe_remote.inventory import Target
from test_unit_backup_verify import RECORDED, mode, leftovers


class LocalChannel:
    """A channel whose command runs in a local `sh`; `cut_after` bytes of stdout simulate a lost connection."""
    def __init__(self, cut_after=None, tamper=False):
        self.cut_after, self.tamper = cut_after, tamper
        self.status_event = threading.Event()
    def settimeout(self, t): pass
    def exec_command(self, command):
        self.command = command
        proc = subprocess.run(["sh", "-c", command], capture_output=True)
        self.out, self.err, self.rc = proc.stdout, proc.stderr, proc.returncode
        if self.tamper: self.out = self.out[:-1] + bytes([self.out[-1] ^ 1])
        if self.cut_after is not None: self.out, self.err, self.rc = self.out[:self.cut_after], b"", -1
        self.status_event.set()
    def recv(self, n):
        data, self.out = self.out[:min(n, 1000)], self.out[min(n, 1000):]
        return data
    def recv_stderr_ready(self): return False
    def recv_stderr(self, n):
        data, self.err = self.err[:n], self.err[n:]
        return data
    def recv_exit_status(self): return self.rc
    def close(self): pass


class LocalTransport:
    def __init__(self, **channel_kwargs):  # no socket: only what Remote.stream uses
        self.channel_kwargs, self.active, self.channels = channel_kwargs, True, []
    def is_active(self): return self.active
    def open_session(self, window_size=None, max_packet_size=None, timeout=None):
        self.channels.append(LocalChannel(**self.channel_kwargs))
        return self.channels[-1]


class _Connection:
    def __init__(self, transport):
        self.transport = transport
    def run(self, *a, **k): raise AssertionError("the streamed backup runs no other command")


class StreamRemote(Remote):
    def __init__(self, **channel_kwargs):
        super().__init__(_Connection(LocalTransport(**channel_kwargs)), Target("m.example"))
        self.seen = []


def tree(tmp_path):
    ssl = tmp_path / "master" / "ssl"
    (ssl / "certs").mkdir(parents=True)
    (ssl / "certs" / "m.pem").write_text("cert\n" * 5000)
    # Random bytes gzip does not shrink: the tarball outgrows a small local disk.
    (ssl / "certs" / "big.bin").write_bytes(__import__("os").urandom(200_000))
    return dataclasses.replace(RECORDED, ssldir=str(ssl), cadir=str(ssl / "ca"))


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(backup, "REMOTE_BACKUP_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_stream_backup_end_to_end(tmp_path, state):
    facts, remote = tree(tmp_path), StreamRemote()
    remote.on_command = remote.seen.append
    result = take_backup(remote, facts, tmp_path / "local" / "host")
    assert isinstance(result, Backup)
    assert remote.commands_run == 1 and remote.seen == [remote.connection.transport.channels[0].command]
    assert result.local_path.read_bytes() == Path(result.remote.path).read_bytes()
    assert sha256_file(result.local_path) == result.sha256 == hashlib.sha256(Path(result.remote.path).read_bytes()).hexdigest()
    assert result.remote.size == result.local_path.stat().st_size
    assert mode(result.local_path) == 0o600 and mode(result.local_path.parent) == 0o700
    assert mode(Path(result.remote.path)) == 0o600 and mode(state) == 0o700
    assert (result.local_path.parent / (result.local_path.name + ".sha256")).read_text() == f"{result.sha256}  {result.local_path.name}\n"
    assert sorted(p.name for p in state.iterdir()) == [result.local_path.name]  # no .partial, no .rc
    assert leftovers(result.local_path.parent) == []


def test_stream_backup_tar_failure(tmp_path, state):
    facts = dataclasses.replace(RECORDED, ssldir=str(tmp_path / "missing"), cadir=str(tmp_path / "missing" / "ca"))
    with pytest.raises(BackupError, match="could not create the SSL backup.*tar exit status 2"):
        stream_backup(StreamRemote(), facts, tmp_path / "local")
    assert list((tmp_path / "local").iterdir()) == []
    assert list(state.iterdir()) == []


def test_stream_backup_corrupted_in_transit(tmp_path, state):
    with pytest.raises(BackupError, match="does not match") as info:
        stream_backup(StreamRemote(tamper=True), tree(tmp_path), tmp_path / "local")
    assert str(state) in str(info.value)
    assert list((tmp_path / "local").iterdir()) == []


def test_stream_backup_connection_lost(tmp_path, state):
    with pytest.raises(ConnectionFailed, match="during the backup"):
        stream_backup(StreamRemote(cut_after=100), tree(tmp_path), tmp_path / "local")
    assert list((tmp_path / "local").iterdir()) == []


def test_stream_backup_refuses_to_overwrite_before_running_anything(tmp_path, state):
    folder = tmp_path / "local"; folder.mkdir()
    (folder / "b.tar.gz").write_bytes(b"older")
    remote = StreamRemote()
    with pytest.raises(BackupError, match="exists already"):
        stream_backup(remote, tree(tmp_path), folder, name="b.tar.gz")
    assert remote.connection.transport.channels == [] and remote.commands_run == 0


def _tar_that_sees_changes(tmp_path, monkeypatch, times):
    """A `tar` first in PATH that fails `times` times as GNU tar does when a file changes under it."""
    fake = tmp_path / "fakebin"; fake.mkdir()
    count = tmp_path / "tar-calls"
    (fake / "tar").write_text(
        "#!/bin/sh\n"
        f"n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n"
        f"if [ $n -le {times} ]; then echo partial; echo 'tar: ssl: file changed as we read it' >&2; exit 1; fi\n"
        "exec /usr/bin/tar \"$@\"\n")
    (fake / "tar").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    monkeypatch.setattr(backup, "BACKUP_RETRY_PAUSE", 0)
    return count


def test_backup_is_taken_again_when_a_file_changed_while_tar_read_it(tmp_path, state, monkeypatch):
    calls = _tar_that_sees_changes(tmp_path, monkeypatch, times=2)
    remote = StreamRemote()
    result = take_backup(remote, tree(tmp_path), tmp_path / "local" / "host")
    assert calls.read_text().strip() == "3" and remote.commands_run == 3
    assert sha256_file(result.local_path) == result.sha256
    assert sorted(p.name for p in state.iterdir()) == [result.local_path.name]  # no partial of the failed tries
    assert leftovers(result.local_path.parent) == []


def test_backup_gives_up_when_the_folder_keeps_changing(tmp_path, state, monkeypatch):
    from pe_remote.errors import BackupChanged
    _tar_that_sees_changes(tmp_path, monkeypatch, times=99)
    with pytest.raises(BackupChanged, match="3 attempts.*stop the agent service"):
        take_backup(StreamRemote(), tree(tmp_path), tmp_path / "local" / "host")
    assert list((tmp_path / "local" / "host").iterdir()) == [] and list(state.iterdir()) == []


def test_a_full_local_disk_is_a_backup_error_not_a_lost_connection(tmp_path, state):
    """Before: ENOSPC while writing the local copy came out as exit 3 ('SSH failed')."""
    folder = tmp_path / "local"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        with pytest.raises(BackupError, match="could not write the backup on this machine") as info:
            stream_backup(StreamRemote(), tree(tmp_path), folder / "host")
        assert info.value.exit_code == 6 and "--backup-dir" in str(info.value)
        assert leftovers(folder / "host") == []
    finally:
        subprocess.run(["umount", str(folder)], check=True)
