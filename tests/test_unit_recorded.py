"""Unit tests on discovery output recorded from the six staging masters (Puppet's own code:
Puppet 5.5 on bullseye, puppetserver 7 on bookworm, puppetserver 8 on trixie). Re-record with the
discovery script run on a started master (see tests/data/recorded/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_remote.commands import sections as protocol
from pe_remote.discovery import generation_problem, parse_discovery, parse_settings
from pe_remote.plan import build_plan

RECORDED = Path(__file__).parent / "data" / "recorded"
C = "master.pe-remote.test"

EXPECTED = {  # flavor, server service, agent's client_datadir, credential copies, puppet
    "pe37": ("pe37", "pe-puppetserver", "/var/opt/lib/pe-puppet/client_data", (), "/opt/puppet/bin/puppet"),
    "pe2016": ("pe2016", "pe-puppetserver", "/opt/puppetlabs/puppet/cache/client_data",
               ("/etc/puppetlabs/orchestration-services/ssl",), "/opt/puppetlabs/bin/puppet"),
    "puppet5": ("puppet5", "puppet-master", "/var/cache/puppet/client_data", (), "/usr/bin/puppet"),
    "oss7": ("puppet6", "puppetserver", "/var/cache/puppet/client_data", (), "/usr/bin/puppet"),
    "oss8": ("puppet6", "puppetserver", "/var/cache/puppet/client_data", (), "/usr/bin/puppet"),
    "pe2019": ("pe2019", "pe-puppetserver", "/opt/puppetlabs/puppet/cache/client_data", (),
               "/opt/puppetlabs/bin/puppet"),
}


def recorded(name: str) -> str:
    return (RECORDED / f"{name}.txt").read_text()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_generation_is_detected_and_fits_its_host(name):
    flavor, server, client_datadir, copies, puppet = EXPECTED[name]
    facts = parse_discovery(recorded(name))
    assert facts.flavor.name == flavor
    assert facts.server_service == server and facts.serving_unit == server
    assert facts.client_datadir == client_datadir
    assert facts.copy_dirs == copies
    assert facts.puppet == puppet
    assert facts.certname == C and facts.dns_alt_names == ("puppet", "puppet.pe-remote.test")
    assert facts.ca_key_present and facts.cert is not None
    assert generation_problem(facts) is None
    plan = build_plan(facts, facts.dns_alt_names)
    assert any(s.key == "wait-server" for s in plan.steps)
    assert ("copy-credentials" in [s.key for s in plan.steps]) is bool(copies)


def test_debian_aliases_are_not_services_of_their_own():
    facts = parse_discovery(recorded("puppet5"))
    assert facts.service("puppet-master").active
    assert not facts.service("puppetmaster").exists  # Debian's Alias= of puppet-master
    assert [s.key for s in build_plan(facts, ()).steps].count("stop:puppet-master") == 1
    assert not any("puppetmaster" in s.key for s in build_plan(facts, ()).steps)


def test_puppet5_catalog_is_the_agents_not_the_master_sections():
    text = recorded("puppet5")
    facts = parse_discovery(text)
    master_section = parse_settings(protocol.split(text)["settings"])
    assert master_section["client_datadir"] == "/var/lib/puppet/client_data"  # [master] section
    assert facts.catalog_path == f"/var/cache/puppet/client_data/catalog/{C}.json"


def test_real_pe37_without_its_version_file_is_refused():
    text = recorded("pe37").replace("==> pe_version <==\n3.7.2\n==> puppet_version <==\n\n",
                                    "==> pe_version <==\n==> puppet_version <==\n5.5.22\n")
    facts = parse_discovery(text)
    assert facts.flavor.name == "puppet5"
    problem = generation_problem(facts)
    assert "served by pe-puppetserver.service" in problem and "pe37 or pe2016" in problem
