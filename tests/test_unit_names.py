"""Unit tests for pe_remote.names: what may reach a shell on the master."""

from __future__ import annotations

import pytest

from pe_remote.errors import InputError, InvalidName
from pe_remote.names import is_ip_address, parse_alt_names, san_entries, validate_alt_name, validate_certname

HOSTILE = [
    "a;b",
    "$(reboot)",
    "`id`",
    "a b",
    "*.x",
    "a&&b",
    "a|b",
    "a>b",
    "x'y",
    'x"y',
    "a\nb",
    "a/b",
    "../etc",
    "-rf",
]


# --- certnames -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "master",
    "master.pe-remote.test",
    "puppet-01.example.com",
    "a",
    "under_score.example.com",
    "1.2.3.4",  # digits-only labels are host names too
    "a" * 63 + ".example.com",  # longest legal label
])
def test_valid_certnames_are_returned_unchanged(name):
    assert validate_certname(name) == name


@pytest.mark.parametrize("name", HOSTILE + [
    "Master.example.com",  # Puppet refuses upper case certnames
    "MASTER",
    "",
    "a" * 64 + ".example.com",  # label of 64 characters
    ".".join(["a" * 60] * 5),  # 304 characters in total
    "-leading-dash",
    "trailing-dash-",
    "a..b",
    "trailing.dot.",
    ".leading.dot",
    "::1",  # not a host name
])
def test_invalid_certnames_are_refused(name):
    with pytest.raises(InvalidName) as info:
        validate_certname(name)
    assert repr(name) in str(info.value)


def test_invalid_certname_message_names_its_source():
    with pytest.raises(InvalidName, match="the master's certname 'a;b'"):
        validate_certname("a;b", source="the master's certname")


def test_invalid_name_is_an_input_error_with_exit_code_2():
    with pytest.raises(InputError) as info:
        validate_certname("$(reboot)")
    assert info.value.exit_code == 2


def test_certname_length_limit_is_253():
    label = "a" * 63
    name_253 = ".".join([label, label, label, "a" * 61])
    assert len(name_253) == 253
    assert validate_certname(name_253) == name_253
    with pytest.raises(InvalidName):
        validate_certname(name_253 + "b")


# --- alt names --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("puppet", "puppet"),
    ("puppet.example.com", "puppet.example.com"),
    ("Puppet.Example.COM", "puppet.example.com"),  # alt names are lower-cased
    ("  puppet  ", "puppet"),
    ("DNS:puppet", "puppet"),
    ("dns:puppet", "puppet"),
    ("DNS:Puppet.Example.com", "puppet.example.com"),
    ("IP:10.0.0.1", "10.0.0.1"),
    ("ip:10.0.0.1", "10.0.0.1"),
    ("10.0.0.1", "10.0.0.1"),
    ("192.168.100.254", "192.168.100.254"),
    ("::1", "::1"),
    ("IP:::1", "::1"),
    ("2001:db8::1", "2001:db8::1"),
    ("IP:fe80::1", "fe80::1"),
])
def test_valid_alt_names(value, expected):
    assert validate_alt_name(value) == expected


@pytest.mark.parametrize("value", HOSTILE + [
    "",
    "   ",
    "DNS:",
    "IP:",
    "a" * 64,
    "a" * 254,
    "10.0.0.1/24",
    "DNS:a;b",
    "IP:$(id)",
    "email:root@example.com",
    "*.example.com",
])
def test_invalid_alt_names_are_refused(value):
    with pytest.raises(InvalidName) as info:
        validate_alt_name(value)
    assert repr(value) in str(info.value)


def test_invalid_alt_name_message_names_its_source():
    with pytest.raises(InvalidName, match=r"--dns-alt-names '\*\.x'"):
        validate_alt_name("*.x", source="--dns-alt-names")


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.1", True),
    ("255.255.255.255", True),
    ("::1", True),
    ("2001:db8::1", True),
    ("10.0.0.256", False),
    ("10.0.0", False),
    ("puppet", False),
    ("", False),
    ("[::1]", False),
])
def test_is_ip_address(value, expected):
    assert is_ip_address(value) is expected


# --- parse_alt_names --------------------------------------------------------------------------

def test_parse_alt_names_none_is_empty():
    assert parse_alt_names(None) == ()


def test_parse_alt_names_empty_string_is_empty():
    assert parse_alt_names("") == ()
    assert parse_alt_names(" , ,") == ()


def test_parse_alt_names_splits_strips_and_keeps_order():
    assert parse_alt_names("puppet, puppet.example.com,10.0.0.1") == ("puppet", "puppet.example.com", "10.0.0.1")


def test_parse_alt_names_deduplicates_across_prefixes_and_case():
    value = "puppet,DNS:puppet,PUPPET, puppet ,IP:10.0.0.1,10.0.0.1,b,a"
    assert parse_alt_names(value) == ("puppet", "10.0.0.1", "b", "a")


def test_parse_alt_names_accepts_a_list_and_a_tuple():
    assert parse_alt_names(["b", "a", "b"]) == ("b", "a")
    assert parse_alt_names(("DNS:x", "IP:::1")) == ("x", "::1")


@pytest.mark.parametrize("value", ["puppet,a;b", "puppet,$(reboot)", "puppet,a b", "*.x,puppet", ["ok", "a;b"]])
def test_parse_alt_names_refuses_any_hostile_member(value):
    with pytest.raises(InvalidName):
        parse_alt_names(value)


def test_parse_alt_names_error_names_the_source():
    with pytest.raises(InvalidName, match="inventory.toml: host 'x'"):
        parse_alt_names("ok,a;b", source="inventory.toml: host 'x'")


# --- san_entries ------------------------------------------------------------------------------

def test_san_entries_adds_the_certname_itself():
    assert san_entries("master.example.com", ()) == frozenset({"DNS:master.example.com"})


def test_san_entries_dns_and_ipv4():
    assert san_entries("m.example.com", ("puppet", "10.0.0.1")) == frozenset(
        {"DNS:m.example.com", "DNS:puppet", "IP:10.0.0.1"})


def test_san_entries_certname_repeated_in_alt_names_appears_once():
    entries = san_entries("m.example.com", ("m.example.com", "puppet"))
    assert entries == frozenset({"DNS:m.example.com", "DNS:puppet"})


def test_san_entries_ipv6_is_an_ip_entry():
    entries = san_entries("m", ("::1",))
    assert "DNS:::1" not in entries
    assert "IP:::1" in entries


def test_san_entries_ipv6_in_canonical_form_as_cryptography_reads_it():
    # commands/certs.py reads an IP SAN as ipaddress prints it: compressed, lower case, whatever was asked.
    assert san_entries("m", ("::1", "2001:DB8:0:0::1")) == frozenset(
        {"DNS:m", "IP:::1", "IP:2001:db8::1"})
