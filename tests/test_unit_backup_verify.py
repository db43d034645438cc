"""Unit tests for pe_remote.backup (the SSL tarball, made, pulled and verified) and pe_remote.verify."""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import stat
import subprocess
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

import pe_remote.backup as backup
from pe_remote.backup import (Backup, RemoteBackup, backup_name, backup_paths, create_command, local_backup_dir,
                              make_remote_backup, prepare_local_dir, pull_backup, sha256_file, take_backup)
from pe_remote.connection import CommandResult
from pe_remote.discovery import CertInfo, parse_discovery
from pe_remote.errors import BackupError, RemoteCommandFailed, VerificationFailed
from pe_remote.flavors import PE37
from pe_remote.plan import build_plan
from pe_remote.verify import Verification, check_regen, read_verification, verification_script

DATA = Path(__file__).parent / "data"
RECORDED = parse_discovery((DATA / "discovery-oss7.txt").read_text())
PE37_FACTS = dataclasses.replace(RECORDED, flavor=PE37, ssldir="/etc/puppetlabs/puppet/ssl",
                                 cadir="/etc/puppetlabs/puppet/ssl/ca")
ALT = ("puppet", "puppet.pe-remote.test")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- what the backup holds and how it is made ---------------------------------------------------

def test_backup_name():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert backup_name("master.example.com", when) == "20260102T030405Z-master.example.com-ssl.tar.gz"


def test_backup_paths_include_cadir_outside_ssldir():
    assert backup_paths(RECORDED) == ["/var/lib/puppet/ssl", "/etc/puppet/puppetserver/ca"]


def test_backup_paths_omit_cadir_inside_ssldir():
    assert backup_paths(PE37_FACTS) == ["/etc/puppetlabs/puppet/ssl"]


def test_cadir_equal_to_ssldir_is_inside():
    facts = dataclasses.replace(RECORDED, cadir=RECORDED.ssldir)
    assert backup_paths(facts) == [RECORDED.ssldir]


def test_cadir_sharing_a_prefix_is_not_inside():
    # /var/lib/puppet/ssl-ca is NOT inside /var/lib/puppet/ssl
    facts = dataclasses.replace(RECORDED, cadir="/var/lib/puppet/ssl-ca")
    assert backup_paths(facts) == ["/var/lib/puppet/ssl", "/var/lib/puppet/ssl-ca"]


def test_create_command_shape():
    command = create_command(RECORDED, "/root/pe-remote-backups/b.tar.gz")
    assert command.startswith("umask 077 && ")
    words = shlex.split(command)
    tar = words.index("tar")
    # Members are relative to / so that `tar -xzf FILE -C /` restores them in place.
    assert words[tar:tar + 7] == ["tar", "-czf", "/root/pe-remote-backups/b.tar.gz.partial", "-C", "/",
                                  "var/lib/puppet/ssl", "etc/puppet/puppetserver/ca"]
    assert "chmod 700 /root/pe-remote-backups" in command
    assert "mv /root/pe-remote-backups/b.tar.gz.partial /root/pe-remote-backups/b.tar.gz" in command
    assert command.endswith("sha256sum /root/pe-remote-backups/b.tar.gz && stat -c %s /root/pe-remote-backups/b.tar.gz")


def test_create_command_without_separate_cadir():
    words = shlex.split(create_command(PE37_FACTS, "/root/x/b.tar.gz"))
    tar = words.index("tar")
    assert words[tar + 5:tar + 7] == ["etc/puppetlabs/puppet/ssl", "&&"]


def _tree(tmp_path: Path):
    """A fake master filesystem: an ssldir and a separate cadir, under tmp_path."""
    ssldir = tmp_path / "var" / "ssl"
    cadir = tmp_path / "etc" / "ca"
    (ssldir / "certs").mkdir(parents=True)
    (ssldir / "certs" / "m.pem").write_text("cert")
    (cadir / "signed").mkdir(parents=True)
    (cadir / "ca_key.pem").write_text("ca key")
    facts = dataclasses.replace(RECORDED, ssldir=str(ssldir), cadir=str(cadir))
    return facts, ssldir, cadir


def test_create_command_really_makes_a_private_tarball(tmp_path):
    facts, ssldir, cadir = _tree(tmp_path)
    target = tmp_path / "state" / "b.tar.gz"
    out = subprocess.run(["sh", "-c", create_command(facts, str(target))], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == sha256_file(target)
    assert int(out[-1]) == target.stat().st_size
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert not Path(str(target) + ".partial").exists()
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert str(ssldir / "certs" / "m.pem").lstrip("/") in names
    assert str(cadir / "ca_key.pem").lstrip("/") in names
    assert not any(name.startswith("/") for name in names)


# --- make_remote_backup / take_backup with a remote that runs locally ---------------------------

class LocalRemote:
    """A remote whose commands run in a local shell and whose SFTP reads local files."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        result = CommandResult(command, proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_status, result.stdout + result.stderr)
        return result

    def sftp(self):
        return _LocalSFTP()

    def stream(self, command, sink, **kwargs):
        self.commands.append(command)
        proc = subprocess.run(["sh", "-c", command], capture_output=True)
        sink.write(proc.stdout)
        return proc.returncode, proc.stderr.decode()


class _LocalSFTP:
    def getfo(self, path, fl, prefetch=True, max_concurrent_prefetch_requests=None):
        data = Path(path).read_bytes()
        for at in range(0, len(data), 7):  # several writes, like SFTP does
            fl.write(data[at:at + 7])
        return len(data)


def test_take_backup_end_to_end(tmp_path, monkeypatch):
    facts, _, _ = _tree(tmp_path / "master")
    monkeypatch.setattr(backup, "REMOTE_BACKUP_DIR", str(tmp_path / "master-state"))
    remote = LocalRemote()
    result = take_backup(remote, facts, tmp_path / "local" / "host")
    assert isinstance(result, Backup)
    assert len(remote.commands) == 1
    assert result.remote.path.startswith(str(tmp_path / "master-state") + "/")
    assert result.local_path.parent == tmp_path / "local" / "host"
    assert result.local_path.read_bytes() == Path(result.remote.path).read_bytes()
    assert sha256_file(result.local_path) == result.sha256 == result.remote.sha256
    assert result.remote.size == result.local_path.stat().st_size
    assert mode(result.local_path) == 0o600


def test_make_remote_backup_failure_is_a_backup_error(tmp_path, monkeypatch):
    monkeypatch.setattr(backup, "REMOTE_BACKUP_DIR", str(tmp_path / "state"))
    facts = dataclasses.replace(RECORDED, ssldir=str(tmp_path / "missing-ssl"), cadir=str(tmp_path / "missing-ca"))
    with pytest.raises(BackupError, match="could not create the SSL backup"):
        make_remote_backup(LocalRemote(), facts, name="b.tar.gz")


class CannedRemote:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(self, command, *, check=True, timeout=None):
        return CommandResult(command, 0, self.stdout, "")


@pytest.mark.parametrize("stdout", ["", "not a sum\n", "abc /x\n12\n", "A" * 64 + " /x\n12\n"])
def test_make_remote_backup_unexpected_output(stdout):
    with pytest.raises(BackupError, match="unexpected output"):
        make_remote_backup(CannedRemote(stdout), RECORDED, name="b.tar.gz")


def test_make_remote_backup_parses_sum_and_size():
    digest = "ab" * 32
    rb = make_remote_backup(CannedRemote(f"{digest}  /root/pe-remote-backups/b.tar.gz\n4096\n"), RECORDED,
                            name="b.tar.gz")
    assert rb == RemoteBackup(f"{backup.REMOTE_BACKUP_DIR}/b.tar.gz", digest, 4096)


# --- pull_backup ------------------------------------------------------------------------------

class FakeSFTP:
    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.calls = []

    def getfo(self, path, fl, prefetch=True, max_concurrent_prefetch_requests=None):
        self.calls.append((path, prefetch, max_concurrent_prefetch_requests))
        for at in range(0, len(self.data), 1000):
            if self.fail_after is not None and at >= self.fail_after:
                raise EOFError("connection lost")
            fl.write(self.data[at:at + 1000])
        return len(self.data)


class FakeRemote:
    def __init__(self, sftp: FakeSFTP) -> None:
        self._sftp = sftp

    def sftp(self):
        return self._sftp


PAYLOAD = bytes(range(256)) * 40  # 10 KiB


def remote_backup_of(data: bytes, path: str = "/root/pe-remote-backups/20260101T000000Z-m-ssl.tar.gz"):
    return RemoteBackup(path, hashlib.sha256(data).hexdigest(), len(data))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name or p.name.startswith(".pe-remote"))


def test_pull_backup_matching_sha(tmp_path):
    folder = tmp_path / "backups" / "host"
    sftp = FakeSFTP(PAYLOAD)
    rb = remote_backup_of(PAYLOAD)
    final = pull_backup(FakeRemote(sftp), rb, folder)
    assert final == folder / "20260101T000000Z-m-ssl.tar.gz"
    assert final.read_bytes() == PAYLOAD
    assert mode(final) == 0o600
    assert mode(folder) == 0o700
    assert leftovers(folder) == []
    assert sftp.calls == [(rb.path, True, backup.PREFETCH_REQUESTS)]


def test_pull_backup_fixes_an_existing_folder_mode(tmp_path):
    folder = tmp_path / "host"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    pull_backup(FakeRemote(FakeSFTP(PAYLOAD)), remote_backup_of(PAYLOAD), folder)
    assert mode(folder) == 0o700


def test_pull_backup_mismatching_sha(tmp_path):
    folder = tmp_path / "host"
    rb = dataclasses.replace(remote_backup_of(PAYLOAD), sha256="0" * 64)
    with pytest.raises(BackupError) as info:
        pull_backup(FakeRemote(FakeSFTP(PAYLOAD)), rb, folder)
    assert "does not match" in str(info.value)
    assert rb.path in str(info.value)  # says where the good copy is
    assert list(folder.iterdir()) == []


def test_pull_backup_short_download(tmp_path):
    folder = tmp_path / "host"
    rb = remote_backup_of(PAYLOAD + b"more")  # the master's file is longer than what arrives
    with pytest.raises(BackupError, match="does not match"):
        pull_backup(FakeRemote(FakeSFTP(PAYLOAD)), rb, folder)
    assert list(folder.iterdir()) == []


def test_pull_backup_connection_lost_leaves_nothing(tmp_path):
    folder = tmp_path / "host"
    with pytest.raises(EOFError):
        pull_backup(FakeRemote(FakeSFTP(PAYLOAD, fail_after=3000)), remote_backup_of(PAYLOAD), folder)
    assert list(folder.iterdir()) == []


def test_pull_backup_refuses_to_overwrite(tmp_path):
    folder = tmp_path / "host"
    folder.mkdir()
    existing = folder / "20260101T000000Z-m-ssl.tar.gz"
    existing.write_bytes(b"older backup")
    with pytest.raises(BackupError, match="exists already") as info:
        pull_backup(FakeRemote(FakeSFTP(PAYLOAD)), remote_backup_of(PAYLOAD), folder)
    assert str(existing) in str(info.value)
    assert existing.read_bytes() == b"older backup"
    assert leftovers(folder) == []


# --- prepare_local_dir / local_backup_dir -------------------------------------------------------

def test_prepare_local_dir_creates_a_private_folder(tmp_path):
    folder = tmp_path / "a" / "b"
    prepare_local_dir(folder)
    assert folder.is_dir()
    assert mode(folder) == 0o700
    assert list(folder.iterdir()) == []  # the write probe is gone


def test_prepare_local_dir_on_an_existing_file(tmp_path):
    path = tmp_path / "backups"
    path.write_text("I am a file")
    with pytest.raises(BackupError) as info:
        prepare_local_dir(path)
    assert str(path) in str(info.value)
    assert "--backup-dir" in str(info.value)
    assert path.read_text() == "I am a file"


def test_prepare_local_dir_below_an_existing_file(tmp_path):
    path = tmp_path / "backups"
    path.write_text("I am a file")
    with pytest.raises(BackupError) as info:
        prepare_local_dir(path / "host")
    assert str(path / "host") in str(info.value)


def test_prepare_local_dir_on_a_file_says_it_is_not_a_folder(tmp_path):
    path = tmp_path / "backups"
    path.write_text("I am a file")
    with pytest.raises(BackupError) as info:
        prepare_local_dir(path)
    message = str(info.value).lower()
    assert "not a folder" in message or "not a directory" in message or "is a file" in message


@pytest.mark.parametrize("label, expected", [
    ("staging", "staging"),
    ("10.0.0.1:2222", "10.0.0.1_2222"),
    ("::1", "__1"),
    ("../../etc", ".._.._etc"),
])
def test_local_backup_dir_is_a_safe_single_component(tmp_path, label, expected):
    folder = local_backup_dir(tmp_path, label)
    assert folder == tmp_path / expected
    assert folder.parent == tmp_path


# --- verify.check_regen -----------------------------------------------------------------------

# The checks below read "2" as the old serial (the recorded master's is 1).
PLAN = build_plan(dataclasses.replace(RECORDED, cert=dataclasses.replace(RECORDED.cert, serial="2")), ALT)
NEW_SHA = "AA:" * 31 + "AA"


def good_result(**cert_changes) -> Verification:
    cert = CertInfo(serial="3", subject=RECORDED.cert.subject, issuer=RECORDED.cert.issuer,
                    not_after="Nov 23 05:37:26 2046 GMT", sha256=NEW_SHA, sans=PLAN.expected_sans)
    return Verification(dataclasses.replace(cert, **cert_changes), NEW_SHA, True, (),
                        revoked_serials=frozenset({PLAN.facts.cert.serial}), agent_exit=2)


def test_matching_result_has_no_problems():
    assert check_regen(PLAN, good_result()) == []


def test_old_serial_missing_from_the_crl_is_a_problem():
    problems = check_regen(PLAN, dataclasses.replace(good_result(), revoked_serials=frozenset({"7"})))
    assert problems == [f"the old serial {PLAN.facts.cert.serial} is not in the CA's CRL"]


@pytest.mark.parametrize("code", [1, 4, 6])
def test_failed_agent_run_is_a_problem(code):
    problems = check_regen(PLAN, dataclasses.replace(good_result(), agent_exit=code))
    assert problems == [f"an agent run on the master against itself failed (exit {code})"]


def test_agent_run_not_asked_for_is_not_a_problem():
    assert check_regen(PLAN, dataclasses.replace(good_result(), agent_exit=None)) == []


def test_same_serial():
    problems = check_regen(PLAN, good_result(serial="2"))
    assert problems == ["serial unchanged (2)"]


def test_other_issuer():
    (problem,) = check_regen(PLAN, good_result(issuer="CN=Evil CA"))
    assert "issuer" in problem and "CN=Evil CA" in problem


def test_san_missing():
    (problem,) = check_regen(PLAN, good_result(sans=PLAN.expected_sans - {"DNS:puppet"}))
    assert "SANs" in problem and "DNS:puppet" in problem


def test_extra_san():
    (problem,) = check_regen(PLAN, good_result(sans=PLAN.expected_sans | {"DNS:evil"}))
    assert "SANs" in problem and "DNS:evil" in problem


def test_key_mismatch():
    result = dataclasses.replace(good_result(), key_matches=False)
    assert check_regen(PLAN, result) == ["the private key does not match the new cert"]


def test_inactive_service():
    result = dataclasses.replace(good_result(), inactive_services=("puppet",))
    (problem,) = check_regen(PLAN, result)
    assert "not running" in problem and "puppet" in problem


def test_ca_files_left_frozen_fail_the_proof():
    result = dataclasses.replace(good_result(), freeze_left=True)
    (problem,) = check_regen(PLAN, result)
    assert "the CA files still belong to root" in problem and "ca-freeze.owners" in problem


def test_the_verification_script_reads_whether_a_freeze_was_left():
    from pe_remote.commands import sections
    from pe_remote.commands.facts import freeze_left, read_freeze_left
    script = verification_script(RECORDED, ["puppet"])
    assert freeze_left("freeze", "/root/pe-remote-backups/ca-freeze.owners") in script
    assert read_freeze_left(sections.split(f"{sections.marker('freeze')}\nleft\n"), "freeze")
    assert not read_freeze_left(sections.split(f"{sections.marker('freeze')}\n"), "freeze")
    assert not read_freeze_left({}, "freeze")


def test_8140_serves_another_fingerprint():
    result = dataclasses.replace(good_result(), served_sha256=RECORDED.cert.sha256)
    (problem,) = check_regen(PLAN, result)
    assert "8140" in problem and RECORDED.cert.sha256[:23] in problem


def test_nothing_on_8140():
    result = dataclasses.replace(good_result(), served_sha256="")
    (problem,) = check_regen(PLAN, result)
    assert "8140" in problem and "nothing" in problem


def test_8140_not_checked_when_the_server_was_left_stopped():
    facts = dataclasses.replace(PLAN.facts, services=tuple(
        dataclasses.replace(s, active=False, state="inactive") if s.name == "puppetserver" else s
        for s in RECORDED.services))
    plan = build_plan(facts, ALT)
    assert "puppetserver" in plan.stopped_services
    assert check_regen(plan, dataclasses.replace(good_result(), served_sha256="")) == []


def test_several_problems_are_all_reported():
    result = Verification(dataclasses.replace(good_result().cert, serial="2", issuer="CN=x"), "", False, ("puppet",))
    assert len(check_regen(PLAN, result)) == 6  # those five and the old serial not in the CRL


# --- verify.read_verification -----------------------------------------------------------------

class ScriptedRemote:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.commands: list[str] = []

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        return CommandResult(command, 0, self.stdout, "")


def _recorded_section(name: str) -> str:
    """Section `name` of the recorded discovery output, marker included."""
    text = (DATA / "discovery-oss7.txt").read_text()
    body = text.split(f"==> {name} <==\n")[1]
    return f"==> {name} <==\n" + (body[:body.index("==> ")] if "==> " in body else body)


def _served(pem_source: str) -> str:
    """A `served` section as the script sends it: s_client's output (here: just the PEM), base64."""
    import base64

    from pe_remote.commands import sections as protocol

    pem = protocol.decoded(protocol.split(_recorded_section(pem_source))[pem_source])
    noise = b"CONNECTED(00000003)\n---\nServer certificate\n" + pem + b"---\nNo client certificate CA names sent\n"
    return "==> served <==\n" + base64.encodebytes(noise).decode()


def test_read_verification_parses_the_script_output():
    output = (_recorded_section("cert") + _recorded_section("cert_key") + _served("cert")
              + "==> services <==\npuppet active\npuppetserver inactive\n")
    remote = ScriptedRemote(output)
    result = read_verification(remote, PLAN.facts, PLAN.facts.running_services)
    assert remote.commands == [verification_script(PLAN.facts, PLAN.facts.running_services)]
    assert result.cert == RECORDED.cert
    assert result.served_sha256 == RECORDED.cert.sha256
    assert result.key_matches is True
    assert result.inactive_services == ("puppetserver",)


def test_read_verification_sees_another_cert_served():
    # 8140 presenting the CA's cert (first in the bundle) instead of the master's.
    output = _recorded_section("cert") + _served("ca_cert") + "==> services <==\npuppet active\n"
    result = read_verification(ScriptedRemote(output), PLAN.facts, ["puppet"])
    assert result.served_sha256 and result.served_sha256 != RECORDED.cert.sha256
    assert result.key_matches is False  # no key section: not a match


def test_read_verification_without_a_cert_fails():
    with pytest.raises(VerificationFailed, match=RECORDED.hostcert):
        read_verification(ScriptedRemote("==> cert <==\n==> served <==\n==> services <==\n"), PLAN.facts,
                          PLAN.facts.running_services)


def test_verification_script_asks_only_about_running_services():
    facts = dataclasses.replace(RECORDED, services=tuple(
        dataclasses.replace(s, active=False, state="inactive") if s.name == "puppet" else s
        for s in RECORDED.services))
    plan = build_plan(facts, ALT)
    script = verification_script(plan.facts, plan.facts.running_services)
    assert "puppetserver.service" in script
    assert "'puppet.service'" not in script and " puppet.service" not in script


def test_read_verification_parses_crl_serials_and_the_agent_run(tmp_path):
    import base64

    from test_unit_flavors_plan import _write_crl

    _write_crl(tmp_path / "crl.pem", [1, 10])
    crl = base64.encodebytes((tmp_path / "crl.pem").read_bytes()).decode()
    output = (_recorded_section("cert") + _served("cert") + "==> services <==\npuppet active\n"
              + f"==> crl <==\n{crl}==> agent <==\n2\n")
    remote = ScriptedRemote(output)
    result = read_verification(remote, PLAN.facts, ["puppet"], agent=True)
    assert result.revoked_serials == frozenset({"1", "A"})
    assert result.agent_exit == 2
    assert "agent -t --noop" in remote.commands[0]
    assert "agent -t" not in verification_script(PLAN.facts, ["puppet"], agent=False)


def test_an_agent_run_that_reported_nothing_is_a_failure():
    output = _recorded_section("cert") + _served("cert") + "==> agent <==\n"
    result = read_verification(ScriptedRemote(output), PLAN.facts, [], agent=True)
    assert result.agent_exit == -1
    assert any("agent run" in p for p in check_regen(PLAN, result))


def test_a_new_serial_below_the_old_one_is_a_damaged_counter():
    """Puppet 5.5 signs with serial 1 (the CA cert's own) when its counter is not a number."""
    result = good_result()
    result = dataclasses.replace(result, cert=dataclasses.replace(result.cert, serial="1"))
    problems = check_regen(PLAN, result)
    assert any("serial counter was reset or damaged" in p for p in problems), problems
