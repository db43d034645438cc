"""Unit tests: the new cert's alt names never lose a name of the current cert unless it is dropped by name.

On Puppet 6+ masters set up with `puppetserver ca setup --subject-alt-names`, puppet.conf usually names
no dns_alt_names although the cert carries them: a default taken from puppet.conf alone would make a
cert for the certname only, and every agent reaching the master as `puppet` would fail.
"""

from __future__ import annotations

import pytest

from pe_remote.discovery import parse_discovery, parse_settings
from pe_remote.errors import InvalidName
from pe_remote.names import choose_alt_names, sans_to_names
from pe_remote.plan import build_plan
from pe_remote.render import render_plan
from test_unit_discovery import OSS7, set_setting

C = "master.pe-remote.test"
CERT = ("puppet", "puppet-lb.corp.test", "puppet.corp.test")


def test_cert_sans_become_names_without_the_certname():
    sans = frozenset({f"DNS:{C}", "DNS:puppet", "DNS:Puppet.Corp.Test", "IP:10.0.0.5",
                      "IP:fe80::1", "email:x@y"})
    assert sans_to_names(C, sans) == ("10.0.0.5", "fe80::1", "puppet", "puppet.corp.test")


def test_default_keeps_every_name_of_the_current_cert_when_none_is_configured():
    assert choose_alt_names(C, (), CERT, None) == CERT


def test_default_is_configured_and_current_together():
    assert choose_alt_names(C, ("puppet", "new.corp.test"), CERT, None) == ("puppet", "new.corp.test",
                                                                           "puppet-lb.corp.test", "puppet.corp.test")


def test_given_names_that_leave_out_a_current_one_are_refused_naming_the_fix():
    with pytest.raises(InvalidName) as info:
        choose_alt_names(C, (), CERT, ("puppet",))
    message = str(info.value)
    assert "puppet-lb.corp.test, puppet.corp.test" in message
    assert "--drop-alt-names puppet-lb.corp.test,puppet.corp.test" in message
    assert info.value.exit_code == 2


def test_drop_removes_exactly_the_names_given():
    assert choose_alt_names(C, (), CERT, None, drop=("puppet-lb.corp.test",)) == ("puppet", "puppet.corp.test")
    assert choose_alt_names(C, (), CERT, ("puppet",), drop=("puppet-lb.corp.test", "puppet.corp.test")) == ("puppet",)


def test_dropping_a_name_nobody_has_is_a_typo():
    with pytest.raises(InvalidName, match="puppet-lb.corp.tset"):
        choose_alt_names(C, (), CERT, None, drop=("puppet-lb.corp.tset",))


def test_the_certname_among_the_alt_names_is_left_out():
    assert choose_alt_names(C, (C, "puppet"), (), None) == ("puppet",)
    assert choose_alt_names(C, (), (), (C,)) == ()


def test_empty_dns_alt_names_line_is_an_empty_setting():
    assert parse_settings(["dns_alt_names =", "certname = x", "ssldir = "]) == {
        "dns_alt_names": "", "certname": "x", "ssldir": ""}
    facts = parse_discovery(set_setting(OSS7, "dns_alt_names", "").replace("dns_alt_names = \n", "dns_alt_names =\n"))
    assert facts.dns_alt_names == ()


def test_the_plan_shows_the_dropped_names():
    facts = parse_discovery(set_setting(OSS7, "dns_alt_names", ""))
    names = choose_alt_names(C, facts.dns_alt_names, sans_to_names(C, facts.cert.sans), None, drop=("puppet",))
    plan = build_plan(facts, names)
    assert plan.dropped_sans == ("DNS:puppet",)
    assert "DROPPED from the current cert (--drop-alt-names): DNS:puppet" in render_plan(plan, "tar", "h")
