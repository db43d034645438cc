"""Unit tests: the detected generation is cross-checked against what the host runs, before any change.

Detection reads version markers (PE's version file, puppet's own version); a PE 3.7 master whose
marker is gone looks like open-source Puppet 5 by version. `generation_problem` compares the chosen
generation with the services that exist and the service whose process listens on 8140.
"""

from __future__ import annotations

import pytest

from pe_remote.discovery import generation_problem, parse_discovery
from pe_remote.errors import Refused
from pe_remote.flavors import PE37, PUPPET5, PUPPET6
from test_unit_discovery import OSS7, pe37_variant, sub


def without_listener(text: str) -> str:
    """The output less its listener section (as discovery before the listener check printed it)."""
    head, _, rest = text.partition("==> listener <==\n")
    return head + (rest[rest.index("==> "):] if "==> " in rest else "")


def with_listener(text: str, line: str) -> str:
    return without_listener(text) + f"==> listener <==\n{line}\n"


def pe37_on_puppet5(marker: bool = True) -> str:
    """A PE 3.7 layout on Puppet 5.5, as the staging master has it (Debian's own units installed too)."""
    text = pe37_variant()
    text = sub(text, "==> puppet_version <==\n3.7.4 (Puppet Enterprise 3.7.2)\n",
               "==> puppet_version <==\n" + ("" if marker else "5.5.22\n"))
    if not marker:
        text = sub(text, "==> pe_version <==\n3.7.2\n", "==> pe_version <==\n")
    text = sub(text, "\npuppet absent\n", "\npuppet inactive\n")
    return sub(text, "\npuppet-master absent\n", "\npuppet-master inactive\n")


def test_pe37_without_its_version_file_is_refused_naming_what_serves_8140():
    facts = parse_discovery(with_listener(pe37_on_puppet5(marker=False), "unit=pe-puppetserver"))
    assert facts.flavor is PUPPET5  # by puppet --version alone
    problem = generation_problem(facts)
    assert "puppet --version 5.5.22" in problem
    assert "served by pe-puppetserver.service" in problem
    assert "pe37 or pe2016" in problem and "--flavor" in problem


def test_the_same_master_with_flavor_named_is_accepted():
    facts = parse_discovery(with_listener(pe37_on_puppet5(marker=False), "unit=pe-puppetserver"),
                            flavor_override="pe37")
    assert facts.flavor is PE37
    assert generation_problem(facts, overridden=True) is None


def test_pe37_with_its_version_file_fits():
    facts = parse_discovery(with_listener(pe37_on_puppet5(), "unit=pe-puppetserver"))
    assert facts.flavor is PE37 and facts.serving_unit == "pe-puppetserver"
    assert generation_problem(facts) is None


def test_generation_without_any_of_its_services_is_refused():
    facts = parse_discovery(with_listener(OSS7, "unit="), flavor_override="pe37")
    problem = generation_problem(facts, overridden=True)
    assert "--flavor pe37" in problem and "none of its services" in problem


def test_server_service_missing_is_refused():
    text = sub(OSS7, "\npuppetserver active\n", "\npuppetserver absent\n")
    problem = generation_problem(parse_discovery(with_listener(text, "unit=")))
    assert "server service (puppetserver) does not exist" in problem


def test_nothing_listening_is_not_a_mismatch():
    # A stopped server (a resumed run, a master already down): only the services are checked.
    facts = parse_discovery(with_listener(OSS7, "unit="))
    assert facts.serving_unit == ""
    assert generation_problem(facts) is None


@pytest.mark.parametrize("line", ["unit=?", "unit=bad unit;x", ""])
def test_unknown_or_hostile_listener_is_unknown(line):
    facts = parse_discovery(with_listener(OSS7, line))
    assert facts.serving_unit is None
    assert generation_problem(facts) is None


def test_older_discovery_output_without_the_listener_section_is_unknown():
    assert parse_discovery(OSS7).serving_unit == "puppetserver"
    assert parse_discovery(without_listener(OSS7)).serving_unit is None


def test_puppet5_server_is_whichever_the_host_has():
    text = sub(OSS7, "==> puppet_version <==\n7.23.0\n", "==> puppet_version <==\n5.5.22\n")
    text = sub(text, "\npuppetserver active\n", "\npuppetserver absent\n")
    text = sub(text, "\npuppet-master absent\n", "\npuppet-master active\n")
    facts = parse_discovery(with_listener(text, "unit=puppet-master"))
    assert facts.flavor is PUPPET5
    assert facts.server_service == "puppet-master"
    assert generation_problem(facts) is None
    assert parse_discovery(OSS7).server_service == "puppetserver"
    assert parse_discovery(OSS7).flavor is PUPPET6


def test_discover_raises_refused_with_exit_4(monkeypatch):
    from pe_remote import discovery

    text = with_listener(pe37_on_puppet5(marker=False), "unit=pe-puppetserver")

    class FakeRemote:
        def run(self, command, check=True):
            return type("R", (), {"ok": True, "stdout": text, "stderr": "", "exit_status": 0})()

    with pytest.raises(Refused) as info:
        discovery.discover(FakeRemote())
    assert info.value.exit_code == 4 and "Nothing was changed" in str(info.value)
