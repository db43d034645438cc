"""End to end, run integrity: never the wrong backup, never two runs at once, nothing but SSL files
restored. On the PE 3.7-layout master (Puppet 5.5's own `puppet cert`)."""

from __future__ import annotations

import re

import pytest

from conftest import cut_when, describe, fab_target_args, journalled, run_cli, write_backup
from conftest import finish as _finish
from test_faults import _fab_until, _regen_args
from test_regen_pe37 import _cert_facts

pytestmark = pytest.mark.container


def test_a_journal_the_master_no_longer_matches_is_not_resumed_nor_rolled_back(fresh_master, tmp_path):
    master = fresh_master
    puppet = master.flavor.puppet
    old = _cert_facts(master)
    # A run cut off right after generate ...
    with cut_when(master, journalled("generate")):
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 8, describe(proc)
    # ... the operator then put the backup back by hand, and the CA signed an agent's cert since.
    (backup,) = master.check("ls /root/pe-remote-backups/*.tar.gz").split()
    services = " ".join(master.flavor.services)
    master.check(f"systemctl stop {services} && rm -rf {master.flavor.ssldir} && tar -xzpf {backup} -C / && "
                 f"systemctl start {services}")
    master.check(f"{puppet} cert generate agent1.pe-remote.test")
    assert _cert_facts(master)["serial"] == old["serial"]
    before = master.ssl_checksums()

    # regen does not "resume" it: the journal says generate was done, the master shows the old cert.
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 4, describe(proc)
    assert "was done, but the master does not show it" in proc.stderr and "--abandon" in proc.stderr
    assert master.ssl_checksums() == before

    # --rollback does not put the old backup over the CA that signed agent1 since.
    proc = run_cli("fab", *_regen_args(master, tmp_path, "--rollback"))
    assert proc.returncode == 8, describe(proc)
    assert "NOT rolled back: the CA has changed since the backup" in proc.stderr
    assert "agent1.pe-remote.test" in proc.stderr
    assert master.exec(f"test -s {master.flavor.cadir}/signed/agent1.pe-remote.test.pem")[0] == 0
    assert master.check("systemctl is-active " + services).split() == ["active"] * len(master.flavor.services)

    # --abandon closes it, touching nothing else; then a new regen runs normally.
    run_id = re.search(r"--abandon ([0-9TZ]{16}-[a-z0-9.-]+[a-z0-9])", proc.stderr)[1]
    after_refusal = master.ssl_checksums()
    proc = run_cli("fab", *_regen_args(master, tmp_path, "--abandon", run_id))
    assert proc.returncode == 0, describe(proc)
    assert f"Run {run_id} closed as abandoned" in proc.stdout
    assert master.ssl_checksums() == after_refusal
    proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 0, describe(proc)
    assert "unfinished run" not in proc.stdout
    assert master.exec(f"test -s {master.flavor.cadir}/signed/agent1.pe-remote.test.pem")[0] == 0


def test_a_second_run_on_the_same_master_is_refused_at_once(fresh_master, tmp_path):
    master = fresh_master
    first, seen = _fab_until(master, tmp_path, "Backing up")
    try:
        proc = run_cli("fab", *_regen_args(master, tmp_path / "second"), timeout=120)
        assert proc.returncode == 4, describe(proc)
        assert "another run holds" in proc.stderr and "pe-remote regen by" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        out = _finish(first, seen)
    assert first.returncode == 0, out
    assert len(list((tmp_path / "bk").rglob("*.tar.gz"))) == 1
    assert not (tmp_path / "second" / "bk").exists() or not list((tmp_path / "second" / "bk").rglob("*.tar.gz"))


def test_restore_refuses_a_tarball_reaching_outside_the_ssl_folders(staging_master, tmp_path):
    master = staging_master
    tarball = write_backup(tmp_path / "evil-ssl.tar.gz", {
        f"{master.flavor.ssldir.lstrip('/')}/certs/x.pem": b"x",
        "etc/cron.d/pe-remote-evil": b"* * * * * root touch /tmp/pwned\n"})
    proc = run_cli("fab", *fab_target_args(master), "restore", str(tarball), "--yes",
                   "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 2, describe(proc)
    assert "etc/cron.d/pe-remote-evil" in proc.stderr and "refusing to restore it" in proc.stderr
    assert master.exec("test -e /etc/cron.d/pe-remote-evil")[0] != 0
    assert master.check("systemctl is-active " + " ".join(master.flavor.services)).split() == \
        ["active"] * len(master.flavor.services)


def test_a_local_journal_copy_that_cannot_be_written_mid_run_neither_crashes_nor_stops_it(fresh_master, tmp_path):
    """Before: the local journal copy failing to write (a full disk) raised OSError after `clean`:
    traceback, exit 1, no rollback, the master left without its cert. (A full tmpfs does not make a
    small append fail reliably; a folder in the file's place fails every write, as a full disk does.)"""
    master = fresh_master
    old = _cert_facts(master)
    proc, seen = _fab_until(master, tmp_path, "Backup:")
    (tarball,) = (tmp_path / "bk").rglob("*.tar.gz")
    journal = tarball.with_name(tarball.name + ".journal")
    journal.unlink(missing_ok=True)
    journal.mkdir()
    out = _finish(proc, seen)
    assert proc.returncode == 0, out
    assert "cannot write the local journal copy" in out and "Traceback" not in out
    assert _cert_facts(master)["serial"] != old["serial"]
    assert master.exec("grep -q '\"event\": \"finished\"' /root/pe-remote-backups/*.journal")[0] == 0
