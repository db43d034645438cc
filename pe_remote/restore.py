"""Put an SSL backup back on a master: rollback after a failed run, and the `restore` task.

The current SSL folders are moved aside (kept for diagnosis, never deleted),
the tarball is checked against its sha256 and extracted in place, and the
services are started again. Success means the master serves the cert that is
in the backup.
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from pe_remote import lock as master_lock
from pe_remote.backup import REMOTE_BACKUP_DIR, backup_paths, sha256_file
from pe_remote.commands import backup as commands
from pe_remote.commands import sections as protocol
from pe_remote.commands import steps
from pe_remote.commands.certs import fingerprint, load_cert
from pe_remote.connection import COMMAND_TIMEOUT
from pe_remote.commands.facts import cert_with_key, read_cert_with_key, read_served_cert, served_cert
from pe_remote.discovery import MasterFacts
from pe_remote.executor import InterruptLatch
from pe_remote.errors import (BackupError, ConnectionFailed, Incomplete, InputError, JournalDamaged,
                              RemoteCommandFailed, RemoteCommandTimedOut, RolledBack)


@dataclass(frozen=True)
class RestoreOutcome:
    moved_aside: tuple[str, ...]
    served_sha256: str
    disk_sha256: str


def stop_services_command(facts: MasterFacts) -> str:
    present = {s.name for s in facts.services if s.exists}
    return steps.stop_all(facts, [n for n in facts.flavor.services if n in present])


def start_services_command(facts: MasterFacts, names: list[str], timeout: int = steps.SERVER_READY_TIMEOUT) -> str:
    return steps.start_all(facts, names, timeout=timeout)


def start_services(remote, facts: MasterFacts, names: list[str], timeout: int = steps.SERVER_READY_TIMEOUT, *,
                   check: bool = True):
    """Start `names` (each start, and the server's first answer, bounded by `timeout`: --server-timeout)."""
    # Bounded on the master; the command as a whole may take each bound in turn.
    return remote.run(start_services_command(facts, names, timeout), check=check,
                      timeout=max(COMMAND_TIMEOUT, (len(names) + 1) * timeout + 60))


def put_back_command(facts: MasterFacts, tarball: str, sha256: str, suffix: str) -> str:
    """Verify the tarball, move the current SSL folders aside, extract the backup in place."""
    return commands.put_back(backup_paths(facts), tarball, sha256, suffix)


def served_cert_command(facts: MasterFacts) -> str:
    """The cert on disk and the cert served on 8140 (read with `read_served_and_disk`)."""
    return cert_with_key("disk", facts.hostcert) + "\n" + served_cert("served", facts.certname)


def failed_suffix() -> str:
    """What the folders a put-back replaces are kept as: `<folder>.pe-remote-failed-<UTC time>`."""
    return f".pe-remote-failed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _cause(exc: RemoteCommandFailed, *, first: bool = False) -> str:
    """The last (or first: tar's ends in "Error is not recoverable") line of a failed command's output
    that is not pe-remote's own."""
    lines = [line.strip() for line in exc.output.splitlines() if line.strip() and not line.startswith("pe-remote:")]
    return (lines[0] if first else lines[-1]) if lines else f"exit {exc.exit_status}"


def _start_again(remote, facts: MasterFacts, start: list[str], console, what: str, timeout: int):
    """The SSL folders are as they were: start `start` again, then RolledBack (or Incomplete if that fails)."""
    services = ", ".join(start) or "nothing"
    console.warn(f"{what}; starting {services} again")
    try:
        start_services(remote, facts, start, timeout)
    except RemoteCommandFailed as exc:
        raise Incomplete(f"{what}, but starting {services} again failed ({_cause(exc)}): the SSL folders are as they "
                         "were and the services are stopped; start them by hand") from None
    raise RolledBack(f"{what}; {services} started again: the master is as it was before this put-back")


def put_back(remote, facts: MasterFacts, tarball: str, sha256: str, start: list[str], console, *,
             suffix: str | None = None, server_timeout: int = steps.SERVER_READY_TIMEOUT) -> RestoreOutcome:
    """Stop, restore the SSL folders from `tarball` (on the master), start `start`, read what is served.

    A failure that leaves the SSL folders as they were (the stop, a tarball that does not match, a
    put-back the shell undid) starts `start` again and raises RolledBack. Any other failure once the
    services were stopped raises Incomplete naming the state and the folders kept aside; the services
    are then NOT started on SSL folders that may be half put back. A lost connection is passed on.
    `server_timeout`: how long each start and the server's first answer may take (--server-timeout).
    """
    suffix = suffix or failed_suffix()
    paths = backup_paths(facts)
    aside = [p + suffix for p in paths]
    services = ", ".join(start) or "nothing"
    console.notice("  stopping the services ...")
    try:
        remote.run(stop_services_command(facts))
    except RemoteCommandTimedOut as exc:
        # Given up on here, the stops go on on the master (a command outlives its channel): a start now
        # would race them, and "as it was" could not be said.
        raise Incomplete(f"stopping the services was given up ({_cause(exc)}) and may still run on the master; "
                         f"nothing was put back: the SSL folders are as they were; check the services on the master "
                         f"and start {services} once the stops have ended") from None
    except RemoteCommandFailed as exc:
        _start_again(remote, facts, start, console,
                     f"stopping the services failed ({_cause(exc)}); nothing was put back", server_timeout)
    console.notice(f"  putting back {', '.join(paths)} from {tarball} ...")
    try:
        remote.run(put_back_command(facts, tarball, sha256, suffix))
    except RemoteCommandFailed as exc:
        if exc.exit_status == commands.PUT_BACK_MISMATCH:
            _start_again(remote, facts, start, console, f"the backup {tarball} on the master does not match sha256 "
                         f"{sha256}; nothing was moved", server_timeout)
        if exc.exit_status == commands.PUT_BACK_UNDONE:
            _start_again(remote, facts, start, console, f"putting back {tarball} failed "
                         f"({_cause(exc, first=True)}); the folders it replaced were moved back in place", server_timeout)
        if exc.exit_status == commands.PUT_BACK_NOT_UNDONE:
            kept = [line[len(commands.KEPT_ASIDE):].strip() for line in exc.output.splitlines()
                    if line.startswith(commands.KEPT_ASIDE)]
            raise Incomplete(f"putting back {tarball} failed ({_cause(exc, first=True)}) and the folders it replaced "
                             f"could not all be moved back: the services are stopped, {', '.join(paths)} may be half "
                             f"extracted, the replaced folders are kept as {', '.join(kept) or 'nothing'}; on the "
                             f"master remove the half-extracted folder and move its kept folder back "
                             f"(`rm -rf DIR && mv DIR{suffix} DIR`), then start {services}") from None
        raise Incomplete(f"putting back {tarball} ended with an unknown outcome ({_cause(exc)}): the services are "
                         f"stopped and {', '.join(paths)} may be half extracted, the replaced folders kept as "
                         f"{', '.join(aside)} if they are there; check on the master, move them back (`rm -rf DIR "
                         f"&& mv DIR{suffix} DIR`) or put the backup back again, then start {services}") from None
    console.notice(f"  starting {services} ...")
    try:
        start_services(remote, facts, start, server_timeout)
    except RemoteCommandFailed as exc:
        raise Incomplete(f"{tarball} was put back (the replaced folders are kept as {', '.join(aside)}), but "
                         f"starting {services} failed ({_cause(exc)}): see why on the master and start them, or "
                         f"move the kept folders back (`rm -rf DIR && mv DIR{suffix} DIR`) and start them") from None
    sections = protocol.split(remote.run(served_cert_command(facts), check=False).stdout)
    disk, _ = read_cert_with_key(sections, "disk")
    served = read_served_cert(sections, "served")
    return RestoreOutcome(tuple(aside), served.sha256 if served else "", disk.sha256 if disk else "")


# --- has the CA moved on since the backup? -----------------------------------------------------

def ca_changes_command(facts: MasterFacts, tarball: str, scratch: str = REMOTE_BACKUP_DIR) -> str:
    """Compare the CA now with the CA in `tarball` (read-only; see commands.backup.ca_changes)."""
    return commands.ca_changes(facts.cadir, tarball, scratch)


def ca_changes(output: str, certname: str) -> list[str]:
    """What changed in the CA since the backup beyond what one regen of `certname` does (empty: nothing).

    A regen revokes the old cert (CRL only), and signs one new cert for the certname: the serial
    counter moves by one, the inventory gains a line for the certname, signed/ keeps the same names.
    """
    sections = protocol.split(output)
    changes = []
    serials = [line.strip() for line in sections.get("serial", [])]
    if len(serials) == 2 and all(re.fullmatch(r"[0-9A-Fa-f]+", v) for v in serials):
        moved = int(serials[1], 16) - int(serials[0], 16)
        if not 0 <= moved <= 1:
            changes.append(f"the CA's serial counter went from {serials[0]} to {serials[1]} "
                           f"({moved:+d}; one regen moves it by at most 1)")
    own = f"{certname}.pem"
    added = [n.strip() for n in sections.get("signed_added", []) if n.strip() and n.strip() != own]
    removed = [n.strip() for n in sections.get("signed_removed", []) if n.strip() and n.strip() != own]
    if added:
        changes.append(f"certs signed since the backup: {', '.join(added[:5])}{' ...' if len(added) > 5 else ''}")
    if removed:
        changes.append(f"signed certs gone since the backup: {', '.join(removed[:5])}")
    foreign = [line.strip() for line in sections.get("inventory_added", [])
               if line.strip() and not line.rstrip().endswith(f"/CN={certname}")]
    if foreign:
        changes.append(f"inventory entries since the backup: {'; '.join(foreign[:3])}")
    return changes


# --- the `restore` task: a local tarball back onto a master ---------------------------------

def expected_sha256(tarball: Path, given: str | None) -> str:
    """The sha256 given, else the one in the `.sha256` file beside the tarball (as `sha256sum` writes it)."""
    if given is not None:
        if not re.fullmatch(r"\s*[0-9A-Fa-f]{64}\s*", given):
            shown = given.strip() if re.fullmatch(r"\S{1,80}", given.strip()) else repr(given[:80])
            raise InputError(f"--sha256 {shown}: give the backup's sha256, 64 hex digits, as pe-remote printed it "
                             f"when it took the backup (or leave it out to use {tarball.name}.sha256)")
        return given.strip().lower()
    sidecar = tarball.with_name(tarball.name + ".sha256")
    if sidecar.exists():
        try:
            words = sidecar.read_text(errors="replace").split()
        except OSError as exc:
            raise InputError(f"cannot read {sidecar}: {exc.strerror or exc}; make it readable or pass "
                             "--sha256") from None
        if not words or not re.fullmatch(r"[0-9A-Fa-f]{64}", words[0]):
            raise InputError(f"{sidecar} is {'empty' if not words else 'garbled'}: it must start with the "
                             "backup's sha256 (64 hex digits), as sha256sum writes it; fix it or pass --sha256 "
                             "with the value pe-remote printed when it took the backup")
        return words[0].lower()
    raise InputError(f"no checksum to verify {tarball} against: {sidecar.name} is missing; "
                     "pass --sha256 with the value pe-remote printed when it took the backup")


def cert_sha256_in_tarball(tarball: Path, hostcert: str) -> str:
    """sha256 fingerprint (openssl's format) of the master's cert inside the tarball."""
    with tarfile.open(tarball) as tar:
        try:
            member = tar.extractfile(hostcert.lstrip("/"))
        except KeyError:
            member = None
        if member is None:
            raise InputError(f"{tarball} holds no {hostcert}: it is not an SSL backup of this master")
        cert = load_cert(member.read())
    if cert is None:
        raise InputError(f"{tarball} holds no readable cert at {hostcert}: it is not an SSL backup of this master")
    return fingerprint(cert)


def _resolved(path: str, links: dict[str, str], hops: int = 40) -> str | None:
    """`path` (from /) with `..` applied and every link of `links` (name -> target) on it followed, as the
    kernel resolves it; relative to /, no leading slash. None: more than `hops` links (a loop)."""
    todo, done = [p for p in path.split("/") if p], []
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        done.append(part)
        target = links.get("/".join(done))
        if target is not None:
            hops -= 1
            if hops < 0:
                return None
            done = [] if target.startswith("/") else done[:-1]
            todo = [p for p in target.split("/") if p] + todo
    return "/".join(done)


def check_members(tarball: Path, facts: MasterFacts) -> None:
    """A backup holds only folders, regular files and links that stay inside the SSL folders it was
    taken of (Debian's `ssl/ca` is a link to its CA folder).

    The tarball is extracted as root over `/`: a member elsewhere (`etc/cron.d/x`,
    `root/.ssh/authorized_keys`), a link leading out, a device, a hard link or a `..` would change
    more than the SSL folders.
    """
    roots = [p.strip("/") for p in backup_paths(facts)]

    def inside(path: str) -> bool:
        return any(path == root or path.startswith(root + "/") for root in roots)

    try:
        with tarfile.open(tarball) as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{tarball} is not a readable tar.gz backup: {exc}") from None
    for member in members:
        name = member.name
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or ".." in parts:
            raise InputError(f"{tarball} holds {name!r}, a path outside the SSL folders: refusing to restore it")
        if "" in parts or "." in parts:  # `ssl/./l/x` would pass the "under a link" check below
            raise InputError(f"{tarball} holds {name!r}, a path pe-remote's backups never hold ('.' or empty "
                             "parts): refusing to restore it")
        if not inside(name.rstrip("/")):
            raise InputError(f"{tarball} holds {name!r}, outside {', '.join('/' + r for r in roots)}: it is "
                             "not an SSL backup of this master; refusing to restore it")
        if not (member.issym() or member.isfile() or member.isdir()):
            raise InputError(f"{tarball} holds {name!r}, which is not a regular file, folder or link (a hard "
                             "link or device): refusing to restore it")
    links = {member.name.rstrip("/"): member.linkname for member in members if member.issym()}
    for name, target in links.items():
        # Followed as the kernel would, through the backup's other links too: `e -> d/..` with `d` a link
        # to the CA folder stays inside as text but leads to the CA folder's parent.
        real = _resolved(posixpath.join(posixpath.dirname(name), target), links)
        if real is None or not inside(real):
            raise InputError(f"{tarball} holds {name!r}, a link to {target!r} outside the SSL "
                             "folders: refusing to restore it")
    for member in members:
        through = next((link for link in links if member.name.startswith(link + "/")), None)
        if through:
            raise InputError(f"{tarball} holds {member.name!r} beneath the link {through!r}: refusing to restore it")
    # Every folder the put-back moves aside must come back from the tarball (a backup of the ssldir
    # alone would leave the master without its CA).
    names = [member.name.rstrip("/") for member in members]
    for root in roots:
        if not any(name == root or name.startswith(root + "/") for name in names):
            raise InputError(f"{tarball} holds nothing of /{root}, which the restore would move aside: it is not a "
                             f"backup of this master's layout ({', '.join('/' + r for r in roots)}); "
                             "refusing to restore it; use a backup pe-remote took of this master")


def upload_backup(remote, tarball: Path, sha256: str) -> str:
    """Copy the tarball into the master's root-only state folder (0600) and check its sha256 there."""
    target = f"{REMOTE_BACKUP_DIR}/restore-{tarball.name}"
    remote.run(commands.private_folder(REMOTE_BACKUP_DIR))
    sftp = remote.sftp()
    try:
        with open(tarball, "rb") as fh:
            sftp.putfo(fh, target, file_size=os.path.getsize(tarball), confirm=True)
        sftp.chmod(target, 0o600)
    except (socket.timeout, EOFError, paramiko.SSHException) as exc:
        raise ConnectionFailed(f"lost the SSH connection to {remote.target.label} while uploading {tarball.name}: "
                               f"{str(exc) or type(exc).__name__}; nothing was changed but the copy {target}") from None
    except OSError as exc:  # the master's SFTP server refused (its disk full, say), or this side's file
        raise BackupError(f"could not upload {tarball} to {target} on the master: {exc}; nothing was changed but "
                          "that copy") from None
    try:
        remote.run(commands.sha256_matches(target, sha256))
    except RemoteCommandFailed:
        raise BackupError(f"the uploaded copy {target} does not match sha256 {sha256}") from None
    return target


def _must_be_a_file(tarball: Path) -> None:
    if not tarball.is_file():
        raise InputError(f"backup {tarball} does not exist or is not a file")


def verify_local(tarball: Path, sha256: str) -> None:
    _must_be_a_file(tarball)
    try:
        actual = sha256_file(tarball)
    except OSError as exc:
        raise InputError(f"cannot read backup {tarball}: {exc.strerror or exc}") from None
    if actual != sha256:
        raise InputError(f"backup {tarball} does not match its sha256 ({actual[:16]}... is not {sha256[:16]}...): "
                         "it is damaged or not the backup you meant")


@dataclass(frozen=True)
class LocalBackup:
    """A backup on this machine that matched its sha256 (made by check_local_backup, before connecting)."""

    path: Path
    sha256: str


def check_local_backup(tarball: Path, sha256: str | None) -> LocalBackup:
    """The checks of the local tarball, before any connection: it is a readable file and matches the
    sha256 given or written beside it."""
    _must_be_a_file(tarball)  # before its sidecar: a wrong path is the likelier mistake
    expected = expected_sha256(tarball, sha256)
    verify_local(tarball, expected)
    return LocalBackup(tarball, expected)


def _let_cut_off_steps_end(remote, facts: MasterFacts, console) -> None:
    """A run cut off on this master may still have a step running (steps outlive their connection): a
    put-back under it would be overwritten half-way. Wait for them as a resume would; say what to do with
    the run afterwards."""
    from pe_remote.journal import parse_journal
    from pe_remote.runs import wait_for_steps_still_running

    for path, text in facts.unfinished_journals:
        try:
            journal = parse_journal(path, text)
        except JournalDamaged as exc:
            console.warn(f"{exc} (the restore goes on)")
            continue
        wait_for_steps_still_running(remote, journal, console)
        console.warn(f"the master has an unfinished {journal.task} run {journal.run_id}: once this backup is back, "
                     f"close it with `{journal.task} --abandon {journal.run_id}`")


def restore_backup(remote, backup: LocalBackup, console, *, flavor: str | None = None,
                   server_timeout: int = steps.SERVER_READY_TIMEOUT) -> RestoreOutcome:
    """The `restore` task: put a checked local backup back (upload, put back), prove its cert is served;
    each service start, and the server's first answer, bounded by `server_timeout`."""
    from pe_remote.discovery import discover

    tarball, expected = backup.path, backup.sha256
    facts = discover(remote, flavor_override=flavor)
    check_members(tarball, facts)
    cert_sha = cert_sha256_in_tarball(tarball, facts.hostcert)
    start = [s.name for s in facts.services if s.exists and s.name in facts.flavor.services
             and (s.active or s.name == facts.server_service)]
    console.notice(f"Restore {tarball.name} onto {remote.target.label}: replaces {', '.join(backup_paths(facts))} "
                 f"(moved aside, not deleted); the cert in the backup has sha256 {cert_sha}.")
    console.confirm(f"Stop the Puppet services on {remote.target.label} and put this backup back?")
    with master_lock.acquire(remote, "restore", console):
        _let_cut_off_steps_end(remote, facts, console)
        uploaded = upload_backup(remote, tarball, expected)
        suffix = failed_suffix()
        aside = ", ".join(p + suffix for p in backup_paths(facts))
        # Ctrl-C is noted, not raised: the put-back runs to its end. Cut off half-way, its commands would
        # go on on the master after this run (and its lock) ended, and a second restore could race them.
        with InterruptLatch(console) as latch:
            try:
                outcome = put_back(remote, facts, uploaded, expected, start, console, suffix=suffix,
                                   server_timeout=server_timeout)
            except (ConnectionFailed, KeyboardInterrupt) as exc:
                why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else str(exc)
                raise Incomplete(f"{why} once the restore had begun stopping the services: the master's state is "
                                 f"unknown (services maybe stopped, SSL folders maybe moved aside as {aside} or half "
                                 "extracted); check on the master and move kept folders back or restore again "
                                 "(README 'Restoring a backup by hand')") from None
            finally:
                if latch.interrupted:
                    console.warn("interrupt received during the put-back: it was let finish (stopped half-way it "
                                 "would leave the SSL folders half extracted)")
    problem = None
    if outcome.disk_sha256 != cert_sha:
        disk = f"{outcome.disk_sha256[:23]}..." if outcome.disk_sha256 else "missing"
        problem = f"the cert on disk is {disk}, not the backup's"
    elif facts.server_service in start and outcome.served_sha256 != cert_sha:
        problem = f"port 8140 serves {outcome.served_sha256[:23] or 'nothing'}, not the backup's cert"
    if problem:
        raise Incomplete(f"after the restore {problem}: the backup was put back and the services started, the "
                         f"replaced folders are kept as {', '.join(outcome.moved_aside)}; check the master (verify), "
                         "or move the kept folders back by hand")
    console.notice(f"Restored: {facts.certname} serves the cert from {tarball.name} again; "
                 f"the replaced folders are kept as {', '.join(outcome.moved_aside)}")
    return outcome
