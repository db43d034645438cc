"""Unit tests of restore.py: the `restore` task, the put-back a rollback uses, and the checks on a
tarball before it is extracted as root over `/`.

Remote commands are never matched by their text (the builders are moving to `pe_remote/commands/`):
the fake remote answers by position or runs a command in a local `sh` when its output is parsed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import signal
import socket
import tarfile
from pathlib import Path

import pytest

from fakes import FakeLocks, FakeRemote, QuietConsole, Result, in_shell, make_cert
from pe_remote import discovery, restore, runs
from pe_remote.backup import REMOTE_BACKUP_DIR, backup_paths
from pe_remote.commands.certs import fingerprint
from pe_remote.commands.sections import marker
from pe_remote.commands import backup as commands
from pe_remote.errors import (BackupError, ConnectionFailed, Incomplete, InputError, RemoteCommandFailed,
                              RemoteCommandTimedOut, RolledBack)
from pe_remote.restore import RestoreOutcome
from test_unit_journal_parse import RUN_ID
from test_unit_trust import RECORDED

C = RECORDED.certname
SSL = RECORDED.ssldir.lstrip("/")
CA = RECORDED.cadir.lstrip("/")
CERT_PEM, KEY_PEM, _, CERT = make_cert(C, serial=7, sans=(C, "puppet"))
CERT_SHA = fingerprint(CERT)


# --- put_back: stop, put the folders back, start, read what is served --------------------------------

def _fails_at(index_failing: int, status: int, output: str):
    def respond(command, index, kwargs):
        if index == index_failing:
            raise RemoteCommandFailed("put back", status, output)
    return respond


def test_a_put_back_the_shell_undid_starts_the_services_again_and_is_rolled_back():
    output = "tar: short read\npe-remote: putting back /root/x.tar.gz failed; the folders it replaced are back\n"
    remote, console = FakeRemote(_fails_at(1, commands.PUT_BACK_UNDONE, output)), QuietConsole()
    with pytest.raises(RolledBack) as info:  # stop (0), put back (1), start (2)
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver", "puppet"], console)
    assert remote.commands_run == 3
    assert remote.calls[2] == (restore.start_services_command(RECORDED, ["puppetserver", "puppet"]),
                               {"check": True, "timeout": 1800})
    # The starts wait as long as --server-timeout says, on the master and on the connection.
    remote = FakeRemote(_fails_at(1, commands.PUT_BACK_UNDONE, output))
    with pytest.raises(RolledBack):
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver", "puppet"], console,
                         server_timeout=900)
    assert remote.calls[2] == (restore.start_services_command(RECORDED, ["puppetserver", "puppet"], 900),
                               {"check": True, "timeout": 3 * 900 + 60})
    assert "900" in remote.calls[2][0] and restore.start_services_command(RECORDED, ["puppet"], 900) != \
        restore.start_services_command(RECORDED, ["puppet"])
    message = str(info.value)
    assert "(tar: short read)" in message and "moved back in place" in message and "the master is as it was" in message
    assert "\n" not in message and info.value.exit_code == 7
    assert "starting puppetserver, puppet again" in console.text("warn")


def test_a_put_back_of_a_tarball_that_does_not_match_moves_nothing_and_starts_again():
    remote, console = FakeRemote(_fails_at(1, commands.PUT_BACK_MISMATCH, "")), QuietConsole()
    with pytest.raises(RolledBack, match="does not match sha256 0+; nothing was moved; nothing started again"):
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, [], console)
    assert remote.commands_run == 3 and "starting nothing again" in console.text("warn")


def test_a_put_back_undone_whose_start_fails_is_incomplete():
    def respond(command, index, kwargs):
        if index == 1:
            raise RemoteCommandFailed("put back", commands.PUT_BACK_UNDONE, "tar: short read")
        if index == 2:
            raise RemoteCommandFailed("start", 1, "Job for puppetserver.service failed")

    with pytest.raises(Incomplete) as info:
        restore.put_back(FakeRemote(respond), RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver"], QuietConsole())
    assert "starting puppetserver again failed (Job for puppetserver.service failed)" in str(info.value)
    assert "the SSL folders are as they were" in str(info.value) and info.value.exit_code == 8


def test_a_put_back_not_undone_leaves_the_services_stopped_and_names_the_kept_folders():
    kept = f"{RECORDED.cadir}.pe-remote-failed-X"
    output = (f"tar: short read\nrm: cannot remove '{RECORDED.cadir}/x': Device or resource busy\n"
              f"{commands.KEPT_ASIDE}{kept}\npe-remote: putting back /root/x.tar.gz failed and ...\n")
    remote = FakeRemote(_fails_at(1, commands.PUT_BACK_NOT_UNDONE, output))
    with pytest.raises(Incomplete) as info:
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver"], QuietConsole(),
                         suffix=".pe-remote-failed-X")
    assert remote.commands_run == 2  # never started on SSL folders that may be half put back
    message = str(info.value)
    assert f"kept as {kept};" in message and "the services are stopped" in message and "\n" not in message
    assert "mv DIR.pe-remote-failed-X DIR" in message and "then start puppetserver" in message


@pytest.mark.parametrize("status", [1, 2, 127, -1], ids=["1", "2", "127", "timed-out"])
def test_a_put_back_with_an_unknown_outcome_is_incomplete_and_starts_nothing(status):
    remote = FakeRemote(_fails_at(1, status, "tar: short read"))
    with pytest.raises(Incomplete) as info:
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver"], QuietConsole(),
                         suffix=".pe-remote-failed-X")
    assert remote.commands_run == 2
    assert all(f"{p}.pe-remote-failed-X" in str(info.value) for p in backup_paths(RECORDED))
    assert "unknown outcome (tar: short read)" in str(info.value) and info.value.exit_code == 8


def test_a_failed_stop_puts_nothing_back_and_starts_the_services_again():
    remote = FakeRemote(_fails_at(0, 1, "unit failed"))
    with pytest.raises(RolledBack, match=r"stopping the services failed \(unit failed\); nothing was put back"):
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppet"], QuietConsole())
    assert remote.commands == [restore.stop_services_command(RECORDED),
                               restore.start_services_command(RECORDED, ["puppet"])]


def test_a_stop_given_up_as_hung_starts_nothing_and_is_incomplete():
    # The stops go on on the master after the workstation gives up: a start now would race them.
    def hangs(command, index, kwargs):
        raise RemoteCommandTimedOut(command, 1800)

    remote = FakeRemote(hangs)
    with pytest.raises(Incomplete) as info:
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppet"], QuietConsole())
    assert remote.commands == [restore.stop_services_command(RECORDED)]
    message = str(info.value)
    assert "no end within 1800s" in message and "may still run on the master" in message
    assert "the SSL folders are as they were" in message and "start puppet" in message and "\n" not in message
    assert info.value.exit_code == 8


def test_a_failed_stop_whose_start_fails_too_is_incomplete():
    def everything_fails(command, index, kwargs):
        raise RemoteCommandFailed("x", 1, "unit failed")

    remote = FakeRemote(everything_fails)
    with pytest.raises(Incomplete):
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppet"], QuietConsole())
    assert remote.commands_run == 2


def test_a_start_that_fails_after_the_put_back_is_incomplete():
    remote = FakeRemote(_fails_at(2, 1, "Job for puppetserver.service failed"))
    with pytest.raises(Incomplete) as info:
        restore.put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver"], QuietConsole(),
                         suffix=".pe-remote-failed-X")
    assert f"was put back (the replaced folders are kept as {RECORDED.ssldir}.pe-remote-failed-X" in str(info.value)


def test_a_connection_lost_during_the_put_back_is_passed_on():
    def lost(command, index, kwargs):
        if index == 1:
            raise ConnectionFailed("lost the SSH connection to m")

    with pytest.raises(ConnectionFailed):
        restore.put_back(FakeRemote(lost), RECORDED, "/root/x.tar.gz", "0" * 64, ["puppet"], QuietConsole())


def _facts_on_disk(tmp_path: Path, cert_pem: bytes | None = CERT_PEM):
    ssl = tmp_path / "ssl"
    facts = dataclasses.replace(RECORDED, ssldir=str(ssl), cadir=str(tmp_path / "ca"),
                                hostcert=f"{ssl}/certs/{C}.pem", hostprivkey=f"{ssl}/private_keys/{C}.pem")
    if cert_pem is not None:
        (ssl / "certs").mkdir(parents=True)
        (ssl / "certs" / f"{C}.pem").write_bytes(cert_pem)
    return facts


def test_a_put_back_reads_the_cert_now_on_disk(tmp_path):
    """Parsing: the last command (what is on disk and served) runs in a local shell."""
    facts = _facts_on_disk(tmp_path)
    checks = []

    def master(command, index, kwargs):
        checks.append(kwargs["check"])
        return in_shell(command) if index == 3 else None

    remote, console = FakeRemote(master), QuietConsole()
    outcome = restore.put_back(remote, facts, "/root/x.tar.gz", "0" * 64, ["puppetserver"], console)
    assert outcome.disk_sha256 == CERT_SHA
    assert isinstance(outcome.served_sha256, str)
    assert remote.commands_run == 4 and checks == [True, True, True, False]  # only the read may fail
    suffix = outcome.moved_aside[0][len(facts.ssldir):]
    assert re.fullmatch(r"\.pe-remote-failed-\d{8}T\d{6}Z", suffix)
    assert outcome.moved_aside == tuple(p + suffix for p in backup_paths(facts))
    assert "starting puppetserver" in console.text("notice")


def test_a_put_back_with_no_cert_on_disk_reports_none(tmp_path):
    facts = _facts_on_disk(tmp_path, cert_pem=None)
    remote = FakeRemote(lambda command, index, kwargs: in_shell(command) if index == 3 else None)
    outcome = restore.put_back(remote, facts, "/root/x.tar.gz", "0" * 64, [], QuietConsole())
    assert outcome.disk_sha256 == ""


# --- has the CA moved on since the backup? (parsing) ---------------------------------------------------

def _ca_output(serial=("0A", "0B"), added=(), removed=(), inventory=()) -> str:
    """The comparison's output, built with the section protocol's own marker helper."""
    parts = [marker("serial"), *serial, marker("signed_added"), *added, marker("signed_removed"), *removed,
             marker("inventory_added"), *inventory]
    return "\n".join(parts) + "\n"


def test_parsing_ca_changes_one_regen_is_no_change():
    out = _ca_output(("0A", "0B"), added=[f"{C}.pem"], removed=[f"{C}.pem"],
                     inventory=[f"0x000B 2026 2031 /CN={C}", ""])
    assert restore.ca_changes(out, C) == []
    assert restore.ca_changes(_ca_output(("0A", "0A")), C) == []  # a regen that failed before signing


@pytest.mark.parametrize("serial, says", [(("0A", "0C"), "from 0A to 0C (+2"), (("0A", "09"), "from 0A to 09 (-1")])
def test_parsing_ca_changes_a_serial_counter_that_moved_too_far(serial, says):
    changes = restore.ca_changes(_ca_output(serial), C)
    assert len(changes) == 1 and says in changes[0]


def test_parsing_ca_changes_an_unreadable_serial_is_not_a_change():
    assert restore.ca_changes(_ca_output(("0A", "zz")), C) == []
    assert restore.ca_changes(_ca_output(("0A",)), C) == []


def test_parsing_ca_changes_certs_signed_and_gone_and_inventory():
    added = [f"agent{i}.pem" for i in range(7)]
    out = _ca_output(("0A", "0B"), added=[*added, f"{C}.pem"], removed=["old.pem"],
                     inventory=[f"0x000B a b /CN={C}", "0x000C a b /CN=agent0", "0x000D a b /CN=agent1"])
    changes = restore.ca_changes(out, C)
    assert changes[0] == "certs signed since the backup: agent0.pem, agent1.pem, agent2.pem, agent3.pem, " \
                         "agent4.pem ..."
    assert changes[1] == "signed certs gone since the backup: old.pem"
    assert changes[2] == "inventory entries since the backup: 0x000C a b /CN=agent0; 0x000D a b /CN=agent1"


def test_parsing_ca_changes_without_sections_is_no_change():
    assert restore.ca_changes("", C) == []


# --- the checksum a restore verifies against -----------------------------------------------------------

def test_a_given_sha256_is_used_normalised(tmp_path):
    assert restore.expected_sha256(tmp_path / "b.tar.gz", "  " + "ABCDEF" * 10 + "ABCD\n") == "abcdef" * 10 + "abcd"


def test_the_sidecar_sha256_is_used_when_none_is_given(tmp_path):
    (tmp_path / "b.tar.gz.sha256").write_text("ABCDEF" * 10 + "ABCD  b.tar.gz\n")
    assert restore.expected_sha256(tmp_path / "b.tar.gz", None) == "abcdef" * 10 + "abcd"
    assert restore.expected_sha256(tmp_path / "b.tar.gz", "01" * 32) == "01" * 32  # given wins


@pytest.mark.parametrize("given, shown", [("", "--sha256 '':"), ("0123", "--sha256 0123:"), ("ab" * 33, "--sha256 " + "ab" * 33),
                                          ("g" * 64, "--sha256 " + "g" * 64), ("ab" * 31 + "; rm -rf /", "--sha256 'abab"),
                                          ("sha256:" + "ab" * 32, "--sha256 sha256:")])
def test_a_given_sha256_that_is_not_64_hex_digits_is_bad_input(tmp_path, given, shown):
    # It reaches the master's shell (the upload's and put-back's checks): refused before anything is read.
    (tmp_path / "b.tar.gz.sha256").write_text("ab" * 32 + "  b.tar.gz\n")
    with pytest.raises(InputError) as info:
        restore.expected_sha256(tmp_path / "b.tar.gz", given)
    assert str(info.value).startswith(shown) and "64 hex digits" in str(info.value)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize("sidecar, says", [("", "is empty"), ("  \n\n", "is empty"), ("abc  b.tar.gz\n", "is garbled"),
                                           (b"\xff\xfe\x00junk", "is garbled")])
def test_an_empty_or_garbled_sidecar_is_bad_input_not_a_traceback(tmp_path, sidecar, says):
    path = tmp_path / "b.tar.gz.sha256"
    path.write_bytes(sidecar if isinstance(sidecar, bytes) else sidecar.encode())
    with pytest.raises(InputError) as info:
        restore.expected_sha256(tmp_path / "b.tar.gz", None)
    assert f"b.tar.gz.sha256 {says}" in str(info.value) and "--sha256" in str(info.value)
    assert info.value.exit_code == 2
    assert restore.expected_sha256(tmp_path / "b.tar.gz", "ab" * 32) == "ab" * 32  # a given one still wins


def test_check_local_backup_names_a_missing_tarball_before_its_sidecar(tmp_path):
    with pytest.raises(InputError, match="does not exist or is not a file"):
        restore.check_local_backup(tmp_path / "absent.tar.gz", None)
    (tmp_path / "b.tar.gz").write_bytes(b"backup bytes")
    good = hashlib.sha256(b"backup bytes").hexdigest()
    (tmp_path / "b.tar.gz.sha256").write_text(f"{good}  b.tar.gz\n")
    assert restore.check_local_backup(tmp_path / "b.tar.gz", None) == restore.LocalBackup(tmp_path / "b.tar.gz", good)


def test_no_sha256_at_all_is_bad_input(tmp_path):
    with pytest.raises(InputError) as info:
        restore.expected_sha256(tmp_path / "b.tar.gz", None)
    assert "b.tar.gz.sha256 is missing" in str(info.value) and "--sha256" in str(info.value)
    assert info.value.exit_code == 2


def test_verify_local(tmp_path):
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(b"backup bytes")
    good = hashlib.sha256(b"backup bytes").hexdigest()
    restore.verify_local(tarball, good)
    with pytest.raises(InputError, match="does not match its sha256"):
        restore.verify_local(tarball, "0" * 64)
    with pytest.raises(InputError, match="does not exist or is not a file"):
        restore.verify_local(tmp_path / "absent.tar.gz", good)
    with pytest.raises(InputError, match="does not exist or is not a file"):
        restore.verify_local(tmp_path, good)


# --- upload ------------------------------------------------------------------------------------------

class Sftp:
    def __init__(self):
        self.put: list[tuple[bytes, str, int, bool]] = []
        self.modes: list[tuple[str, int]] = []

    def putfo(self, fh, target, file_size=None, confirm=True):
        self.put.append((fh.read(), target, file_size, confirm))

    def chmod(self, path, mode):
        self.modes.append((path, mode))


class SftpRemote(FakeRemote):
    def __init__(self, respond=None):
        super().__init__(respond)
        self.sftp_client = Sftp()

    def sftp(self):
        return self.sftp_client


def test_an_upload_lands_private_in_the_state_folder(tmp_path):
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(b"x" * 100)
    remote = SftpRemote()
    target = restore.upload_backup(remote, tarball, "a" * 64)
    assert target == f"{REMOTE_BACKUP_DIR}/restore-b.tar.gz"
    assert remote.sftp_client.put == [(b"x" * 100, target, 100, True)]
    assert remote.sftp_client.modes == [(target, 0o600)]
    assert remote.commands_run == 2  # the folder, then the checksum of the copy there


@pytest.mark.parametrize("error, kind, said", [
    (socket.timeout("timed out"), ConnectionFailed, "lost the SSH connection to"),
    (EOFError(), ConnectionFailed, "EOFError"),
    (OSError("Failure"), BackupError, "could not upload"),
], ids=["stalled", "closed", "refused"])
def test_an_upload_that_fails_is_one_line_and_changes_nothing_else(tmp_path, error, kind, said):
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(b"x")
    remote = SftpRemote()

    def fails(fh, target, file_size=None, confirm=True):
        raise error

    remote.sftp_client.putfo = fails
    with pytest.raises(kind) as info:
        restore.upload_backup(remote, tarball, "a" * 64)
    message = str(info.value)
    assert said in message and "nothing was changed" in message and "\n" not in message
    assert type(info.value) is kind and remote.commands_run == 1  # the folder only: no check, no put-back


def test_an_upload_that_does_not_match_is_a_backup_error(tmp_path):
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(b"x")

    def mismatch(command, index, kwargs):
        if index == 1:
            raise RemoteCommandFailed("sha256sum -c", 1, "FAILED")

    with pytest.raises(BackupError) as info:
        restore.upload_backup(SftpRemote(mismatch), tarball, "a" * 64)
    assert f"{REMOTE_BACKUP_DIR}/restore-b.tar.gz does not match sha256 {'a' * 64}" in str(info.value)
    assert info.value.exit_code == 6


# --- the members of a tarball ------------------------------------------------------------------------

def _tar(path: Path, *members: tarfile.TarInfo | tuple[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tuple):
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
            else:
                tar.addfile(member)
    return path


def _info(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _folder(name: str) -> tarfile.TarInfo:
    return _info(name, tarfile.DIRTYPE)


def test_a_backup_with_relative_links_inside_passes(tmp_path):
    path = _tar(tmp_path / "b.tar.gz", _folder(SSL), (f"{SSL}/certs/{C}.pem", b"x"), _folder(CA),
                _info(f"{SSL}/certs/alias.pem", tarfile.SYMTYPE, f"{C}.pem"),
                _info(f"{SSL}/ca", tarfile.SYMTYPE, "../../../../" + CA))
    restore.check_members(path, RECORDED)


@pytest.mark.parametrize("member, says", [
    ((f"/{SSL}/certs/x.pem", b"x"), "a path outside the SSL folders"),
    ((f"{SSL}/../../../../etc/passwd", b"x"), "a path outside the SSL folders"),
    ((f"{SSL}/certs/../../x", b"x"), "a path outside the SSL folders"),
    (("etc/cron.d/x", b"x"), "outside /var/lib/puppet/ssl, /etc/puppet/puppetserver/ca"),
    ((f"{SSL}.old/x", b"x"), "not an SSL backup of this master"),
    (_info(f"{SSL}/certs/shadow.pem", tarfile.SYMTYPE, "/etc/shadow"), "a link to '/etc/shadow' outside"),
    (_info(f"{SSL}/certs/up.pem", tarfile.SYMTYPE, "../../../../../etc/shadow"), "outside the SSL folders"),
    (_info(f"{SSL}/certs/hard.pem", tarfile.LNKTYPE, f"{SSL}/certs/x.pem"), "not a regular file, folder or link"),
    (_info(f"{SSL}/certs/tty", tarfile.CHRTYPE), "not a regular file"),
    (_info(f"{SSL}/certs/sda", tarfile.BLKTYPE), "not a regular file"),
    (_info(f"{SSL}/certs/fifo", tarfile.FIFOTYPE), "not a regular file"),
], ids=["absolute", "dotdot", "dotdot-inside", "elsewhere", "sibling-folder", "symlink-absolute-out",
        "symlink-relative-out", "hardlink", "char-device", "block-device", "fifo"])
def test_hostile_members_are_refused(tmp_path, member, says):
    path = _tar(tmp_path / "b.tar.gz", (f"{SSL}/certs/x.pem", b"x"), member)
    with pytest.raises(InputError) as info:
        restore.check_members(path, RECORDED)
    assert says in str(info.value) and "refusing to restore it" in str(info.value)


@pytest.mark.parametrize("missing", ["ssldir", "cadir", "copy"])
def test_a_backup_missing_a_folder_the_put_back_moves_aside_is_refused(tmp_path, missing):
    """Every folder the put-back moves aside must come back: else the live CA (say) is moved away for nothing."""
    copy = "/etc/puppetlabs/orchestration-services/ssl"
    facts = dataclasses.replace(RECORDED, copy_dirs=(copy,))
    members = {"ssldir": [_folder(SSL), (f"{SSL}/certs/{C}.pem", b"x")],
               "cadir": [_folder(CA), (f"{CA}/ca_crt.pem", b"x")],
               "copy": [(f"{copy.lstrip('/')}/{C}.cert.pem", b"x")]}  # a file alone, no folder entry, is enough
    restore.check_members(_tar(tmp_path / "all.tar.gz", *sum(members.values(), [])), facts)
    path = _tar(tmp_path / "b.tar.gz", *sum((m for k, m in members.items() if k != missing), []))
    gone = {"ssldir": RECORDED.ssldir, "cadir": RECORDED.cadir, "copy": copy}[missing]
    with pytest.raises(InputError) as info:
        restore.check_members(path, facts)
    message = str(info.value)
    assert f"holds nothing of {gone}, which the restore would move aside" in message
    assert "not a backup of this master's layout" in message and info.value.exit_code == 2


def test_a_cadir_inside_the_ssldir_needs_no_member_of_its_own(tmp_path):
    facts = dataclasses.replace(RECORDED, cadir=f"{RECORDED.ssldir}/ca")
    restore.check_members(_tar(tmp_path / "b.tar.gz", (f"{SSL}/certs/{C}.pem", b"x")), facts)


@pytest.mark.parametrize("members, says", [
    # Each link stays inside as text; followed through the other, the second leads to the CA folder's parent.
    ([_info(f"{SSL}/d", tarfile.SYMTYPE, "/" + CA), _info(f"{SSL}/e", tarfile.SYMTYPE, "d/..")],
     f"'{SSL}/e', a link to 'd/..' outside"),
    ([_info(f"{SSL}/l1", tarfile.SYMTYPE, "l2"), _info(f"{SSL}/l2", tarfile.SYMTYPE, "l1")], "a link to"),
    ([_info(f"{SSL}/certs", tarfile.SYMTYPE, "private_keys"), (f"{SSL}/./certs/{C}.pem", b"x")],
     "('.' or empty parts)"),
    ([(f"{SSL}//certs/{C}.pem", b"x")], "('.' or empty parts)"),
], ids=["link-through-link", "link-loop", "dot-part-beneath-a-link", "empty-part"])
def test_links_are_followed_as_the_kernel_would_and_odd_names_refused(tmp_path, members, says):
    path = _tar(tmp_path / "b.tar.gz", _folder(SSL), _folder(CA), (f"{SSL}/certs/x.pem", b"x"), *members)
    with pytest.raises(InputError) as info:
        restore.check_members(path, RECORDED)
    assert says in str(info.value) and "refusing to restore it" in str(info.value)


def test_a_link_through_another_link_that_stays_inside_passes(tmp_path):
    path = _tar(tmp_path / "b.tar.gz", _folder(SSL), _folder(CA), (f"{CA}/signed/{C}.pem", b"x"),
                _info(f"{SSL}/ca", tarfile.SYMTYPE, "/" + CA), _info(f"{SSL}/mine.pem", tarfile.SYMTYPE,
                                                                      f"ca/signed/{C}.pem"))
    restore.check_members(path, RECORDED)


def test_a_member_beneath_a_link_is_refused(tmp_path):
    path = _tar(tmp_path / "b.tar.gz", _info(f"{SSL}/certs", tarfile.SYMTYPE, "private_keys"),
                (f"{SSL}/certs/{C}.pem", b"x"))
    with pytest.raises(InputError, match=f"'{SSL}/certs/{C}.pem' beneath the link '{SSL}/certs'"):
        restore.check_members(path, RECORDED)


def test_a_file_that_is_no_tarball_is_refused(tmp_path):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(InputError, match="is not a readable tar.gz backup"):
        restore.check_members(path, RECORDED)


def test_the_cert_in_a_tarball(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", (RECORDED.hostcert.lstrip("/"), CERT_PEM))
    assert restore.cert_sha256_in_tarball(good, RECORDED.hostcert) == CERT_SHA
    other = _tar(tmp_path / "other.tar.gz", (f"{SSL}/certs/other.pem", CERT_PEM))
    with pytest.raises(InputError, match=f"holds no {RECORDED.hostcert}"):
        restore.cert_sha256_in_tarball(other, RECORDED.hostcert)
    folder = _tar(tmp_path / "folder.tar.gz", _folder(RECORDED.hostcert.lstrip("/")))
    with pytest.raises(InputError, match=f"holds no {RECORDED.hostcert}"):
        restore.cert_sha256_in_tarball(folder, RECORDED.hostcert)
    junk = _tar(tmp_path / "junk.tar.gz", (RECORDED.hostcert.lstrip("/"), b"not a cert"))
    with pytest.raises(InputError, match="holds no readable cert"):
        restore.cert_sha256_in_tarball(junk, RECORDED.hostcert)


# --- the `restore` task ------------------------------------------------------------------------------

class RestoreJob:
    def __init__(self, monkeypatch, tmp_path):
        self.facts = RECORDED
        self.tarball = _tar(tmp_path / "b.tar.gz", _folder(SSL), (RECORDED.hostcert.lstrip("/"), CERT_PEM),
                            _folder(CA), (f"{CA}/ca_crt.pem", b"ca"))
        self.sha = hashlib.sha256(self.tarball.read_bytes()).hexdigest()
        (tmp_path / "b.tar.gz.sha256").write_text(f"{self.sha}  b.tar.gz\n")
        self.remote, self.console, self.locks = FakeRemote(), QuietConsole(), FakeLocks()
        self.outcome = RestoreOutcome(("moved-aside",), CERT_SHA, CERT_SHA)
        self.uploads, self.put_backs, self.discovered = [], [], 0
        monkeypatch.setattr(discovery, "discover", self._discover)
        monkeypatch.setattr(restore, "upload_backup", self._upload)
        monkeypatch.setattr(restore, "put_back", self._put_back)
        monkeypatch.setattr(restore.master_lock, "acquire", self.locks.acquire)

    def _discover(self, remote, flavor_override=None):
        self.discovered += 1
        return self.facts

    def _upload(self, remote, tarball, sha256):
        self.uploads.append((tarball, sha256, list(self.locks.taken), self.locks.released))
        return f"{REMOTE_BACKUP_DIR}/restore-{tarball.name}"

    def _put_back(self, remote, facts, tarball, sha256, start, console, suffix=None, server_timeout=None):
        self.put_backs.append({"tarball": tarball, "sha256": sha256, "start": list(start),
                               "locked": self.locks.released < len(self.locks.taken), "suffix": suffix,
                               "server_timeout": server_timeout})
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def run(self, sha256=None, **kwargs):
        # As the task does: the local checks first, then the job with what they checked.
        return restore.restore_backup(self.remote, restore.check_local_backup(self.tarball, sha256), self.console,
                                      **kwargs)


@pytest.fixture
def rjob(monkeypatch, tmp_path):
    return RestoreJob(monkeypatch, tmp_path)


def _services(**active):
    return tuple(dataclasses.replace(s, active=active[s.name], state="active" if active[s.name] else "inactive")
                 if s.name in active else s for s in RECORDED.services)


def test_a_restore_puts_the_backup_back_under_the_lock(rjob):
    outcome = rjob.run()
    assert outcome is rjob.outcome
    assert rjob.uploads == [(rjob.tarball, rjob.sha, ["restore"], 0)]
    [put_back] = rjob.put_backs
    assert re.fullmatch(r"\.pe-remote-failed-\d{8}T\d{6}Z", put_back.pop("suffix"))
    assert put_back == {"tarball": f"{REMOTE_BACKUP_DIR}/restore-b.tar.gz", "sha256": rjob.sha,
                        "start": ["puppet", "puppetserver"], "locked": True, "server_timeout": 300}
    assert rjob.locks.released == 1
    assert rjob.console.asked == ["Stop the Puppet services on m and put this backup back?"]
    assert CERT_SHA in rjob.console.text("notice") and "moved-aside" in rjob.console.text("notice")


def test_a_restore_waits_for_a_cut_off_runs_steps_and_says_to_close_the_run(rjob):
    # Before, it took the master lock only: a step of a cut-off run still running (steps outlive their
    # connection) could write into the SSL folders being put back.
    from test_unit_regen_paths import journal_text
    path, text = journal_text(RUN_ID)
    rjob.facts = dataclasses.replace(RECORDED, unfinished_journals=((path, text),))
    answers = iter([Result(ok=False), Result(ok=True)])  # steps running; then ended within the wait
    rjob.remote = FakeRemote(lambda command, index, kwargs: next(answers))
    rjob.run()
    waits = rjob.remote.commands
    assert len(waits) == 2 and "flock -x -n" in waits[0] and f"flock -x -w {runs.STEPS_STILL_RUNNING_WAIT}" in waits[1]
    assert rjob.uploads and rjob.put_backs  # after the wait
    assert f"close it with `regen --abandon {RUN_ID}`" in rjob.console.text("warn")


def test_a_restore_is_not_stopped_by_a_damaged_journal(rjob):
    rjob.facts = dataclasses.replace(RECORDED, unfinished_journals=((f"{REMOTE_BACKUP_DIR}/{RUN_ID}.journal", "{x"),))
    rjob.run()
    assert rjob.put_backs and "damaged" in rjob.console.text("warn")


def test_a_restore_waits_for_the_server_as_long_as_it_is_told(rjob):
    rjob.run(server_timeout=900)
    assert rjob.put_backs[0]["server_timeout"] == 900


def test_a_restore_starts_the_server_even_if_stopped_but_not_other_stopped_services(rjob):
    rjob.facts = dataclasses.replace(RECORDED, services=_services(puppet=False, puppetserver=False))
    rjob.run()
    assert rjob.put_backs[0]["start"] == ["puppetserver"]


def test_a_restore_with_a_wrong_checksum_touches_nothing(rjob):
    with pytest.raises(InputError, match="does not match its sha256"):
        rjob.run(sha256="0" * 64)
    assert rjob.discovered == 0 and rjob.uploads == [] and rjob.locks.taken == []


def test_a_hostile_tarball_is_refused_before_the_question(rjob, tmp_path):
    rjob.tarball = _tar(tmp_path / "evil.tar.gz", (RECORDED.hostcert.lstrip("/"), CERT_PEM), ("etc/cron.d/x", b"x"))
    with pytest.raises(InputError, match="outside"):
        rjob.run(sha256=hashlib.sha256(rjob.tarball.read_bytes()).hexdigest())
    assert rjob.console.asked == [] and rjob.uploads == []


def test_a_restore_whose_disk_cert_is_not_the_backups_is_incomplete(rjob):
    rjob.outcome = RestoreOutcome(("/var/lib/puppet/ssl.pe-remote-failed-X",), CERT_SHA, "AB:CD:EF")
    with pytest.raises(Incomplete) as info:  # the master was changed: never exit 6 ("nothing changed")
        rjob.run()
    assert "the cert on disk is AB:CD:EF..., not the backup's" in str(info.value)
    assert "kept as /var/lib/puppet/ssl.pe-remote-failed-X" in str(info.value) and info.value.exit_code == 8
    assert rjob.locks.released == 1


@pytest.mark.parametrize("served, says", [("AB:CD", "port 8140 serves AB:CD, not"), ("", "serves nothing")])
def test_a_restore_whose_served_cert_is_not_the_backups_fails(rjob, served, says):
    rjob.outcome = RestoreOutcome(("x",), served, CERT_SHA)
    with pytest.raises(Incomplete) as info:
        rjob.run()
    assert says in str(info.value) and info.value.exit_code == 8


@pytest.mark.parametrize("cut", [ConnectionFailed("lost the SSH connection to m"), KeyboardInterrupt()],
                         ids=["connection-lost", "ctrl-c"])
def test_a_restore_cut_off_after_the_stop_is_incomplete_naming_the_folders_aside(rjob, cut):
    rjob.outcome = cut
    with pytest.raises(Incomplete) as info:
        rjob.run()
    suffix = rjob.put_backs[0]["suffix"]
    assert all(f"{p}{suffix}" in str(info.value) for p in backup_paths(RECORDED))
    assert "state is unknown" in str(info.value) and info.value.exit_code == 8
    assert rjob.locks.released == 1


def test_ctrl_c_during_the_put_back_lets_it_finish_and_says_so(rjob, monkeypatch):
    # Stopped half-way, its commands would go on on the master after the lock was released.
    put_back = rjob._put_back

    def pressed_meanwhile(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return put_back(*args, **kwargs)

    monkeypatch.setattr(restore, "put_back", pressed_meanwhile)
    assert rjob.run() is rjob.outcome
    assert "interrupt received during the put-back: it was let finish" in rjob.console.text("warn")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("failure", [RolledBack("put back undone"), Incomplete("half put back")])
def test_a_failed_put_back_keeps_its_own_code(rjob, failure):
    rjob.outcome = failure
    with pytest.raises(type(failure)):
        rjob.run()


def test_a_tarball_without_the_ca_folder_is_refused_before_anything_is_stopped(rjob, tmp_path):
    rjob.tarball = _tar(tmp_path / "ssl-only.tar.gz", _folder(SSL), (RECORDED.hostcert.lstrip("/"), CERT_PEM))
    with pytest.raises(InputError) as info:
        rjob.run(sha256=hashlib.sha256(rjob.tarball.read_bytes()).hexdigest())
    assert f"holds nothing of /{CA}" in str(info.value) and info.value.exit_code == 2
    assert rjob.console.asked == [] and rjob.uploads == [] and rjob.put_backs == []


def test_without_a_server_service_what_is_served_does_not_matter(rjob):
    rjob.facts = dataclasses.replace(RECORDED, services=tuple(
        dataclasses.replace(s, exists=False, active=False, state="absent") if s.name == "puppetserver" else s
        for s in RECORDED.services))
    rjob.outcome = RestoreOutcome(("x",), "", CERT_SHA)
    assert rjob.run() is rjob.outcome
    assert rjob.put_backs[0]["start"] == ["puppet"]


def test_a_restore_hashes_the_local_tarball_once(rjob, monkeypatch):
    # The task checks it before connecting; the job takes that check's result rather than hashing again.
    hashed = []
    real = restore.sha256_file
    monkeypatch.setattr(restore, "sha256_file", lambda path: hashed.append(path) or real(path))
    rjob.run()
    assert hashed == [rjob.tarball] and len(rjob.put_backs) == 1
