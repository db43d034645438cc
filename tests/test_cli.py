"""The real `fab` and `invoke` command lines: task lists, help, input errors."""

from __future__ import annotations

import pytest

from conftest import describe, run_cli

TASKS = ("backup", "discover", "regen")


@pytest.mark.parametrize("program", ["fab", "invoke", "pe-remote"])
def test_list_shows_every_task_with_a_summary(program):
    proc = run_cli(program, "--list")
    assert proc.returncode == 0, describe(proc)
    for task in TASKS:
        line = next((l for l in proc.stdout.splitlines() if l.strip().startswith(task + " ")), None)
        assert line and len(line.split()) > 3, f"{task} has no summary in {program} --list:\n{proc.stdout}"


@pytest.mark.parametrize("program", ["fab", "invoke", "pe-remote"])
def test_help_documents_every_regen_flag(program):
    proc = run_cli(program, "--help", "regen")
    assert proc.returncode == 0, describe(proc)
    for flag in ("--host", "--inventory", "--key-file", "--known-hosts", "--accept-new-host-key",
                 "--dns-alt-names", "--yes", "--dry-run", "--backup-dir", "--flavor", "--verbose"):
        line = next((l for l in proc.stdout.splitlines() if l.strip().startswith(flag)), "")
        assert len(line.split()) > 1, f"{flag} undocumented in {program} --help regen"


def test_unknown_inventory_alias_gets_a_clear_error(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[hosts.staging]\naddress = "127.0.0.1"\n')
    proc = run_cli("invoke", "backup", "--host", "stagign", "--inventory", str(inventory))
    assert proc.returncode == 2, describe(proc)
    assert "unknown host alias 'stagign'" in proc.stderr and "staging" in proc.stderr
    assert str(inventory) in proc.stderr


def test_bad_inventory_entry_names_file_host_and_key(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[hosts.staging]\naddress = "127.0.0.1"\nport = "22"\n')
    proc = run_cli("invoke", "discover", "--host", "staging", "--inventory", str(inventory))
    assert proc.returncode == 2, describe(proc)
    assert str(inventory) in proc.stderr and "'staging'" in proc.stderr and "'port'" in proc.stderr


def test_the_installed_program_works_outside_a_checkout(tmp_path):
    """`pe-remote` needs no fabfile.py or tasks/ folder: the tasks are in the package."""
    proc = run_cli("pe-remote", "--list", cwd=tmp_path)
    assert proc.returncode == 0 and "regen" in proc.stdout, describe(proc)
    proc = run_cli("pe-remote", "-H", "root@127.0.0.1:1", "regen", "--dry-run", "--known-hosts",
                   str(tmp_path / "known_hosts"), cwd=tmp_path)
    assert proc.returncode == 3, describe(proc)  # it ran the task: the connection was refused
    assert proc.stderr.startswith("pe-remote: cannot connect to 127.0.0.1:1")


BAD_VALUES = [  # (task and flags, words of the one-line error)
    (["regen", "--server-timeout", "5m"], "--server-timeout 5m: give whole seconds from 10 to 3600"),
    (["regen", "--wave", "two"], "--wave two: give a whole number of hosts, 1 or more"),
    (["discover", "--parallel", "x"], "--parallel x: give a whole number of hosts, 1 or more"),
    (["verify", "--warn-days", "soon"], "--warn-days soon: give a whole number of days, 0 or more"),
    (["refresh-crl", "--days", "1.5"], "--days 1.5: give whole days from 1 to"),
    (["extend-ca", "--years", "ten"], "--years ten: give whole years from 1 to"),
    (["regen", "--resume", ""], "--resume needs the run id"),
]


@pytest.mark.parametrize("program", ["fab", "invoke"])
@pytest.mark.parametrize("args, words", BAD_VALUES, ids=[" ".join(args[:2]) for args, _ in BAD_VALUES])
def test_a_value_the_parser_cannot_convert_is_a_one_line_error_and_exit_2(tmp_path, program, args, words):
    # Nothing listens on port 1: had the flag passed, the run would end in exit 3, not 2.
    target = (["-H", "root@127.0.0.1:1"], []) if program == "fab" else ([], ["--host", "root@127.0.0.1:1"])
    proc = run_cli(program, *target[0], *args, *target[1], env={"PE_REMOTE_INVENTORY": str(tmp_path / "none.toml")})
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.startswith("pe-remote: ") and proc.stderr.count("\n") == 1, describe(proc)
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_fab_with_several_hosts_names_each_report_after_its_host(tmp_path):
    proc = run_cli("fab", "-H", "root@127.0.0.1:1,root@127.0.0.1:2", "regen", "--yes", "--report",
                   str(tmp_path / "r.json"), "--known-hosts", str(tmp_path / "known_hosts"),
                   env={"PE_REMOTE_INVENTORY": str(tmp_path / "none.toml")})
    assert proc.returncode == 3, describe(proc)  # the first host's connection is refused; fab stops there
    assert [p.name for p in tmp_path.glob("r*.json")] == ["r-127.0.0.1_1.json"], describe(proc)
