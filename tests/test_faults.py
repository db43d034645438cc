"""Fault injection, end to end: whatever happens, the master ends up serving a valid cert.

Every test ends by checking: services active, port 8140 serving the cert on disk
(the old one after a rollback, the new one after a resume), the backup intact
with matching sha256 on both ends, and the exit code and message of the run.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import (cut_when, describe, fab_target_args, fab_until, finish, journalled, run_cli, running,
                      write_backup)
from test_regen_pe37 import _cert_facts, _served_fingerprint

pytestmark = pytest.mark.container


def _regen_args(master, tmp_path: Path, *extra: str) -> list[str]:
    return [*fab_target_args(master), "regen", "--yes", "--known-hosts", str(master.known_hosts_path),
            "--backup-dir", str(tmp_path / "bk"), *extra]


def _fab_until(master, tmp_path: Path, *needles: str) -> tuple[subprocess.Popen, list[str]]:
    """Start `fab ... regen --yes` and read its output until every needle was printed."""
    return fab_until(_regen_args(master, tmp_path), *needles)


def assert_serves(master, expected_sha256: str) -> None:
    active = master.check("systemctl is-active " + " ".join(master.flavor.services) + " || true").split()
    assert active == ["active"] * len(master.flavor.services), active
    disk = _cert_facts(master)["sha256"]
    assert disk == expected_sha256, "the cert on disk is not the expected one"
    assert _served_fingerprint(master) == expected_sha256, "port 8140 does not serve the expected cert"


def assert_backup_intact(master, tmp_path: Path) -> Path:
    tarballs = list((tmp_path / "bk").rglob("*.tar.gz"))
    assert len(tarballs) == 1, f"expected exactly one backup, found {tarballs}"
    local = tarballs[0]
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    assert local.with_name(local.name + ".sha256").read_text().split()[0] == sha
    remote = master.check("sha256sum /root/pe-remote-backups/*.tar.gz").split()
    assert remote[0] == sha and len(remote) == 2, f"master holds {remote}"
    return local


# 1. clean or generate fails for real on the master -------------------------------------------

def test_pe37_damaged_serial_counter_is_caught_and_rolled_back(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    # Puppet 5.5's `puppet cert generate` signs with serial 1 (the CA cert's own) when the CA's
    # counter is not a number: it "succeeds", and only verification sees the serial go backwards.
    master.check(f"echo not-a-number > {master.flavor.cadir}/serial")
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 7, describe(proc)
    assert "rolled back" in proc.stderr and "serial counter was reset or damaged" in proc.stderr
    assert_serves(master, old["sha256"])
    assert_backup_intact(master, tmp_path)


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_puppet6_clean_fails_rolls_back(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    # puppetserver runs as `puppet`: a root-owned CA folder is one it cannot write its new CRL into,
    # so the revocation fails for real (the old serial never reaches the CRL).
    master.check(f"chown root:root {master.flavor.cadir} && chmod 0755 {master.flavor.cadir}")
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 7, describe(proc)
    assert "rolled back" in proc.stderr and "Clean" in proc.stderr
    assert_serves(master, old["sha256"])
    crl = master.check(f"openssl crl -in {master.flavor.cadir}/ca_crl.pem -noout -text")
    assert f"Serial Number: {old['serial']}" not in crl, "the rollback must restore the CRL too"
    assert_backup_intact(master, tmp_path)


# 2. the server does not start with what the run put in place: tests/test_generations.py, on every
#    generation.

BOTH = pytest.mark.parametrize("fresh_master", ["pe37", "oss7"], indirect=True)
# Puppet Server 7 and 8 take regen's reload path: the server is never stopped, only the agent.
RELOADS = {"oss7", "oss8"}
# The generate step's processes (its shell, Puppet's command) on every generation: `puppet cert
# generate` or `puppetserver ca generate`. [c]: the watcher's own command line does not match.
GENERATE = "[c](ert|a) generate"


# 3. the SSH connection is cut after the services were stopped ---------------------------------

def _cut_connection_after_stops(master, tmp_path) -> str:
    # Every service the path stops stopped and the new cert made (on PE 3.7 the last stops overlap the
    # cert work; on the reload path the agent alone stops, and the reload follows generate).
    last_stop = master.flavor.agent_service if master.flavor.name in RELOADS else master.flavor.services[-1]
    with cut_when(master, f"{journalled('generate')} && {journalled('stop:' + last_stop)}"):
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 8, describe(proc)
    assert "resume" in out and "--rollback" in out
    return out


@BOTH
def test_connection_cut_then_resume(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    _cut_connection_after_stops(master, tmp_path)
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 0, describe(proc)
    assert "Found an unfinished run" in proc.stdout and "Resuming" in proc.stdout
    new = _cert_facts(master)
    assert new["serial"] != old["serial"] and new["issuer"] == old["issuer"]
    assert_serves(master, new["sha256"])
    local = assert_backup_intact(master, tmp_path)  # exactly one backup: none taken on resume
    with tarfile.open(local) as tar:
        assert tar.extractfile(f"{master.flavor.ssldir.lstrip('/')}/certs/{master.certname}.pem").read()


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_a_resume_after_the_services_came_back_at_boot_stops_them_again_first(fresh_master, tmp_path):
    # The restart path cut off after generate, then the master "rebooted": its stopped services started
    # again, and the agent cached a catalog. The resume runs the stops and the catalog removal again,
    # each before the steps after it (a start racing the stop run again could leave the server stopped).
    master = fresh_master
    old = _cert_facts(master)
    # Cut while generate runs: no later step can begin (the workstation's executor is gone).
    with cut_when(master, running(GENERATE), hold=GENERATE):
        proc = run_cli("fab", *_regen_args(master, tmp_path, "--restart"))
    assert proc.returncode == 8, describe(proc)
    master.check("for i in $(seq 1 600); do pgrep -f '[c]a generate' >/dev/null || exit 0; sleep 0.1; done; exit 1")
    master.check("systemctl start puppetserver puppet")
    waitforlock = " --waitforlock 120" if master.flavor.agent_waitforlock else ""
    master.exec(f"{master.flavor.puppet} agent --test{waitforlock} >/dev/null 2>&1")
    catalog = f"{master.flavor.catalog_dir}/{master.certname}.json"
    master.check(f"test -s {catalog}")
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 0, describe(proc)
    again = next(line for line in proc.stdout.splitlines() if "Run again, their effect is gone since" in line)
    assert "Stop puppetserver" in again and "Stop puppet" in again and "Remove the cached catalog" in again, again
    new = _cert_facts(master)
    assert new["serial"] != old["serial"] and new["issuer"] == old["issuer"]
    assert_serves(master, new["sha256"])
    assert_backup_intact(master, tmp_path)


@BOTH
def test_connection_cut_then_rollback(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    _cut_connection_after_stops(master, tmp_path)
    proc = run_cli("fab", *_regen_args(master, tmp_path, "--rollback"))
    assert proc.returncode == 7, describe(proc)
    assert "rolled back" in proc.stderr
    assert_serves(master, old["sha256"])
    assert_backup_intact(master, tmp_path)
    again = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--known-hosts",
                    str(master.known_hosts_path))
    assert "unfinished run" not in again.stdout, "a rolled-back run must be closed in the journal"


@BOTH
def test_connection_cut_during_generate_the_step_still_finishes(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    with cut_when(master, running(GENERATE), hold=GENERATE):  # held: still running when the cut lands
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 8, describe(proc)
    # generate ran to its end on the master without its connection, and journalled it: the resumed
    # run does not generate again (which would find the new key and fail, or sign a second cert).
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 0, describe(proc)
    assert re.search(rf"Generate a new cert for {re.escape(master.certname)}: already done", proc.stdout), \
        describe(proc)
    new = _cert_facts(master)
    assert new["serial"] != old["serial"] and new["issuer"] == old["issuer"]
    assert_serves(master, new["sha256"])
    assert_backup_intact(master, tmp_path)


# 4. no room on the master for the backup: stops in preflight ----------------------------------

def test_no_room_on_master_stops_in_preflight(staging_master, tmp_path):
    master = staging_master
    old = _cert_facts(master)
    master.check("mkdir -p /root/pe-remote-backups && mount -t tmpfs -o size=16k tmpfs /root/pe-remote-backups")
    try:
        proc = run_cli("fab", *_regen_args(master, tmp_path))
        listing = master.check("ls -A /root/pe-remote-backups")
    finally:
        master.check("umount /root/pe-remote-backups")
    assert proc.returncode == 4, describe(proc)
    assert "not enough room on the master" in proc.stderr
    assert listing.strip() == "", "nothing may be written in preflight"
    assert not (tmp_path / "bk").exists() or not list((tmp_path / "bk").rglob("*.tar.gz"))
    assert_serves(master, old["sha256"])


# 5. the local backup folder cannot be written: stops before any change ------------------------

def test_local_backup_path_is_a_file(staging_master, tmp_path):
    master = staging_master
    old = _cert_facts(master)
    blocker = tmp_path / "bk"
    blocker.write_text("a file where the backup folder should be")
    before = master.exec("ls /root/pe-remote-backups 2>/dev/null")[1]
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 6, describe(proc)
    assert "is not writable" in proc.stderr and "--backup-dir" in proc.stderr
    assert master.exec("ls /root/pe-remote-backups 2>/dev/null")[1] == before
    assert_serves(master, old["sha256"])


def test_local_backup_folder_on_read_only_mount(staging_master, tmp_path):
    master = staging_master
    old = _cert_facts(master)
    folder = tmp_path / "bk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    try:
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert proc.returncode == 6, describe(proc)
    assert "is not writable" in proc.stderr
    assert_serves(master, old["sha256"])


# 6. SIGINT to the running fab during generate -------------------------------------------------

@BOTH
def test_sigint_during_generate_rolls_back(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    proc, seen = _fab_until(master, tmp_path, "Generate a new cert for master.pe-remote.test ...")
    proc.send_signal(signal.SIGINT)
    out = finish(proc, seen)
    assert proc.returncode == 7, out
    assert "interrupt" in out and "rolled back" in out
    assert_serves(master, old["sha256"])
    assert_backup_intact(master, tmp_path)


# restore (a regen's backup put back: tests/test_generations.py), and the monolithic refusal ----------------------------------------------------------

def test_restore_refuses_a_damaged_tarball(staging_master, tmp_path):
    master = staging_master
    tarball = tmp_path / "x-ssl.tar.gz"
    tarball.write_bytes(b"not a backup")
    (tmp_path / "x-ssl.tar.gz.sha256").write_text("0" * 64 + "  x-ssl.tar.gz\n")
    proc = run_cli("fab", *fab_target_args(master), "restore", str(tarball), "--yes",
                   "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 2, describe(proc)
    assert "does not match its sha256" in proc.stderr


@pytest.mark.parametrize("staging_master", ["oss7"], indirect=True)  # its CA folder lies outside the ssldir
def test_restore_refuses_a_tarball_without_the_ca_folder(staging_master, tmp_path):
    """A backup of the ssldir alone would move the live CA aside and put nothing back: refused, exit 2,
    before anything is stopped (the fixture checks the SSL files are unchanged)."""
    master = staging_master
    hostcert = master.flavor.hostcert(master.certname)
    tarball = write_backup(tmp_path / "ssl-only.tar.gz", {hostcert.lstrip("/"): master.check(f"cat {hostcert}").encode()})
    proc = run_cli("fab", *fab_target_args(master), "restore", str(tarball), "--yes",
                   "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 2, describe(proc)
    assert f"holds nothing of {master.flavor.cadir}" in proc.stderr and "layout" in proc.stderr
    assert master.check("systemctl is-active " + " ".join(master.flavor.services)).split() == \
        ["active"] * len(master.flavor.services)


def test_monolithic_looking_pe37_is_refused(staging_master, tmp_path):
    master = staging_master
    master.check("mkdir -p /etc/puppetlabs/puppetdb/ssl")
    try:
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    finally:
        master.check("rm -r /etc/puppetlabs/puppetdb")
    assert proc.returncode == 4, describe(proc)
    assert "monolithic" in proc.stderr and "/etc/puppetlabs/puppetdb/ssl" in proc.stderr
    assert not (tmp_path / "bk").exists()
