"""The put-back shell (`commands.backup.put_back`) run for real with /bin/sh in a temporary folder.

A put-back moves the master's SSL folders aside and extracts the backup over `/`. When the
extraction fails part-way (a truncated tarball, a full disk), the shell itself removes what it wrote
and moves the original folders back, so the master is left as it was; `restore.put_back` then starts
the services again and says so (exit 7), instead of starting them on a half-extracted ssldir with
the originals aside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from fakes import FakeRemote, QuietConsole, in_shell
from pe_remote import restore
from pe_remote.commands import backup as commands
from pe_remote.errors import Incomplete, RemoteCommandFailed, RolledBack
from test_unit_trust import RECORDED

SUFFIX = ".pe-remote-failed-20260101T000000Z"


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _backup(path: Path, folders: dict[Path, dict[str, bytes]], *, cut_at: float | None = None) -> str:
    """A tarball of `folders` stored relative to / (as pe-remote makes it); `cut_at` truncates it to that
    fraction of its size. Returns the sha256 of what is on disk (a truncated file still matches its own)."""
    with tarfile.open(path, "w:gz") as tar:
        for folder, files in folders.items():
            info = tarfile.TarInfo(str(folder).lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o750
            tar.addfile(info)
            for name, data in files.items():
                info = tarfile.TarInfo(f"{str(folder).lstrip('/')}/{name}")
                info.size, info.mode = len(data), 0o640
                tar.addfile(info, io.BytesIO(data))
    if cut_at is not None:
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * cut_at)])
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def master(tmp_path):
    """A master's folders in tmp_path: ssl and ca (present), copy (a folder the backup holds that is not
    there now); the backup's ssl differs from the live one, and its ca holds 1 MiB that does not compress."""
    ssl, ca, copy = tmp_path / "ssl", tmp_path / "ca", tmp_path / "copy"
    _tree(ssl, {"certs/m.pem": b"live cert", "private_keys/m.pem": b"live key"})
    _tree(ca, {"ca_crt.pem": b"live CA", "signed/a.pem": b"live signed"})
    backup = {copy: {"m.pem": b"backup copy"},
              ssl: {"certs/m.pem": b"backup cert", "private_keys/m.pem": b"backup key", "extra.pem": b"new"},
              ca: {"ca_crt.pem": b"backup CA", "big": os.urandom(1 << 20)}}
    return tmp_path, [str(ssl), str(ca), str(copy)], backup


def _put_back(paths, tarball, sha256, env=None) -> subprocess.CompletedProcess:
    command = commands.put_back(paths, str(tarball), sha256, SUFFIX)
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env)


def _left_aside(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if SUFFIX in p.name)


def test_a_truncated_tarball_leaves_the_original_folders_in_place(master):
    tmp_path, paths, backup = master
    ssl, ca, copy = (Path(p) for p in paths)
    before = {p: _snapshot(Path(p)) for p in paths[:2]}
    sha = _backup(tmp_path / "b.tar.gz", backup, cut_at=0.6)
    proc = _put_back(paths, tmp_path / "b.tar.gz", sha)
    assert proc.returncode == commands.PUT_BACK_UNDONE, proc
    assert {p: _snapshot(Path(p)) for p in paths[:2]} == before  # the live folders, byte for byte
    assert not (ssl / "extra.pem").exists() and not copy.exists()  # nothing of the extraction is left
    assert _left_aside(tmp_path) == []
    assert proc.stderr.strip().splitlines()[-1] == (f"pe-remote: putting back {tmp_path}/b.tar.gz failed; the "
                                                    "folders it replaced are back as they were")
    assert "tar" in proc.stderr  # tar's own error comes first


def test_the_tar_really_was_half_extracted_before_it_failed(master):
    """The test above proves something: without the undo, the ssldir would hold the backup's files."""
    tmp_path, paths, backup = master
    sha = _backup(tmp_path / "b.tar.gz", backup, cut_at=0.6)
    target = tmp_path / "out"
    target.mkdir()
    proc = subprocess.run(["tar", "-xzpf", str(tmp_path / "b.tar.gz"), "-C", str(target)], capture_output=True)
    assert proc.returncode != 0 and sha
    assert (target / paths[0].lstrip("/") / "extra.pem").read_bytes() == b"new"


def test_a_good_tarball_is_put_back_and_the_originals_kept_aside(master):
    tmp_path, paths, backup = master
    sha = _backup(tmp_path / "b.tar.gz", backup)
    proc = _put_back(paths, tmp_path / "b.tar.gz", sha)
    assert proc.returncode == 0, proc
    for folder, files in backup.items():
        assert _snapshot(folder) == files
    assert _left_aside(tmp_path) == ["ca" + SUFFIX, "ssl" + SUFFIX]  # copy was not there: nothing to keep
    assert _snapshot(tmp_path / ("ssl" + SUFFIX))["certs/m.pem"] == b"live cert"


def test_a_tarball_that_does_not_match_moves_nothing(master):
    tmp_path, paths, backup = master
    before = {p: _snapshot(Path(p)) for p in paths[:2]}
    _backup(tmp_path / "b.tar.gz", backup)
    proc = _put_back(paths, tmp_path / "b.tar.gz", "0" * 64)
    assert proc.returncode == commands.PUT_BACK_MISMATCH
    assert {p: _snapshot(Path(p)) for p in paths[:2]} == before and _left_aside(tmp_path) == []


def test_a_move_aside_that_fails_part_way_moves_the_first_folders_back(master):
    tmp_path, paths, backup = master
    before = {p: _snapshot(Path(p)) for p in paths[:2]}
    (tmp_path / ("ca" + SUFFIX)).mkdir()  # someone's folder where ca would be kept: never moved into
    (tmp_path / ("ca" + SUFFIX) / "theirs").write_bytes(b"theirs")
    sha = _backup(tmp_path / "b.tar.gz", backup)
    proc = _put_back(paths, tmp_path / "b.tar.gz", sha)
    assert proc.returncode == commands.PUT_BACK_UNDONE, proc
    assert {p: _snapshot(Path(p)) for p in paths[:2]} == before
    assert _left_aside(tmp_path) == ["ca" + SUFFIX] and _snapshot(tmp_path / ("ca" + SUFFIX)) == {"theirs": b"theirs"}
    assert "is already there" in proc.stderr


def _failing_rm(tmp_path) -> str:
    """A PATH whose `rm` always fails (a busy mount, say)."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "rm").write_text("#!/bin/sh\necho \"rm: cannot remove: Device or resource busy\" >&2\nexit 1\n")
    (fakebin / "rm").chmod(0o755)
    return f"{fakebin}:{os.environ['PATH']}"


def test_an_undo_that_fails_says_which_folders_are_kept_aside(master):
    """`rm` fails (a busy mount, say): exit PUT_BACK_NOT_UNDONE and a KEPT_ASIDE line per folder still aside."""
    tmp_path, paths, backup = master
    sha = _backup(tmp_path / "b.tar.gz", backup, cut_at=0.6)
    proc = _put_back(paths, tmp_path / "b.tar.gz", sha, env={**os.environ, "PATH": _failing_rm(tmp_path)})
    assert proc.returncode == commands.PUT_BACK_NOT_UNDONE, proc
    kept = [line[len(commands.KEPT_ASIDE):] for line in proc.stderr.splitlines()
            if line.startswith(commands.KEPT_ASIDE)]
    assert kept == [paths[0] + SUFFIX, paths[1] + SUFFIX]
    assert sorted(kept) == [str(tmp_path / name) for name in _left_aside(tmp_path)]


# --- restore.put_back over that shell: the services are started again, the error says the master is as it was --

def _facts(paths):
    ssl, ca, copy = paths
    return dataclasses.replace(RECORDED, ssldir=ssl, cadir=ca, copy_dirs=(copy,),
                               hostcert=f"{ssl}/certs/{RECORDED.certname}.pem",
                               hostprivkey=f"{ssl}/private_keys/{RECORDED.certname}.pem")


def _master_shell(command, index, kwargs):
    """Stop (0) and start (2) succeed untouched; the put-back (1) runs for real in /bin/sh."""
    if index != 1:
        return None
    result = in_shell(command)
    if kwargs["check"] and not result.ok:
        raise RemoteCommandFailed(command, result.exit_status, result.stdout + result.stderr)
    return result


def test_put_back_of_a_truncated_tarball_is_rolled_back_with_the_folders_in_place(master):
    tmp_path, paths, backup = master
    before = {p: _snapshot(Path(p)) for p in paths[:2]}
    sha = _backup(tmp_path / "b.tar.gz", backup, cut_at=0.6)
    remote, console = FakeRemote(_master_shell), QuietConsole()
    with pytest.raises(RolledBack) as info:
        restore.put_back(remote, _facts(paths), str(tmp_path / "b.tar.gz"), sha, ["puppetserver", "puppet"], console,
                         suffix=SUFFIX)
    assert {p: _snapshot(Path(p)) for p in paths[:2]} == before and _left_aside(tmp_path) == []
    assert remote.calls[2] == (restore.start_services_command(_facts(paths), ["puppetserver", "puppet"]),
                               {"check": True, "timeout": 1800})
    message = str(info.value)
    assert message.startswith(f"putting back {tmp_path}/b.tar.gz failed (") and "moved back in place" in message
    assert message.endswith("puppetserver, puppet started again: the master is as it was before this put-back")
    assert "\n" not in message
    assert info.value.exit_code == 7


def test_put_back_whose_undo_fails_is_incomplete_and_does_not_start_the_services(master, monkeypatch):
    tmp_path, paths, backup = master
    sha = _backup(tmp_path / "b.tar.gz", backup, cut_at=0.6)
    monkeypatch.setenv("PATH", _failing_rm(tmp_path))
    remote = FakeRemote(_master_shell)
    with pytest.raises(Incomplete) as info:
        restore.put_back(remote, _facts(paths), str(tmp_path / "b.tar.gz"), sha, ["puppetserver"], QuietConsole(),
                         suffix=SUFFIX)
    assert remote.commands_run == 2  # stop, put back: nothing started on a half-extracted ssldir
    assert f"kept as {paths[0]}{SUFFIX}, {paths[1]}{SUFFIX};" in str(info.value) and info.value.exit_code == 8
