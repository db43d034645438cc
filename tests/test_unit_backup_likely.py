"""`backup` on its own: the tarball of the likely folders streams while discovery runs.

Covers `pe_remote.backup.backup_while_discovering`, `_stream_likely` and `_forget`, and the commands
behind them in `pe_remote.commands.backup` (`stream_likely_tarball`, `_stream`, `move_unless_there`,
`remove`).

Two kinds of remote:
- `LikelyRemote` (tests/fakes.FakeRemote plus a scripted `stream`): each stream answer is the bytes
  the "master" sends and the stderr it prints, so every outcome (confirmed, other folders, failed,
  corrupt) is chosen by the test.
- `ShellRemote` (the real `Remote` over test_unit_backup_stream's local-`sh` channel, with `run` in a
  local `sh` too): the real commands run against a folder layout under tmp_path.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import logging
import os
import shlex
import subprocess
import tarfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

import pe_remote.backup as backup
from pe_remote.backup import Backup, RemoteBackup, backup_paths, backup_while_discovering
from pe_remote.commands import backup as commands
from pe_remote.commands.sections import marker
from pe_remote.errors import BackupError, ConnectionFailed, DiscoveryError, Refused, RemoteCommandFailed
from pe_remote.flavors import COPY_DIRS, LIKELY_CADIRS, LIKELY_SSLDIRS
from fakes import FakeRemote, in_shell
from test_unit_backup_stream import StreamRemote
from test_unit_backup_verify import PE37_FACTS, RECORDED, leftovers, mode

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
STAMP = "20260102T030405Z"
PAYLOAD = b"pretend this is a gzip tarball\n" * 3000  # ~93 kB: several chunks
FINAL_NAME = f"{STAMP}-{RECORDED.certname}-ssl.tar.gz"


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return WHEN


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """backup_while_discovering names its scratch and final files from `datetime.now`: fix it."""
    monkeypatch.setattr(backup, "datetime", _FixedDatetime)


@pytest.fixture
def state(tmp_path, monkeypatch):
    """The master's backup folder (REMOTE_BACKUP_DIR), under tmp_path."""
    monkeypatch.setattr(backup, "REMOTE_BACKUP_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def scratch_of(state_dir) -> str:
    return f"{state_dir}/.{STAMP}-unconfirmed-ssl.tar.gz"


def sums(payload: bytes) -> str:
    """What `_stream` prints last on stderr: the sha256sum of stdin, then `stat -c %s`."""
    return f"{hashlib.sha256(payload).hexdigest()}  -\n{len(payload)}\n"


def likely_stderr(paths, payload: bytes = PAYLOAD, *, tar_warnings: str = "") -> str:
    """stderr of `stream_likely_tarball` that worked: the chosen folders, then the tar section."""
    return (f"{marker('paths')}\n" + "".join(f"{p}\n" for p in paths)
            + f"{marker('tar')}\n{tar_warnings}{sums(payload)}")


class LikelyRemote(FakeRemote):
    """FakeRemote (run) plus `stream`: each call takes the next answer, `(payload, status, stderr)`
    or an exception to raise after half of the payload was written. `events` keeps the order of
    run and stream calls."""

    def __init__(self, *answers, respond=None):
        super().__init__(respond)
        self.answers = list(answers)
        self.streamed: list[tuple[str, dict]] = []
        self.events: list[tuple[str, str]] = []

    def run(self, command, *, check=True, timeout=None):
        self.events.append(("run", command))
        return super().run(command, check=check, timeout=timeout)

    def stream(self, command, sink, *, window, chunk, idle_timeout, what):
        self.events.append(("stream", command))
        self.streamed.append((command, {"window": window, "chunk": chunk, "idle_timeout": idle_timeout,
                                        "what": what}))
        assert self.answers, f"unexpected stream: {command[:80]}"
        answer = self.answers.pop(0)
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            sink.write(PAYLOAD[:len(PAYLOAD) // 2])
            raise answer
        payload, status, stderr = answer
        for start in range(0, len(payload), 32768):
            sink.write(payload[start:start + 32768])
        return status, stderr


def failing_mv(command, index, kwargs):
    if command.startswith("[ ! -e"):
        raise RemoteCommandFailed(command, 1, "")
    return None


class Recorder:
    """Stands in for `take_backup`: records its arguments, returns a marker Backup."""

    def __init__(self):
        self.calls = []
        self.result = Backup(RemoteBackup("/state/taken-again.tar.gz", "0" * 64, 1), Path("/local/taken-again"))

    def __call__(self, remote, facts, folder):
        self.calls.append((remote, facts, folder))
        return self.result


@pytest.fixture
def taken_again(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(backup, "take_backup", recorder)
    return recorder


def local_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- backup_while_discovering: the guess confirmed ----------------------------------------------

def test_confirmed_guess_becomes_the_backup(tmp_path, state, taken_again):
    facts = RECORDED
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(facts))))
    folder = tmp_path / "local" / "host"

    got_facts, result = backup_while_discovering(remote, folder, lambda: facts)

    scratch, final_remote = scratch_of(state), f"{state}/{FINAL_NAME}"
    assert got_facts is facts
    assert result == Backup(RemoteBackup(final_remote, hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD)),
                            folder / FINAL_NAME)
    assert result.local_path.read_bytes() == PAYLOAD
    assert mode(result.local_path) == 0o600 and mode(folder) == 0o700
    sidecar = folder / f"{FINAL_NAME}.sha256"
    assert sidecar.read_text() == f"{result.sha256}  {FINAL_NAME}\n" and mode(sidecar) == 0o600
    assert local_files(folder) == [FINAL_NAME, f"{FINAL_NAME}.sha256"]  # no .partial left
    # One stream (the likely folders, to the hidden scratch name), then the rename on the master.
    assert remote.streamed[0][0] == commands.stream_likely_tarball(LIKELY_SSLDIRS, LIKELY_CADIRS, COPY_DIRS, scratch)
    assert remote.streamed[0][1] == {"window": backup.STREAM_WINDOW, "chunk": backup.STREAM_CHUNK,
                                     "idle_timeout": backup.STREAM_IDLE_TIMEOUT, "what": "the backup"}
    assert os.path.basename(scratch).startswith(".") and os.path.dirname(scratch) == str(state)
    assert remote.commands == [commands.move_unless_there(scratch, final_remote)]
    assert remote.calls[0][1]["check"] is True
    assert taken_again.calls == [] and len(remote.streamed) == 1


def test_tar_warnings_before_the_sums_do_not_spoil_a_confirmed_guess(tmp_path, state, taken_again):
    stderr = likely_stderr(backup_paths(RECORDED), tar_warnings="tar: some warning\n")
    remote = LikelyRemote((PAYLOAD, 0, stderr))
    _, result = backup_while_discovering(remote, tmp_path / "local", lambda: RECORDED)
    assert result.local_path.read_bytes() == PAYLOAD and taken_again.calls == []


def test_confirmed_guess_with_the_ca_inside_the_ssldir_and_copy_dirs(tmp_path, state, taken_again):
    facts = dataclasses.replace(PE37_FACTS, copy_dirs=COPY_DIRS)
    assert backup_paths(facts) == ["/etc/puppetlabs/puppet/ssl", *COPY_DIRS]
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(facts))))
    _, result = backup_while_discovering(remote, tmp_path / "local", lambda: facts)
    assert result.local_path.name == f"{STAMP}-{facts.certname}-ssl.tar.gz"
    assert taken_again.calls == [] and remote.commands == [
        commands.move_unless_there(scratch_of(state), f"{state}/{result.local_path.name}")]


def test_discovery_runs_while_the_tarball_streams(tmp_path, state, taken_again):
    """Overlap, not one after the other: each side waits for the other to have started."""
    streaming, discovered = threading.Event(), threading.Event()
    threads = {}

    def answer():
        streaming.set()
        threads["stream"] = threading.current_thread()
        assert discovered.wait(5), "the stream ran before discovery started"
        return PAYLOAD, 0, likely_stderr(backup_paths(RECORDED))

    def discover():
        threads["discover"] = threading.current_thread()
        assert streaming.wait(5), "discovery ran before the stream started"
        discovered.set()
        return RECORDED

    remote = LikelyRemote(answer)
    _, result = backup_while_discovering(remote, tmp_path / "local", discover)
    assert threads["stream"] is not threads["discover"]
    assert result.local_path.read_bytes() == PAYLOAD


# --- backup_while_discovering: the guess not confirmed -------------------------------------------

@pytest.mark.parametrize("facts, chosen", [
    pytest.param(RECORDED, ["/etc/puppetlabs/puppet/ssl", "/etc/puppetlabs/puppetserver/ca"],
                 id="other-ssldir"),
    pytest.param(PE37_FACTS, ["/etc/puppetlabs/puppet/ssl", "/etc/puppetlabs/puppetserver/ca"],
                 id="extra-ca-dir"),
    pytest.param(dataclasses.replace(PE37_FACTS, copy_dirs=COPY_DIRS), ["/etc/puppetlabs/puppet/ssl"],
                 id="copy-dir-missing"),
    pytest.param(PE37_FACTS, [], id="nothing-chosen"),
])
def test_other_folders_than_discovery_names_mean_taking_it_again(tmp_path, state, taken_again, caplog,
                                                                   facts, chosen):
    assert chosen != backup_paths(facts)
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(chosen)))
    folder = tmp_path / "local"
    caplog.set_level(logging.INFO, logger="pe_remote.backup")

    got_facts, result = backup_while_discovering(remote, folder, lambda: facts)

    scratch = scratch_of(state)
    assert got_facts is facts and result is taken_again.result
    assert taken_again.calls == [(remote, facts, folder)]
    assert remote.calls == [(commands.remove(scratch), {"check": False, "timeout": None})]
    assert local_files(folder) == []  # the local partial is gone
    assert "taking it again of " + ", ".join(backup_paths(facts)) in caplog.text


def test_taking_it_again_streams_discoverys_folders(tmp_path, state):
    """Real take_backup, through the fake's second stream: discovery's folders, after the scratch is removed."""
    facts = RECORDED
    second = b"the backup of discovery's folders\n" * 100
    final_remote = f"{state}/{FINAL_NAME}"
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(["/etc/puppetlabs/puppet/ssl"])),
                          (second, 0, sums(second)))
    folder = tmp_path / "local"

    _, result = backup_while_discovering(remote, folder, lambda: facts)

    assert [kind for kind, _ in remote.events] == ["stream", "run", "stream"]
    assert remote.events[1] == ("run", commands.remove(scratch_of(state)))
    assert remote.streamed[1][0] == commands.stream_tarball(backup_paths(facts), final_remote)
    assert result.remote == RemoteBackup(final_remote, hashlib.sha256(second).hexdigest(), len(second))
    assert result.local_path.read_bytes() == second
    assert local_files(folder) == [FINAL_NAME, f"{FINAL_NAME}.sha256"]


@pytest.mark.parametrize("status, stderr, why", [
    pytest.param(3, "pe-remote: no SSL folder where Puppet usually keeps it\n", "exit 3", id="no-ssldir"),
    pytest.param(1, f"{marker('paths')}\n/var/lib/puppet/ssl\n/etc/puppet/puppetserver/ca\n{marker('tar')}\n"
                    "tar: var/lib/puppet/ssl/crl.pem: file changed as we read it\n"
                    "pe-remote: the backup was not made (tar exit status 1)\n", "file changed", id="file-changed"),
    pytest.param(0, f"{marker('paths')}\n/var/lib/puppet/ssl\n/etc/puppet/puppetserver/ca\n{marker('tar')}\n"
                    "not a sum\n", "unexpected output", id="no-sums"),
    pytest.param(0, "", "unexpected output", id="no-sections"),
])
def test_a_failed_stream_means_taking_it_again(tmp_path, state, taken_again, caplog, status, stderr, why):
    remote = LikelyRemote((PAYLOAD[:100], status, stderr))
    folder = tmp_path / "local"
    caplog.set_level(logging.INFO, logger="pe_remote.backup")

    facts, result = backup_while_discovering(remote, folder, lambda: RECORDED)

    assert result is taken_again.result and taken_again.calls == [(remote, RECORDED, folder)]
    assert remote.commands == [commands.remove(scratch_of(state))]
    assert local_files(folder) == []
    assert why in caplog.text


# --- backup_while_discovering: errors ------------------------------------------------------------

@pytest.mark.parametrize("error", [Refused("not root"), DiscoveryError("no puppet")], ids=["refused", "discovery"])
def test_a_discovery_error_propagates_and_the_scratch_is_removed(tmp_path, state, taken_again, error):
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(RECORDED))))
    folder = tmp_path / "local"

    def discover():
        raise error

    with pytest.raises(type(error)) as info:
        backup_while_discovering(remote, folder, discover)

    assert info.value is error
    assert remote.commands == [commands.remove(scratch_of(state))]
    assert remote.calls[0][1]["check"] is False
    assert local_files(folder) == [] and taken_again.calls == []


def test_a_lost_connection_during_the_stream_propagates_and_cleans_up(tmp_path, state, taken_again):
    remote = LikelyRemote(ConnectionFailed("lost the SSH connection to m during the backup"))
    folder = tmp_path / "local"
    with pytest.raises(ConnectionFailed, match="during the backup"):
        backup_while_discovering(remote, folder, lambda: RECORDED)
    assert remote.commands == [commands.remove(scratch_of(state))]
    assert local_files(folder) == [] and taken_again.calls == []


def test_the_discovery_error_wins_over_a_failed_cleanup(tmp_path, state, caplog):
    def respond(command, index, kwargs):
        raise ConnectionFailed("gone")

    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(RECORDED))), respond=respond)

    def discover():
        raise Refused("not root")

    with pytest.raises(Refused, match="not root"):
        backup_while_discovering(remote, tmp_path / "local", discover)
    assert "could not delete the scratch tarball" in caplog.text
    assert local_files(tmp_path / "local") == []


def test_bytes_that_do_not_match_the_masters_sha256_are_not_kept(tmp_path, state, taken_again):
    corrupt = PAYLOAD[:-1] + b"X"
    remote = LikelyRemote((corrupt, 0, likely_stderr(backup_paths(RECORDED), PAYLOAD)))
    folder = tmp_path / "local"

    with pytest.raises(BackupError, match="does not match the master's copy") as info:
        backup_while_discovering(remote, folder, lambda: RECORDED)

    final_remote = f"{state}/{FINAL_NAME}"
    assert f"kept at {final_remote}" in str(info.value)
    assert remote.commands == [commands.move_unless_there(scratch_of(state), final_remote)]
    assert local_files(folder) == [] and taken_again.calls == []


def test_a_size_that_does_not_match_is_not_kept(tmp_path, state, taken_again):
    stderr = likely_stderr(backup_paths(RECORDED)).replace(f"\n{len(PAYLOAD)}\n", f"\n{len(PAYLOAD) + 1}\n")
    remote = LikelyRemote((PAYLOAD, 0, stderr))
    with pytest.raises(BackupError, match=f"{len(PAYLOAD)} vs {len(PAYLOAD) + 1} bytes"):
        backup_while_discovering(remote, tmp_path / "local", lambda: RECORDED)
    assert local_files(tmp_path / "local") == []


def test_a_failed_rename_on_the_master_is_a_backup_error_and_the_scratch_is_deleted(tmp_path, state, taken_again):
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(RECORDED))), respond=failing_mv)
    folder = tmp_path / "local"

    with pytest.raises(BackupError) as info:
        backup_while_discovering(remote, folder, lambda: RECORDED)

    assert f"{state}/{FINAL_NAME}" in str(info.value) and "there already" in str(info.value)
    assert remote.commands[-1] == commands.remove(scratch_of(state))  # the scratch is not left behind
    assert local_files(folder) == [] and taken_again.calls == []


def test_an_existing_local_backup_is_not_overwritten(tmp_path, state, taken_again):
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / FINAL_NAME).write_bytes(b"older")
    remote = LikelyRemote((PAYLOAD, 0, likely_stderr(backup_paths(RECORDED))))

    with pytest.raises(BackupError, match="exists already"):
        backup_while_discovering(remote, folder, lambda: RECORDED)

    assert (folder / FINAL_NAME).read_bytes() == b"older"
    assert not any(c.startswith("[ ! -e") for c in remote.commands)  # nothing renamed on the master
    assert remote.commands[-1] == commands.remove(scratch_of(state))  # and its scratch deleted
    assert local_files(folder) == [FINAL_NAME]


# --- _forget ------------------------------------------------------------------------------------

def test_forget_removes_the_scratch_without_checking():
    remote = FakeRemote()
    backup._forget(remote, "/state/.x.tar.gz")
    assert remote.calls == [(commands.remove("/state/.x.tar.gz"), {"check": False, "timeout": None})]


@pytest.mark.parametrize("error", [ConnectionFailed("gone"), RemoteCommandFailed("rm", 1, "busy")],
                         ids=["connection", "command"])
def test_forget_swallows_a_remote_error_and_warns(caplog, error):
    def respond(command, index, kwargs):
        raise error

    remote = FakeRemote(respond)
    with caplog.at_level(logging.WARNING, logger="pe_remote.backup"):
        backup._forget(remote, "/state/.x.tar.gz")
    assert remote.commands_run == 1
    [record] = [r for r in caplog.records if r.name == "pe_remote.backup"]
    assert record.levelno == logging.WARNING
    assert "/state/.x.tar.gz" in record.getMessage() and str(error) in record.getMessage()


# --- the commands, as text ----------------------------------------------------------------------

def words(command: str) -> list[str]:
    """The shell words of `command` (quotes removed; ; && | { } as their own tokens)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


ODD = ("/a b/ssl", "/it's/ssl")


def test_stream_likely_tarball_quotes_every_candidate_and_marks_its_sections():
    command = commands.stream_likely_tarball(ODD, ("/c a/ca",), ("/copy $(x)",), "/st ate/.s.tgz")
    tokens = words(command)
    for value in (*ODD, "/c a/ca", "/copy $(x)"):
        assert shlex.quote(value) in command and value in tokens
    assert "set --;" in command and "set -- \"$@\"" in command
    assert f"echo {shlex.quote(marker('paths'))}" in command and f"echo {shlex.quote(marker('tar'))}" in command
    assert command.index(marker("paths")) < command.index(marker("tar"))
    for value in ("/st ate/.s.tgz", "/st ate/.s.tgz.partial", "/st ate/.s.tgz.rc", "/st ate"):
        assert value in tokens


def test_stream_tarball_quotes_paths_with_a_space_or_a_quote():
    command = commands.stream_tarball(["/a b/ssl", "/it's/ca"], "/root/x y.tgz")
    assert "set -- 'a b/ssl' 'it'\"'\"'s/ca'\n" in command
    tokens = words(command)
    assert tokens[:4] == ["set", "--", "a b/ssl", "it's/ca"]
    for value in ("/root/x y.tgz", "/root/x y.tgz.partial", "/root/x y.tgz.rc"):
        assert shlex.quote(value) in command and value in tokens


def test_stream_starts_with_the_members_line():
    command = commands._stream("set -- 'x'", "/s/b.tgz")
    assert command.startswith("set -- 'x'\numask 077 && mkdir -p /s && chmod 700 /s && ")
    assert 'tar -czf - -C / "$@"' in command


def test_move_unless_there_refuses_to_overwrite():
    source, target = "/s/.a b.tgz", "/s/it's.tgz"
    command = commands.move_unless_there(source, target)
    assert command == f"[ ! -e {shlex.quote(target)} ] && mv {shlex.quote(source)} {shlex.quote(target)}"
    assert words(command) == ["[", "!", "-e", target, "]", "&&", "mv", source, target]


def test_remove_deletes_the_partial_and_rc_too():
    assert words(commands.remove("/s/.a b.tgz")) == ["rm", "-f", "/s/.a b.tgz", "/s/.a b.tgz.partial", "/s/.a b.tgz.rc"]


# --- the commands, run in a local sh ------------------------------------------------------------

def test_move_unless_there_in_sh(tmp_path):
    source, target = tmp_path / ".a b.tgz", tmp_path / "it's.tgz"
    source.write_text("new")
    target.write_text("old")
    assert not in_shell(commands.move_unless_there(str(source), str(target))).ok
    assert target.read_text() == "old" and source.read_text() == "new"
    target.unlink()
    assert in_shell(commands.move_unless_there(str(source), str(target))).ok
    assert target.read_text() == "new" and not source.exists()


def test_remove_in_sh(tmp_path):
    path = tmp_path / ".a b.tgz"
    for name in (path.name, path.name + ".partial", path.name + ".rc", "other"):
        (tmp_path / name).write_text("x")
    assert in_shell(commands.remove(str(path))).ok
    assert local_files(tmp_path) == ["other"]
    assert in_shell(commands.remove(str(path))).ok  # nothing there: still fine


def layout(root: Path) -> dict:
    """Candidate folders under `root`: the first ssldir has no certs/, the first cadir no CA cert; the
    first match of each wins (the third ssldir and cadir would do too)."""
    (root / "ssl0").mkdir(parents=True)  # no certs/: skipped
    (root / "it's ssl" / "certs").mkdir(parents=True)
    (root / "it's ssl" / "certs" / "m.pem").write_text("cert\n")
    (root / "ssl2" / "certs").mkdir(parents=True)  # also fine, but after the first match
    (root / "ca0").mkdir()  # no ca_crt.pem: skipped
    (root / "ca 1").mkdir()
    (root / "ca 1" / "ca_crt.pem").write_text("ca\n")
    (root / "ca2").mkdir()  # also a CA, but after the first match
    (root / "ca2" / "ca_crt.pem").write_text("other ca\n")
    (root / "copy1").mkdir()
    (root / "copy1" / "k.pem").write_text("key\n")
    return {
        "ssldirs": tuple(str(root / n) for n in ("ssl0", "it's ssl", "ssl2")),
        "cadirs": tuple(str(root / n) for n in ("ca0", "ca 1", "ca2")),
        "copy_dirs": tuple(str(root / n) for n in ("copy1", "copy-missing")),
        "chosen": [str(root / "it's ssl"), str(root / "ca 1"), str(root / "copy1")],
    }


def run_sh(command: str, tmpdir: Path) -> subprocess.CompletedProcess:
    tmpdir.mkdir(exist_ok=True)
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={**os.environ, "TMPDIR": str(tmpdir)})


def test_stream_likely_tarball_in_sh(tmp_path):
    c = layout(tmp_path / "m")
    remote_path = tmp_path / "state" / ".s.tgz"
    proc = run_sh(commands.stream_likely_tarball(c["ssldirs"], c["cadirs"], c["copy_dirs"], str(remote_path)),
                  tmp_path / "t")

    assert proc.returncode == 0, proc.stderr
    errors = proc.stderr.decode().splitlines()
    assert errors[:5] == [marker("paths"), *c["chosen"], marker("tar")]
    assert errors[-2:] == [f"{hashlib.sha256(proc.stdout).hexdigest()}  -", str(len(proc.stdout))]
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:gz") as tar:
        names = set(tar.getnames())
    rel = [p.lstrip("/") for p in c["chosen"]]
    rel_others = [str(tmp_path / "m" / n).lstrip("/") for n in ("ssl0", "ssl2", "ca0", "ca2")]
    assert {f"{rel[0]}/certs/m.pem", f"{rel[1]}/ca_crt.pem", f"{rel[2]}/k.pem"} <= names
    assert not any(n.startswith(other) for n in names for other in rel_others)
    # The master's copy: the same bytes, 0600 in a 0700 folder; no .partial, .rc or FIFO folder left.
    assert remote_path.read_bytes() == proc.stdout
    assert mode(remote_path) == 0o600 and mode(remote_path.parent) == 0o700
    assert local_files(remote_path.parent) == [".s.tgz"]
    assert local_files(tmp_path / "t") == []


def test_stream_likely_tarball_in_sh_without_a_ca_or_copy_dirs(tmp_path):
    c = layout(tmp_path / "m")
    remote_path = tmp_path / "state" / "s.tgz"
    proc = run_sh(commands.stream_likely_tarball(c["ssldirs"], (str(tmp_path / "none"),), (), str(remote_path)),
                  tmp_path / "t")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().splitlines()[:3] == [marker("paths"), c["chosen"][0], marker("tar")]
    assert gzip.decompress(proc.stdout)  # a real gzip stream
    assert local_files(remote_path.parent) == ["s.tgz"] and local_files(tmp_path / "t") == []


def test_stream_likely_tarball_in_sh_without_an_ssldir(tmp_path):
    remote_path = tmp_path / "state" / "s.tgz"
    proc = run_sh(commands.stream_likely_tarball((str(tmp_path / "no"),), (), (), str(remote_path)), tmp_path / "t")
    assert proc.returncode == 3
    assert proc.stdout == b"" and b"no SSL folder" in proc.stderr
    assert not remote_path.parent.exists() and local_files(tmp_path / "t") == []


def test_stream_tarball_in_sh_with_odd_names(tmp_path):
    ssl = tmp_path / "a b" / "it's ssl"
    (ssl / "certs").mkdir(parents=True)
    (ssl / "certs" / "m.pem").write_text("cert\n")
    remote_path = tmp_path / "st ate" / "x y.tgz"
    proc = run_sh(commands.stream_tarball([str(ssl)], str(remote_path)), tmp_path / "t")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:gz") as tar:
        assert f"{str(ssl).lstrip('/')}/certs/m.pem" in tar.getnames()
    assert remote_path.read_bytes() == proc.stdout
    assert local_files(remote_path.parent) == ["x y.tgz"]


# --- backup_while_discovering end to end, the commands run in a local sh ------------------------

class ShellRemote(StreamRemote):
    """The real Remote: `stream` over test_unit_backup_stream's local-sh channel, `run` in a local sh."""

    def __init__(self):
        super().__init__()
        self.ran: list[str] = []

    def run(self, command, *, check=True, timeout=None):
        self._announce(command)
        self.ran.append(command)
        result = in_shell(command)
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_status, result.stdout + result.stderr)
        return result


@pytest.fixture
def likely_here(tmp_path, monkeypatch):
    """The likely folders are the layout's under tmp_path."""
    c = layout(tmp_path / "m")
    monkeypatch.setattr(backup, "LIKELY_SSLDIRS", c["ssldirs"])
    monkeypatch.setattr(backup, "LIKELY_CADIRS", c["cadirs"])
    monkeypatch.setattr(backup, "COPY_DIRS", c["copy_dirs"])
    return c


def test_end_to_end_confirmed(tmp_path, state, likely_here):
    ssldir, cadir, copy_dir = likely_here["chosen"]
    facts = dataclasses.replace(RECORDED, ssldir=ssldir, cadir=cadir, copy_dirs=(copy_dir,))
    remote = ShellRemote()

    _, result = backup_while_discovering(remote, tmp_path / "local", lambda: facts)

    assert remote.ran == [commands.move_unless_there(scratch_of(state), f"{state}/{FINAL_NAME}")]
    assert local_files(state) == [FINAL_NAME]  # the scratch renamed; no .partial/.rc
    assert result.local_path.read_bytes() == (state / FINAL_NAME).read_bytes()
    assert hashlib.sha256(result.local_path.read_bytes()).hexdigest() == result.sha256
    assert leftovers(result.local_path.parent) == []


def test_end_to_end_taken_again_of_discoverys_folders(tmp_path, state, likely_here):
    other = tmp_path / "m" / "ssl2"  # discovery names the second candidate; the master chose the first
    facts = dataclasses.replace(RECORDED, ssldir=str(other), cadir=str(other / "ca"), copy_dirs=())
    remote = ShellRemote()

    _, result = backup_while_discovering(remote, tmp_path / "local", lambda: facts)

    assert remote.ran == [commands.remove(scratch_of(state))]
    assert local_files(state) == [FINAL_NAME]  # the scratch is gone
    with tarfile.open(result.local_path, mode="r:gz") as tar:
        names = tar.getnames()
    assert str(other).lstrip("/") in names and not any("it's ssl" in n for n in names)
    assert local_files(result.local_path.parent) == [FINAL_NAME, f"{FINAL_NAME}.sha256"]
