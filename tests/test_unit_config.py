"""Unit tests: target defaults from the Invoke/Fabric config (`pe_remote:` section) instead of a flag on
every call; a flag given wins; a bad value is a one-line input error."""

from __future__ import annotations

import pytest
from invoke import Config, Context

from pe_remote.cli import target_from
from pe_remote.errors import InputError
from pe_remote.program import PeRemoteConfig


def context(section: dict | None) -> Context:
    return Context(config=Config(overrides={"pe_remote": section} if section is not None else {}))


def test_config_sets_known_hosts_and_key_file(tmp_path):
    key = tmp_path / "id"
    target = target_from(context({"known_hosts": str(tmp_path / "kh"), "key_file": str(key)}), "root@m.example")
    assert target.known_hosts == str(tmp_path / "kh") and target.key_files == (str(key),)


def test_a_flag_wins_over_the_config(tmp_path):
    target = target_from(context({"known_hosts": "/from/config"}), "root@m.example", known_hosts="/from/flag")
    assert target.known_hosts == "/from/flag"


def test_config_names_the_inventory(tmp_path, monkeypatch):
    monkeypatch.delenv("PE_REMOTE_INVENTORY", raising=False)
    inventory = tmp_path / "inv.toml"
    inventory.write_text('[hosts.prod]\naddress = "puppet.example.com"\nport = 2222\n')
    target = target_from(context({"inventory": str(inventory)}), "prod")
    assert (target.address, target.port) == ("puppet.example.com", 2222)


@pytest.mark.parametrize("value", [5, "", ["a"]])
def test_a_bad_config_value_is_an_input_error(value):
    with pytest.raises(InputError, match="config pe_remote.known_hosts"):
        target_from(context({"known_hosts": value}), "root@m.example")


def test_no_section_no_change():
    assert target_from(context(None), "root@m.example").known_hosts == target_from(Context(), "root@m.example").known_hosts


def test_the_program_reads_its_own_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".pe-remote.yaml").write_text("pe_remote:\n  known_hosts: /etc/pe-remote/known_hosts\n")
    config = PeRemoteConfig()
    config.load_user()
    assert config.pe_remote.known_hosts == "/etc/pe-remote/known_hosts"
    assert PeRemoteConfig().pe_remote.inventory is None  # declared, unset
