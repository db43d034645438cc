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
