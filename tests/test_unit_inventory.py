"""Unit tests for pe_remote.inventory: inventory.toml, `user@host:port` targets, and resolving a --host."""

from __future__ import annotations

from pathlib import Path

import pytest

from pe_remote.errors import InputError, InventoryError
from pe_remote.inventory import Inventory, Target, load_inventory, parse_target, resolve_target

GOOD = """\
default = "staging"

[hosts.staging]
address = "puppet-staging.example.com"
port = 2222
user = "root"
key_file = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/pe_known_hosts"
dns_alt_names = ["puppet", "DNS:Puppet.Example.com", "IP:10.0.0.5", "puppet"]
backup_dir = "/srv/backups"

[hosts.minimal]
address = "10.0.0.7"

[hosts.v6]
address = "[2001:db8::7]"
"""


def write(tmp_path: Path, text: str, name: str = "inventory.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    return path, str(info.value)


# --- a good file ------------------------------------------------------------------------------

def test_good_inventory_loads_every_key(tmp_path):
    path = write(tmp_path, GOOD)
    inv = load_inventory(path)
    assert inv.path == path
    assert inv.default == "staging"
    assert sorted(inv.hosts) == ["minimal", "staging", "v6"]
    assert inv.hosts["staging"] == Target(
        address="puppet-staging.example.com",
        port=2222,
        user="root",
        key_files=("~/.ssh/id_ed25519",),
        known_hosts="~/.ssh/pe_known_hosts",
        alt_names=("puppet", "puppet.example.com", "10.0.0.5"),
        backup_dir="/srv/backups",
        alias="staging",
    )


def test_good_inventory_defaults(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    minimal = inv.hosts["minimal"]
    assert minimal == Target(address="10.0.0.7", alias="minimal")
    assert (minimal.port, minimal.user, minimal.key_files, minimal.alt_names) == (22, "root", (), None)
    assert minimal.known_hosts == "~/.ssh/known_hosts"
    assert minimal.backup_dir == "backups"
    assert minimal.label == "minimal"


def test_bracketed_ipv6_address_is_unbracketed(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    assert inv.hosts["v6"].address == "2001:db8::7"


def test_empty_dns_alt_names_list_means_no_alt_names(tmp_path):
    inv = load_inventory(write(tmp_path, '[hosts.a]\naddress = "h.example.com"\ndns_alt_names = []\n'))
    assert inv.hosts["a"].alt_names == ()


def test_missing_file_is_an_empty_inventory(tmp_path):
    inv = load_inventory(tmp_path / "nope.toml")
    assert inv == Inventory(tmp_path / "nope.toml", {}, None)


def test_empty_file_is_an_empty_inventory(tmp_path):
    inv = load_inventory(write(tmp_path, "# only comments\n"))
    assert inv.hosts == {} and inv.default is None


# --- bad files: every message names the file, the host and the key ---------------------------

def test_bad_toml_names_the_file(tmp_path):
    path, message = load_error(tmp_path, '[hosts.a]\naddress = "unterminated\n')
    assert str(path) in message
    assert "not valid TOML" in message


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "inventory.toml"
    path.mkdir()  # a folder where the file should be: reading it fails
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_unknown_top_level_key(tmp_path):
    path, message = load_error(tmp_path, 'defualt = "a"\n[hosts.a]\naddress = "h"\n')
    assert str(path) in message
    assert "'defualt'" in message
    assert "top-level" in message


def test_hosts_not_a_table(tmp_path):
    path, message = load_error(tmp_path, 'hosts = ["a"]\n')
    assert str(path) in message
    assert "'hosts'" in message


def test_host_entry_not_a_table(tmp_path):
    path, message = load_error(tmp_path, '[hosts]\nstaging = "puppet.example.com"\n')
    assert str(path) in message
    assert "'staging'" in message
    assert "[hosts.staging]" in message


def test_unknown_host_key(tmp_path):
    path, message = load_error(tmp_path, '[hosts.staging]\naddress = "h"\nprot = 22\n')
    assert str(path) in message
    assert "host 'staging'" in message
    assert "'prot'" in message
    assert "port" in message.split("known:")[1]  # lists the known keys


def test_missing_address(tmp_path):
    path, message = load_error(tmp_path, '[hosts.staging]\nport = 22\n')
    assert str(path) in message
    assert "host 'staging'" in message
    assert "'address'" in message
    assert "missing" in message


@pytest.mark.parametrize("line, key", [
    ('port = "22"', "port"),
    ("port = true", "port"),  # a bool is an int in Python: must still be refused
    ("port = 22.0", "port"),
    ('address = 10', "address"),
    ('user = 0', "user"),
    ('key_file = ["a", "b"]', "key_file"),
    ('known_hosts = false', "known_hosts"),
    ('backup_dir = 1', "backup_dir"),
    ('dns_alt_names = "puppet,puppet.example.com"', "dns_alt_names"),
    ('dns_alt_names = ["puppet", 1]', "dns_alt_names"),
    ('dns_alt_names = {a = "b"}', "dns_alt_names"),
])
def test_wrong_types(tmp_path, line, key):
    text = '[hosts.staging]\naddress = "h.example.com"\n' + line + "\n"
    if line.startswith("address"):
        text = "[hosts.staging]\n" + line + "\n"
    path, message = load_error(tmp_path, text)
    assert str(path) in message
    assert "host 'staging'" in message
    assert f"'{key}'" in message
    assert "must be" in message


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_port_out_of_range(tmp_path, port):
    path, message = load_error(tmp_path, f'[hosts.staging]\naddress = "h"\nport = {port}\n')
    assert str(path) in message
    assert "host 'staging'" in message
    assert "'port'" in message
    assert str(port) in message


@pytest.mark.parametrize("port", [1, 22, 65535])
def test_port_range_edges_are_accepted(tmp_path, port):
    inv = load_inventory(write(tmp_path, f'[hosts.staging]\naddress = "h"\nport = {port}\n'))
    assert inv.hosts["staging"].port == port


def test_default_naming_an_undefined_host(tmp_path):
    path, message = load_error(tmp_path, 'default = "prod"\n[hosts.staging]\naddress = "h"\n')
    assert str(path) in message
    assert "'prod'" in message
    assert "default" in message


@pytest.mark.parametrize("alt", ["a;b", "$(reboot)", "a b", "*.x", "`id`"])
def test_hostile_alt_names(tmp_path, alt):
    path, message = load_error(tmp_path, f"[hosts.staging]\naddress = \"h\"\ndns_alt_names = ['puppet', '{alt}']\n")
    assert str(path) in message
    assert "host 'staging'" in message
    assert "'dns_alt_names'" in message
    assert repr(alt) in message


@pytest.mark.parametrize("address", ["a;b", "$(reboot)", "h b", "-oProxyCommand=x", "", "[::1", "h_"])
def test_hostile_address(tmp_path, address):
    path, message = load_error(tmp_path, f"[hosts.staging]\naddress = '{address}'\n")
    assert str(path) in message
    assert "host 'staging'" in message
    assert "'address'" in message


def test_first_bad_host_is_reported_with_its_own_name(tmp_path):
    text = '[hosts.good]\naddress = "h"\n[hosts.bad]\naddress = "h"\nport = "x"\n'
    _, message = load_error(tmp_path, text)
    assert "host 'bad'" in message
    assert "host 'good'" not in message


# --- parse_target ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, address, port, user", [
    ("root@h:2222", "h", 2222, "root"),
    ("h", "h", 22, "root"),
    ("h.example.com", "h.example.com", 22, "root"),
    ("admin@h.example.com", "h.example.com", 22, "admin"),  # refused later, at connect
    ("10.0.0.1:2200", "10.0.0.1", 2200, "root"),
    ("[::1]:22", "::1", 22, "root"),
    ("[::1]:2222", "::1", 2222, "root"),
    ("root@[2001:db8::1]:65535", "2001:db8::1", 65535, "root"),
    ("[::1]", "::1", 22, "root"),
    ("::1", "::1", 22, "root"),
    ("h:1", "h", 1, "root"),
])
def test_parse_target(spec, address, port, user):
    target = parse_target(spec)
    assert (target.address, target.port, target.user) == (address, port, user)
    assert target.alias is None


@pytest.mark.parametrize("spec", ["h:0", "h:65536", "h:99999", "h:-1", "h:abc", "h:22a", "h:+22", "h: 22",
                                  "[::1]:0", "[::1]:x", "root@h:70000"])
def test_parse_target_bad_ports(spec):
    with pytest.raises(InputError) as info:
        parse_target(spec)
    assert repr(spec) in str(info.value)
    assert "port" in str(info.value)


@pytest.mark.parametrize("spec", ["h;reboot", "$(id)", "root@", ":22", "", "h b", "-oProxyCommand=x"])
def test_parse_target_bad_hosts(spec):
    with pytest.raises(InputError) as info:
        parse_target(spec)
    assert repr(spec) in str(info.value)


@pytest.mark.parametrize("spec", ["[::1]x", "[::1]22", "[h.example.com", "h:", "[::1]:"])
def test_parse_target_refuses_malformed_brackets_and_empty_ports(spec):
    with pytest.raises(InputError):
        parse_target(spec)


def test_parse_target_non_ascii_digit_port_is_an_input_error():
    with pytest.raises(InputError):
        parse_target("h:²")


def test_target_label():
    assert parse_target("h").label == "h"
    assert parse_target("h:2222").label == "h:2222"
    assert Target(address="h", alias="staging").label == "staging"


def test_with_overrides_ignores_none():
    target = Target(address="h", port=2222, key_files=("/a",))
    assert target.with_overrides(key_files=None, known_hosts=None) == target
    assert target.with_overrides(key_files=("/b",)).key_files == ("/b",)


# --- resolve_target ----------------------------------------------------------------------------

@pytest.fixture
def inventory(tmp_path) -> Inventory:
    return load_inventory(write(tmp_path, GOOD))


def test_resolve_alias(inventory):
    assert resolve_target("minimal", inventory) is inventory.hosts["minimal"]


def test_resolve_default_when_no_host_given(inventory):
    assert resolve_target(None, inventory) is inventory.hosts["staging"]
    assert resolve_target("", inventory) is inventory.hosts["staging"]


@pytest.mark.parametrize("spec, address, port", [
    ("root@other.example.com:2222", "other.example.com", 2222),
    ("other.example.com", "other.example.com", 22),
    ("10.1.2.3", "10.1.2.3", 22),
    ("localhost", "localhost", 22),
    ("h:2200", "h", 2200),
    ("root@h", "h", 22),
])
def test_resolve_literal(inventory, spec, address, port):
    target = resolve_target(spec, inventory)
    assert (target.address, target.port, target.alias) == (address, port, None)


def test_unknown_bare_alias_lists_known_aliases(inventory):
    with pytest.raises(InputError) as info:
        resolve_target("stagign", inventory)
    message = str(info.value)
    assert "'stagign'" in message
    assert "minimal, staging, v6" in message
    assert str(inventory.path) in message


def test_unknown_bare_alias_with_empty_inventory(tmp_path):
    with pytest.raises(InputError) as info:
        resolve_target("staging", load_inventory(tmp_path / "none.toml"))
    assert "known: none" in str(info.value)


def test_no_host_and_no_default(tmp_path):
    inv = load_inventory(write(tmp_path, '[hosts.a]\naddress = "h"\n'))
    with pytest.raises(InputError) as info:
        resolve_target(None, inv)
    assert str(inv.path) in str(info.value)
    assert "--host" in str(info.value)


def test_resolve_literal_with_bad_port_is_an_input_error(inventory):
    with pytest.raises(InputError, match="port"):
        resolve_target("h.example.com:0", inventory)
