"""The SSL backup: a tar.gz made on the master, kept there, and pulled back verified.

On the master the tarball lives in a root-only folder with mode 0600 and is
never deleted by pe-remote. On the workstation it is written under a temporary
name (0600, in a 0700 folder), hashed while it arrives, compared with the
master's sha256, and only then renamed into place: a partial or corrupt
download is never mistaken for a backup.

How it travels (measured by `python -m benchmarks`): `take_backup` streams. One
remote command runs `tar -czf -` through `tee` into the master's copy while the
same bytes come back over a raw SSH channel of the existing connection, so
making the tarball and pulling it overlap instead of following each other; the
master then renames its copy and prints the sha256 and size of the file as
stored. On a master whose CA holds 50,000 agent certs (78.5 MB tarball, gzip on
the master is the bottleneck) that takes 1.08-1.12 times
`ssh master 'tar czf - SSLDIR' > file` (the difference: writing the master's copy
and hashing it, 0.15 s), where the former tar-to-file-then-SFTP pull took 1.8-5
times as long. `make_remote_backup` and `pull_backup` (tar to a file, then SFTP) stay for tarballs
that already sit on the master and as the benchmark's baseline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pe_remote.discovery import REMOTE_STATE_DIR, MasterFacts
from pe_remote.errors import BackupChanged, BackupError, PeRemoteError, RemoteCommandFailed
from pe_remote.commands import backup as commands
from pe_remote.commands import sections
from pe_remote.flavors import COPY_DIRS, LIKELY_CADIRS, LIKELY_SSLDIRS
from pe_remote.names import file_safe

REMOTE_BACKUP_DIR = REMOTE_STATE_DIR
# A running agent may write the ssldir (its CRL, a cached cert) while tar reads it; tar then
# exits 1 ("file changed as we read it") and the tarball may be inconsistent: read it again.
BACKUP_ATTEMPTS = 3
BACKUP_RETRY_PAUSE = 2.0
TAR_SAW_A_CHANGE = "file changed as we read it"

log = logging.getLogger(__name__)
# SFTP read-ahead for pull_backup. paramiko's bounded prefetch falls back to one
# synchronous 32 KiB read per round trip whenever the reader overtakes the
# requests in flight: with 64, pulling 78 MB took 2.6-15 s here; with 1024 (at
# most 32 MiB buffered) about 0.6 s, as fast as unbounded.
PREFETCH_REQUESTS = 1024
# The streamed backup (take_backup): read the channel in 1 MiB pieces (hashing
# and writing each as it arrives), with a 16 MiB channel window so the master
# is never throttled by the window while the workstation writes.
STREAM_CHUNK = 1 << 20
STREAM_WINDOW = 16 << 20
# Seconds without a single byte from the master before the backup is given up
# as a lost connection (tar produces output steadily while it works).
STREAM_IDLE_TIMEOUT = 300


@dataclass(frozen=True)
class RemoteBackup:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Backup:
    remote: RemoteBackup
    local_path: Path

    @property
    def sha256(self) -> str:
        return self.remote.sha256


def backup_name(certname: str, when: datetime | None = None) -> str:
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{certname}-ssl.tar.gz"


def backup_paths(facts: MasterFacts) -> list[str]:
    """What the backup holds: the ssldir, the CA folder where it lies outside it, and the folders
    of credential copies that the run refreshes."""
    paths = [facts.ssldir]
    if not facts.cadir_inside_ssldir:
        paths.append(facts.cadir)
    return paths + list(facts.copy_dirs)


def remote_backup_path(facts: MasterFacts, name: str | None = None) -> str:
    """Where a backup of now goes on the master (root-only state folder)."""
    return f"{REMOTE_BACKUP_DIR}/{name or backup_name(facts.certname)}"


def create_command(facts: MasterFacts, remote_path: str) -> str:
    """Make the tarball on the master and print its sha256 and size (see commands.backup)."""
    return commands.create_tarball(backup_paths(facts), remote_path)


def stream_command(facts: MasterFacts, remote_path: str) -> str:
    """Make the tarball, sending it to stdout while it is written (see commands.backup)."""
    return commands.stream_tarball(backup_paths(facts), remote_path)


def _parse_sum_and_size(output: str, remote_path: str) -> RemoteBackup:
    """`sha256sum FILE` then `stat -c %s FILE` -> RemoteBackup, or BackupError."""
    lines = output.split()
    if len(lines) < 3 or not re.fullmatch(r"[0-9a-f]{64}", lines[0]) or not re.fullmatch(r"[0-9]+", lines[-1]):
        raise BackupError(f"unexpected output from the backup command: {output.strip()[:200]}")
    return RemoteBackup(remote_path, lines[0], int(lines[-1]))


def make_remote_backup(remote, facts: MasterFacts, *, name: str | None = None) -> RemoteBackup:
    remote_path = remote_backup_path(facts, name)
    try:
        result = remote.run(create_command(facts, remote_path))
    except RemoteCommandFailed as exc:
        error = BackupChanged if TAR_SAW_A_CHANGE in str(exc) else BackupError
        raise error(f"could not create the SSL backup on the master: {exc}") from None
    return _parse_sum_and_size(result.stdout, remote_path)


def local_backup_dir(base: str | os.PathLike, host_label: str) -> Path:
    return Path(base).expanduser() / file_safe(host_label)


def prepare_local_dir(folder: Path) -> None:
    """Create the 0700 folder now, so an unwritable destination stops the run before any change."""
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise BackupError(f"backup folder {folder} is not writable: {parent} is a file, not a folder; "
                              "choose another with --backup-dir")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        probe = folder / ".pe-remote-write-test"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise BackupError(f"backup folder {folder} is not writable ({exc.strerror}): "
                          "choose another with --backup-dir") from None


class _HashingWriter:
    def __init__(self, fh) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:  # an unbuffered file may take part of a chunk per write
            written = self.fh.write(view)
            view = view[written if written is not None else len(view):]
        return len(data)


def _destination(folder: Path, remote_path: str) -> tuple[Path, Path]:
    """(final path, temporary path) in `folder`; an existing backup is never overwritten."""
    final = folder / os.path.basename(remote_path)
    if final.exists():
        raise BackupError(f"{final} exists already; refusing to overwrite a backup")
    return final, folder / f".{final.name}.partial"


def _check_and_keep(writer: _HashingWriter, partial: Path, final: Path, remote_backup: RemoteBackup) -> None:
    """Compare what arrived with the master's copy; only then rename it into place, with its .sha256."""
    if writer.size != remote_backup.size or writer.digest.hexdigest() != remote_backup.sha256:
        raise BackupError(
            f"downloaded backup does not match the master's copy "
            f"(sha256 {writer.digest.hexdigest()[:16]}... vs {remote_backup.sha256[:16]}..., "
            f"{writer.size} vs {remote_backup.size} bytes); the master's copy is kept at {remote_backup.path}")
    os.chmod(partial, 0o600)
    os.rename(partial, final)
    # The checksum beside the tarball is what `restore` verifies it against.
    sidecar = final.with_name(final.name + ".sha256")
    fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{remote_backup.sha256}  {final.name}\n")


def pull_backup(remote, remote_backup: RemoteBackup, folder: Path, *,
                prefetch_requests: int = PREFETCH_REQUESTS) -> Path:
    """Download over SFTP on the existing connection; verify the sha256; then rename into place."""
    prepare_local_dir(folder)
    final, partial = _destination(folder, remote_backup.path)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh)
            remote.sftp().getfo(remote_backup.path, writer, prefetch=True,
                                max_concurrent_prefetch_requests=prefetch_requests)
        _check_and_keep(writer, partial, final, remote_backup)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def _receive(remote, command: str, partial: Path) -> tuple[_HashingWriter, int, str]:
    """Run `command`, its stdout written to `partial` (0600) and hashed as it arrives: (writer, exit
    status, stderr)."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # Unbuffered: chunks are 1 MiB already, and a full disk shows at the write, not at close.
    with os.fdopen(fd, "wb", buffering=0) as fh:
        writer = _HashingWriter(fh)
        try:
            status, errors = remote.stream(command, writer, window=STREAM_WINDOW, chunk=STREAM_CHUNK,
                                           idle_timeout=STREAM_IDLE_TIMEOUT, what="the backup")
        except OSError as exc:  # this side's disk, not the connection: nothing was changed
            raise BackupError(f"could not write the backup on this machine: {exc.strerror or exc}; free some "
                              "space or choose another --backup-dir (nothing was changed on the master)") from None
    return writer, status, errors


def _not_made(status: int, errors: str) -> BackupError:
    detail = " / ".join(line.strip() for line in errors.strip().splitlines()[-3:]) or "no output"
    error = BackupChanged if TAR_SAW_A_CHANGE in errors else BackupError
    return error(f"could not create the SSL backup on the master (exit {status}): {detail}")


def stream_backup(remote, facts: MasterFacts, folder: Path, *, name: str | None = None) -> Backup:
    """Make the tarball on the master and pull it in the same pass (see `stream_command`).

    Same outcome as `make_remote_backup` then `pull_backup`: the master keeps its copy (0600,
    0700 folder); the local copy is written under a temporary name, hashed as it arrives,
    compared with the sha256 and size the master computed from its own copy, and renamed into
    place (0600, with a `.sha256` sidecar) only when both match.
    """
    prepare_local_dir(folder)
    remote_path = remote_backup_path(facts, name)
    final, partial = _destination(folder, remote_path)
    try:
        writer, status, errors = _receive(remote, stream_command(facts, remote_path), partial)
        if status != 0:
            raise _not_made(status, errors)
        # stderr ends with `sha256sum` and `stat` of the master's copy (after any tar warnings).
        remote_backup = _parse_sum_and_size("\n".join(errors.strip().splitlines()[-2:]), remote_path)
        _check_and_keep(writer, partial, final, remote_backup)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Backup(remote_backup, final)


def take_backup(remote, facts: MasterFacts, folder: Path) -> Backup:
    """Back up the ssldir on the master, keep it there, and pull a verified copy into `folder`.

    The tarball is streamed (`stream_backup`) through the connection's `Remote.stream`.
    A file changing while tar reads it (a running agent writes the ssldir) makes tar fail; the
    backup is then taken again, up to BACKUP_ATTEMPTS times in all.
    """
    prepare_local_dir(folder)
    for attempt in range(1, BACKUP_ATTEMPTS + 1):
        try:
            return stream_backup(remote, facts, folder)
        except BackupChanged as exc:
            if attempt == BACKUP_ATTEMPTS:
                raise BackupChanged(f"{exc} ({BACKUP_ATTEMPTS} attempts: something keeps writing the SSL "
                                    "folders; stop the agent service and try again)") from None
            log.warning("backup attempt %d: %s; trying again", attempt, exc)
            time.sleep(BACKUP_RETRY_PAUSE)
    raise AssertionError("unreachable")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- `backup` on its own: the stream starts while discovery runs -------------------------------------

@dataclass(frozen=True)
class _Likely:
    """A tarball streamed from the folders where Puppet usually keeps them, not yet confirmed."""

    paths: tuple[str, ...]  # what the master chose (section `paths`)
    writer: _HashingWriter | None  # None: the stream did not work (`why`)
    sha256: str = ""
    size: int = 0
    why: str = ""


def _stream_likely(remote, scratch: str, partial: Path) -> _Likely:
    command = commands.stream_likely_tarball(LIKELY_SSLDIRS, LIKELY_CADIRS, COPY_DIRS, scratch)
    writer, status, errors = _receive(remote, command, partial)
    found = sections.split(errors)
    paths = tuple(line.strip() for line in found.get("paths", []) if line.strip())
    if status != 0:
        return _Likely(paths, None, why=str(_not_made(status, errors)))
    try:
        made = _parse_sum_and_size("\n".join(found.get("tar", [])[-2:]), scratch)
    except BackupError as exc:
        return _Likely(paths, None, why=str(exc))
    return _Likely(paths, writer, made.sha256, made.size)


def backup_while_discovering(remote, folder: Path, discover: Callable[[], MasterFacts]) -> tuple[MasterFacts, Backup]:
    """`discover()`, then `take_backup` of the folders it names, in about the time of the backup alone.

    The backup command's own shortcut (regen knows the folders before its backup): while discovery runs
    (a Ruby start or two on the master), the tarball of the folders where Puppet usually keeps them
    (flavors.LIKELY_SSLDIRS, LIKELY_CADIRS, COPY_DIRS) already streams, on a second channel of the same
    connection, under a scratch name on both sides. It becomes the backup only if discovery then names
    exactly the folders the master chose, and both sides' sha256 and size agree; otherwise the scratch
    copies are deleted and the backup is taken again, of discovery's folders (`take_backup`). Discovery
    is what decides, never the guess: a master laid out otherwise only waits longer.
    """
    prepare_local_dir(folder)
    when = datetime.now(timezone.utc)
    scratch = f"{REMOTE_BACKUP_DIR}/.{backup_name('unconfirmed', when)}"
    partial = folder / f"{os.path.basename(scratch)}.partial"  # hidden: the scratch name starts with a dot
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery") as pool:
        discovering = pool.submit(discover)
        try:
            likely = _stream_likely(remote, scratch, partial)
            facts = discovering.result()
        except BaseException:
            partial.unlink(missing_ok=True)
            _forget(remote, scratch)
            raise
    wanted = tuple(backup_paths(facts))
    if likely.writer is None or likely.paths != wanted:
        partial.unlink(missing_ok=True)
        _forget(remote, scratch)
        log.info("backup: %s; taking it again of %s", likely.why or f"the master chose {', '.join(likely.paths)}",
                 ", ".join(wanted))
        return facts, take_backup(remote, facts, folder)
    remote_path = remote_backup_path(facts, backup_name(facts.certname, when))
    named = False  # once the master's copy has its final name it is a backup, never deleted
    try:
        final, _ = _destination(folder, remote_path)
        try:
            remote.run(commands.move_unless_there(scratch, remote_path))
        except RemoteCommandFailed:
            raise BackupError(f"could not name the backup {remote_path} on the master: it is there already; "
                              "take the backup again") from None
        named = True
        made = RemoteBackup(remote_path, likely.sha256, likely.size)
        _check_and_keep(likely.writer, partial, final, made)
    except BaseException:
        partial.unlink(missing_ok=True)
        if not named:
            _forget(remote, scratch)
        raise
    return facts, Backup(made, final)


def _forget(remote, scratch: str) -> None:
    """Delete an unconfirmed tarball on the master (pe-remote's own scratch file, never a backup)."""
    try:
        remote.run(commands.remove(scratch), check=False)
    except PeRemoteError as exc:
        log.warning("could not delete the scratch tarball %s on the master: %s", scratch, exc)
