"""End to end, Puppet 6+ (open source, `puppetserver ca`): a master whose puppet.conf names no alt names.
(Discovery and the dry run of every generation: test_generations.py.)"""

from __future__ import annotations

import pytest

from conftest import describe, fab_target_args, run_cli
from test_regen_pe37 import _cert_facts

pytestmark = pytest.mark.container


@pytest.mark.parametrize("fresh_master", ["oss8"], indirect=True)
def test_yes_never_drops_an_alt_name_the_cert_carries(fresh_master, tmp_path):
    """puppet.conf names no dns_alt_names (as `puppetserver ca setup --subject-alt-names` leaves it):
    the cert is the record of the names agents use, and --yes keeps every one of them."""
    master = fresh_master
    master.check("sed -i '/^dns_alt_names/d' /etc/puppet/puppet.conf")
    assert master.check("puppet config print dns_alt_names --section server").strip() == ""
    wanted = {f"DNS:{master.certname}", "DNS:puppet", "DNS:puppet.pe-remote.test"}
    assert _cert_facts(master)["sans"] == wanted

    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes", "--known-hosts",
                   str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"))
    assert proc.returncode == 0, describe(proc)
    first = _cert_facts(master)
    assert first["sans"] == wanted

    # Names given that leave one out: refused before any change, naming the way to drop it.
    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes", "--dns-alt-names", "puppet",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk2"))
    assert proc.returncode == 2, describe(proc)
    assert "--drop-alt-names puppet.pe-remote.test" in proc.stderr
    assert _cert_facts(master)["serial"] == first["serial"]

    # Dropped by name: exactly that one goes, and the plan said so.
    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes", "--drop-alt-names", "puppet",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk3"))
    assert proc.returncode == 0, describe(proc)
    assert _cert_facts(master)["sans"] == wanted - {"DNS:puppet"}
    assert "DNS:puppet" in proc.stdout and "--drop-alt-names" in proc.stdout  # the warning names it
