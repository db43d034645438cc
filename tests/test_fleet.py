"""Several masters at once, end to end: read-only tasks in parallel with a per-host table."""

from __future__ import annotations

import pytest

from conftest import describe, run_cli

pytestmark = pytest.mark.container


def _inventory(tmp_path, masters) -> str:
    path = tmp_path / "inventory.toml"
    path.write_text("".join(
        f'[hosts.{name}]\naddress = "127.0.0.1"\nport = {m.port}\nkey_file = "{m.key_path}"\n'
        f'known_hosts = "{m.known_hosts_path}"\nbackup_dir = "{tmp_path / "bk"}"\n\n'
        for name, m in masters.items()))
    return str(path)


def test_backup_and_verify_on_two_masters_in_parallel(master_pool, tmp_path):
    masters = {"pe37": master_pool.get("pe37"), "oss7": master_pool.get("oss7")}
    before = {name: m.ssl_checksums() for name, m in masters.items()}
    inventory = _inventory(tmp_path, masters)

    proc = run_cli("invoke", "backup", "--host", "pe37,oss7", "--inventory", inventory, "--parallel", "2")
    assert proc.returncode == 0, describe(proc)
    table = proc.stdout[proc.stdout.index("backup\nHOST"):]
    assert "pe37 " in table and "oss7 " in table and "2 hosts: 2 ok, 0 failed" in table
    assert len(list((tmp_path / "bk").rglob("*.tar.gz"))) == 2

    proc = run_cli("invoke", "verify", "--host", "pe37,oss7", "--inventory", inventory)
    assert proc.returncode == 0, describe(proc)
    assert "2 hosts: 2 ok, 0 failed" in proc.stdout
    assert {name: m.ssl_checksums() for name, m in masters.items()} == before


def test_a_failing_host_is_reported_in_the_table_and_the_exit_code(master_pool, tmp_path):
    masters = {"pe37": master_pool.get("pe37")}
    inventory = _inventory(tmp_path, masters)
    with open(inventory, "a") as fh:  # a host whose key is not trusted: refused, the other goes on
        fh.write(f'[hosts.stranger]\naddress = "127.0.0.1"\nport = {masters["pe37"].port}\n'
                 f'known_hosts = "{tmp_path / "empty_known_hosts"}"\n')
    proc = run_cli("invoke", "discover", "--host", "pe37,stranger", "--inventory", inventory)
    assert proc.returncode == 3, describe(proc)
    assert "2 hosts: 1 ok, 1 failed" in proc.stdout
    assert "stranger  FAILED(3)" in proc.stdout
    assert "1 of 2 hosts did not succeed; most severe: stranger (exit 3)" in proc.stderr
