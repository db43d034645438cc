"""End to end, Puppet 6+ (open source, `puppetserver ca`) on the oss7 staging master."""

from __future__ import annotations

import pytest

from conftest import describe, fab_target_args, run_cli
from test_regen_pe37 import _cert_facts, _served_fingerprint

pytestmark = pytest.mark.container


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_fab_regen_puppet6_end_to_end(fresh_master, tmp_path):
    master = fresh_master
    before = _cert_facts(master)
    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"))
    assert proc.returncode == 0, describe(proc)
    after = _cert_facts(master)
    assert after["serial"] != before["serial"]
    assert after["issuer"] == before["issuer"]
    assert after["sans"] == {f"DNS:{master.certname}"} | {f"DNS:{n}" for n in master.alt_names}
    crl = master.check(f"openssl crl -in {master.flavor.cadir}/ca_crl.pem -noout -text")
    assert f"Serial Number: {before['serial']}" in crl, crl
    assert master.check("systemctl is-active puppet puppetserver").split() == ["active", "active"]
    assert _served_fingerprint(master) == after["sha256"]
    code, out = master.exec("puppet agent -t --waitforlock 2 --maxwaitforlock 120")
    assert code in (0, 2), out[-2000:]


@pytest.mark.parametrize("staging_master", ["oss7"], indirect=True)
def test_discover_and_dry_run_on_puppet6(staging_master, tmp_path):
    master = staging_master
    proc = run_cli("fab", *fab_target_args(master), "discover", "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 0, describe(proc)
    assert "flavor:          puppet6" in proc.stdout
    before = master.ssl_checksums()
    proc = run_cli("fab", *fab_target_args(master), "regen", "--dry-run",
                   "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 0, describe(proc)
    clean = proc.stdout.find("/usr/bin/puppetserver ca clean --certname master.pe-remote.test")
    stop = proc.stdout.find("puppet resource service puppetserver ensure=stopped")
    generate = proc.stdout.find("/usr/bin/puppetserver ca generate --certname master.pe-remote.test "
                                "--subject-alt-names puppet,puppet.pe-remote.test --ca-client")
    assert 0 <= clean < stop < generate, proc.stdout
    assert master.ssl_checksums() == before


@pytest.mark.parametrize("staging_master", ["pe37"], indirect=True)
def test_discover_names_pe37(staging_master):
    proc = run_cli("fab", *fab_target_args(staging_master), "discover",
                   "--known-hosts", str(staging_master.known_hosts_path))
    assert proc.returncode == 0, describe(proc)
    assert "flavor:          pe37" in proc.stdout
    assert "PE 3.7.2" in proc.stdout
