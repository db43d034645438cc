"""The SSL backup: a tar.gz made on the master, kept there, and pulled back verified.

On the master the tarball lives in a root-only folder with mode 0600 and is
never deleted by pe-remote. On the workstation it is written under a temporary
name (0600, in a 0700 folder), hashed while it arrives, compared with the
master's sha256, and only then renamed into place: a partial or corrupt
download is never mistaken for a backup.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pe_remote.discovery import REMOTE_STATE_DIR, MasterFacts
from pe_remote.errors import BackupError, RemoteCommandFailed

REMOTE_BACKUP_DIR = REMOTE_STATE_DIR
# SFTP read-ahead: enough requests in flight to fill a fast link, bounded so memory stays small.
PREFETCH_REQUESTS = 64


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
    """What the backup holds: the ssldir, and the CA folder where it lies outside it."""
    paths = [facts.ssldir]
    if not facts.cadir_inside_ssldir:
        paths.append(facts.cadir)
    return paths


def create_command(facts: MasterFacts, remote_path: str) -> str:
    """Make the tarball atomically (umask 077, temp name, rename) and print its sha256 and size.

    Paths are stored relative to / so that `tar -xzf FILE -C /` restores them in place.
    """
    members = " ".join(shlex.quote(p.lstrip("/")) for p in backup_paths(facts))
    folder = shlex.quote(os.path.dirname(remote_path))
    target = shlex.quote(remote_path)
    partial = shlex.quote(remote_path + ".partial")
    return (f"umask 077 && mkdir -p {folder} && chmod 700 {folder} && "
            f"tar -czf {partial} -C / {members} && mv {partial} {target} && "
            f"sha256sum {target} && stat -c %s {target}")


def make_remote_backup(remote, facts: MasterFacts, *, name: str | None = None) -> RemoteBackup:
    remote_path = f"{REMOTE_BACKUP_DIR}/{name or backup_name(facts.certname)}"
    try:
        result = remote.run(create_command(facts, remote_path))
    except RemoteCommandFailed as exc:
        raise BackupError(f"could not create the SSL backup on the master: {exc}") from None
    lines = result.stdout.split()
    if len(lines) < 3 or not re.fullmatch(r"[0-9a-f]{64}", lines[0]):
        raise BackupError(f"unexpected output from the backup command: {result.stdout.strip()[:200]}")
    return RemoteBackup(remote_path, lines[0], int(lines[-1]))


def local_backup_dir(base: str | os.PathLike, host_label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host_label)
    return Path(base).expanduser() / safe


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
        return self.fh.write(data)


def pull_backup(remote, remote_backup: RemoteBackup, folder: Path) -> Path:
    """Download over SFTP on the existing connection; verify the sha256; then rename into place."""
    prepare_local_dir(folder)
    final = folder / os.path.basename(remote_backup.path)
    if final.exists():
        raise BackupError(f"{final} exists already; refusing to overwrite a backup")
    partial = folder / f".{final.name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh)
            remote.sftp().getfo(remote_backup.path, writer, prefetch=True,
                                max_concurrent_prefetch_requests=PREFETCH_REQUESTS)
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
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def take_backup(remote, facts: MasterFacts, folder: Path) -> Backup:
    """Back up the ssldir on the master, keep it there, and pull a verified copy into `folder`."""
    prepare_local_dir(folder)
    remote_backup = make_remote_backup(remote, facts)
    return Backup(remote_backup, pull_backup(remote, remote_backup, folder))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
