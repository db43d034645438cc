"""Unit tests for pe_remote.cli: task arguments -> Target, and library errors -> invoke.Exit."""

from __future__ import annotations

import inspect

import pytest
from fabric import Config, Connection
from invoke import Context, Exit

from pe_remote.cli import alt_names_from, exits_cleanly, target_from
from pe_remote.errors import Aborted, InputError, InvalidName, Refused
from pe_remote.inventory import Target

INVENTORY = """\
default = "staging"

[hosts.staging]
address = "puppet-staging.example.com"
port = 2200
key_file = "~/.ssh/staging_key"
dns_alt_names = ["puppet", "puppet.example.com"]

[hosts.other]
address = "10.0.0.9"
"""


@pytest.fixture
def inventory(tmp_path) -> str:
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY)
    return str(path)


@pytest.fixture
def no_inventory(tmp_path) -> str:
    return str(tmp_path / "absent.toml")


def fab_connection(host: str, **kwargs) -> Connection:
    """What `fab -H host` hands a task (no ssh_config files read, so the test does not depend on ~/.ssh)."""
    return Connection(host, config=Config(overrides={"load_ssh_configs": False}), **kwargs)


# --- fab -H: a fabric Connection ------------------------------------------------------------------

def test_fab_connection_becomes_the_target(no_inventory):
    c = fab_connection("root@127.0.0.1:2222", connect_kwargs={"key_filename": ["/k"]})
    target = target_from(c, inventory=no_inventory)
    assert target == Target(address="127.0.0.1", port=2222, user="root", key_files=("/k",))


def test_fab_connection_key_filename_as_a_string(no_inventory):
    c = fab_connection("root@h.example.com", connect_kwargs={"key_filename": "/one/key"})
    assert target_from(c, inventory=no_inventory).key_files == ("/one/key",)


def test_fab_connection_without_keys(no_inventory):
    target = target_from(fab_connection("root@h.example.com:22"), inventory=no_inventory)
    assert (target.address, target.port, target.key_files) == ("h.example.com", 22, ())


def test_fab_connection_keeps_a_non_root_user_for_connect_to_refuse(no_inventory):
    assert target_from(fab_connection("admin@h.example.com"), inventory=no_inventory).user == "admin"


def test_fab_host_that_is_an_inventory_alias(inventory):
    target = target_from(fab_connection("staging"), inventory=inventory)
    assert target.alias == "staging"
    assert (target.address, target.port) == ("puppet-staging.example.com", 2200)
    assert target.key_files == ("~/.ssh/staging_key",)
    assert target.alt_names == ("puppet", "puppet.example.com")


def test_fab_key_file_and_known_hosts_flags_override(no_inventory):
    c = fab_connection("root@127.0.0.1:2222", connect_kwargs={"key_filename": ["/k"]})
    target = target_from(c, inventory=no_inventory, key_file="/flag/key", known_hosts="/flag/known_hosts")
    assert target.key_files == ("/flag/key",)
    assert target.known_hosts == "/flag/known_hosts"
    assert target.port == 2222


def test_fab_alias_with_dash_i_keeps_the_key(inventory):
    c = fab_connection("staging", connect_kwargs={"key_filename": ["/from/dash-i"]})
    assert target_from(c, inventory=inventory).key_files == ("/from/dash-i",)


# --- invoke --host: a plain invoke Context ------------------------------------------------------

def test_invoke_host_alias(inventory):
    target = target_from(Context(), host="other", inventory=inventory)
    assert target == Target(address="10.0.0.9", alias="other")


def test_invoke_no_host_uses_the_default(inventory):
    assert target_from(Context(), inventory=inventory).alias == "staging"


def test_invoke_literal_host(inventory):
    target = target_from(Context(), host="root@h.example.com:2022", inventory=inventory)
    assert (target.address, target.port, target.user, target.alias) == ("h.example.com", 2022, "root", None)


def test_invoke_flags_override_the_inventory(inventory):
    target = target_from(Context(), host="staging", inventory=inventory, key_file="/flag/key",
                         known_hosts="/flag/kh")
    assert target.key_files == ("/flag/key",)
    assert target.known_hosts == "/flag/kh"
    assert target.address == "puppet-staging.example.com"


def test_invoke_unknown_alias_is_an_input_error(inventory):
    with pytest.raises(InputError, match="other, staging"):
        target_from(Context(), host="prod", inventory=inventory)


def test_invoke_no_host_and_no_inventory(no_inventory):
    with pytest.raises(InputError, match="no host given"):
        target_from(Context(), inventory=no_inventory)


def test_inventory_from_the_environment(inventory, monkeypatch):
    monkeypatch.setenv("PE_REMOTE_INVENTORY", inventory)
    assert target_from(Context(), host="other").address == "10.0.0.9"


def test_inventory_argument_beats_the_environment(inventory, no_inventory, monkeypatch):
    monkeypatch.setenv("PE_REMOTE_INVENTORY", no_inventory)
    assert target_from(Context(), host="other", inventory=inventory).address == "10.0.0.9"


def test_bad_inventory_is_reported_before_anything_else(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_text('[hosts.a]\naddress = "h"\nport = "22"\n')
    with pytest.raises(InputError) as info:
        target_from(fab_connection("root@h.example.com"), inventory=str(path))
    assert str(path) in str(info.value) and "'port'" in str(info.value)


# --- alt_names_from -------------------------------------------------------------------------------

def test_alt_names_flag_beats_the_inventory():
    target = Target(address="h", alt_names=("from-inventory",))
    assert alt_names_from("a, DNS:b", target) == ("a", "b")
    assert alt_names_from("", target) == ()  # an explicit empty flag means no alt names
    assert alt_names_from(None, target) == ("from-inventory",)
    assert alt_names_from(None, Target(address="h")) is None


def test_alt_names_flag_is_validated():
    with pytest.raises(InvalidName, match="--dns-alt-names"):
        alt_names_from("puppet,$(reboot)", Target(address="h"))


# --- exits_cleanly -------------------------------------------------------------------------------

def test_input_error_becomes_exit_2_with_the_message():
    @exits_cleanly
    def task(c):
        raise InputError("no host given")

    with pytest.raises(Exit) as info:
        task(None)
    assert info.value.code == 2
    assert info.value.message == "pe-remote: no host given"


@pytest.mark.parametrize("error, code", [(Refused("not root"), 4), (Aborted("no"), 5),
                                         (InvalidName("bad name"), 2)])
def test_each_error_keeps_its_exit_code(error, code):
    @exits_cleanly
    def task(c):
        raise error

    with pytest.raises(Exit) as info:
        task(None)
    assert info.value.code == code
    assert str(error) in info.value.message


def test_keyboard_interrupt_exits_130():
    @exits_cleanly
    def task(c):
        raise KeyboardInterrupt

    with pytest.raises(Exit) as info:
        task(None)
    assert info.value.code == 130


def test_other_exceptions_are_not_hidden():
    @exits_cleanly
    def task(c):
        raise ZeroDivisionError("a real bug")

    with pytest.raises(ZeroDivisionError):
        task(None)


def test_return_value_and_arguments_pass_through():
    @exits_cleanly
    def task(c, host=None, yes=False):
        """Docs."""
        return (c, host, yes)

    assert task("c", host="h", yes=True) == ("c", "h", True)
    # invoke builds the task's flags from its signature: the wrapper must keep it.
    assert list(inspect.signature(task).parameters) == ["c", "host", "yes"]
    assert task.__name__ == "task" and task.__doc__ == "Docs."



# --- input mistakes caught before connecting (exit 2) -------------------------------------------

def test_fab_alias_typo_is_an_error_not_a_dns_lookup(inventory):
    with pytest.raises(InputError, match="unknown host alias 'stagign'"):
        target_from(fab_connection("stagign"), inventory=inventory)


def test_fab_port_out_of_range_is_refused(no_inventory):
    with pytest.raises(InputError, match="port 99999"):
        target_from(fab_connection("root@127.0.0.1:99999"), inventory=no_inventory)


@pytest.mark.parametrize("host", [" , ", ",", " ,, "])
def test_a_host_list_naming_no_master_is_an_error(inventory, host):
    from pe_remote.cli import targets_from

    with pytest.raises(InputError, match="names no master"):
        targets_from(Context(), host=host, inventory=inventory)


def test_the_same_master_twice_runs_once(inventory):
    from pe_remote.cli import targets_from

    targets = targets_from(Context(), host="staging,other,staging, other", inventory=inventory)
    assert [t.address for t in targets] == ["puppet-staging.example.com", "10.0.0.9"]


@pytest.mark.parametrize("flag, value", [("wave", 0), ("parallel", 0), ("wave", -1)])
def test_wave_and_parallel_below_one_are_input_errors(flag, value):
    from pe_remote.cli import for_each_host

    two = [Target(address="a.example.com"), Target(address="b.example.com")]
    with pytest.raises(InputError, match=f"--{flag}"):
        for_each_host(two, lambda remote: None, changing=flag == "wave", **{flag: value})


@pytest.mark.parametrize("where", ["missing-folder/r.json", "."])
def test_an_unwritable_report_path_is_refused_before_connecting(tmp_path, where):
    from pe_remote.cli import check_report_path

    with pytest.raises(InputError, match="--report"):
        check_report_path(str(tmp_path / where))
    check_report_path(str(tmp_path / "r.json"))  # a file in a writable folder is fine


# --- --agents: hosts named in a flag --------------------------------------------------------------

def test_an_agent_named_under_fab_logs_in_with_the_same_key_and_known_hosts(inventory):
    from pe_remote.cli import named_target

    c = fab_connection("root@127.0.0.1:2222", connect_kwargs={"key_filename": ["/from/dash-i"]})
    agent = named_target(c, "root@127.0.0.1:2223", inventory=inventory, known_hosts="/kh")
    assert (agent.address, agent.port, agent.key_files, agent.known_hosts) == ("127.0.0.1", 2223, ("/from/dash-i",),
                                                                               "/kh")


def test_an_agent_alias_under_invoke_is_the_inventorys(inventory):
    from pe_remote.cli import named_target

    agent = named_target(Context(), "other", inventory=inventory, key_file="/flag/key")
    assert (agent.address, agent.alias, agent.key_files) == ("10.0.0.9", "other", ("/flag/key",))


def test_agents_naming_no_host_are_refused_before_connecting(inventory):
    from pe_remote.tasks import extend_ca

    with pytest.raises(Exit) as info:
        extend_ca.body(Context(), host="other", inventory=inventory, agents=" , ")
    assert info.value.code == 2 and "--agents" in str(info.value.message)
