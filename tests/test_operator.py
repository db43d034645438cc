"""Operator experience, end to end: progress on a terminal, the JSON report, `verify`, the CI job."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import BIN, ROOT, describe, fab_target_args, run_cli
from pe_remote.report import SCHEMA_PATH
from test_regen_pe37 import _cert_facts

pytestmark = pytest.mark.container
SCHEMA = json.loads(SCHEMA_PATH.read_text())


def run_in_pty(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin/stdout/stderr; return (exit code, everything shown)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
                            env={**os.environ, "PE_REMOTE_INVENTORY": str(ROOT / "inventory.toml")})
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(controller)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_regen_on_a_terminal_with_report_then_verify(fresh_master, tmp_path):
    master = fresh_master
    old = _cert_facts(master)
    report_path = tmp_path / "r.json"
    code, shown = run_in_pty([str(BIN / "fab"), *fab_target_args(master), "regen", "--yes",
                              "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"),
                              "--report", str(report_path)])
    assert code == 0, shown

    # Every step's line appears with its plan number and elapsed time, in the order the report
    # lists the steps (the order they finished: some steps overlap).
    report = json.loads(report_path.read_text())
    total = len(report["steps"])
    positions, numbers = [], []
    for step in report["steps"]:
        match = re.search(rf"^\[(\d+)/{total}\] {re.escape(step['title'])}: done \((\d+\.\d)s\)$", shown, re.M)
        assert match, f"no finished line for step {step['title']} in:\n{shown}"
        positions.append(match.start())
        numbers.append(int(match[1]))
    assert positions == sorted(positions)
    assert sorted(numbers) == list(range(1, total + 1))
    assert "Plan for" in shown, "on a terminal the plan is shown"

    # The report validates against the documented schema and carries the real values.
    jsonschema.validate(report, SCHEMA)
    new = _cert_facts(master)
    assert report["outcome"] == "ok" and report["exit_code"] == 0 and report["error"] is None
    assert report["flavor"] == "pe37" and report["certname"] == master.certname
    assert report["old_cert"]["serial"] == old["serial"].lstrip("0")
    assert report["old_cert"]["sha256"] == old["sha256"]
    assert report["new_cert"]["serial"] == new["serial"].lstrip("0")
    assert report["new_cert"]["sha256"] == new["sha256"]
    assert set(report["new_cert"]["sans"]) == set(new["sans"])
    remote_sha = master.check(f"sha256sum {report['backup']['remote_path']}").split()[0]
    assert report["backup"]["sha256"] == remote_sha
    assert Path(report["backup"]["local_path"]).is_file()
    assert 0 < report["downtime_seconds"] < 300
    assert report["remote_commands"] >= total + 3
    assert all(step["outcome"] == "ok" for step in report["steps"])

    # verify: healthy after the regen...
    proc = run_cli("fab", *fab_target_args(master), "verify", "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 0, describe(proc)
    assert "OK" in proc.stdout
    # ...and not once the cert lacks an alt name (replaced behind pe-remote's back with Puppet's own `puppet cert`).
    puppet = master.flavor.puppet
    master.check(f"{puppet} cert clean {master.certname} && "
                 f"{puppet} cert generate {master.certname} --dns_alt_names=puppet")
    proc = run_cli("fab", *fab_target_args(master), "verify", "--known-hosts", str(master.known_hosts_path))
    assert proc.returncode == 9, describe(proc)
    assert "missing DNS:puppet.pe-remote.test" in proc.stderr
    assert "port 8140 serves" in proc.stderr  # the server still presents the cert it loaded at start


@pytest.mark.parametrize("staging_master", ["pe37", "oss7"], indirect=True)
def test_verify_passes_on_a_healthy_master(staging_master):
    proc = run_cli("invoke", "verify", "--host", staging_master.target, "--key-file", str(staging_master.key_path),
                   "--known-hosts", str(staging_master.known_hosts_path))
    assert proc.returncode == 0, describe(proc)
    assert f"{staging_master.certname} serial" in proc.stdout and "OK" in proc.stdout


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_example_ci_job_against_a_staging_master(fresh_master, tmp_path):
    master = fresh_master
    script = ROOT / "examples" / "ci" / "regen-staging.sh"
    for pipeline in ("github-actions.yml", "gitlab-ci.yml"):
        assert "sh examples/ci/regen-staging.sh" in (script.parent / pipeline).read_text()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "STAGING_MASTER": master.target,
           "SSH_KEY_FILE": str(master.key_path), "KNOWN_HOSTS_FILE": str(master.known_hosts_path),
           "ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    proc = subprocess.run(["sh", str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 0, describe(proc)
    report = json.loads((tmp_path / "artifacts" / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["outcome"] == "ok" and report["flavor"] == "puppet6"
    assert list((tmp_path / "artifacts" / "backups").rglob("*.tar.gz"))
    log = (tmp_path / "artifacts" / "regen.log").read_text()
    assert "Plan for" in log and "Regenerated" in log
    assert "PRIVATE KEY" not in log
    # Not a terminal: step lines and the result, not the plan.
    assert "Plan for" not in proc.stdout and "[1/" in proc.stdout and "Regenerated" in proc.stdout


def test_report_is_written_when_the_run_is_refused(staging_master, tmp_path):
    master = staging_master
    report_path = tmp_path / "r.json"
    master.check("mkdir -p /etc/puppetlabs/puppetdb/ssl")
    try:
        proc = run_cli("fab", *fab_target_args(master), "regen", "--yes", "--report", str(report_path),
                       "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"))
    finally:
        master.check("rm -r /etc/puppetlabs/puppetdb")
    assert proc.returncode == 4, describe(proc)
    report = json.loads(report_path.read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["outcome"] == "failed" and report["exit_code"] == 4 and "monolithic" in report["error"]
    assert report["steps"] == [] and report["backup"] is None


def test_verify_names_a_ca_that_ends_in_days(master_factory, tmp_path):
    """A PE 3.7-layout master (Puppet 5.5) whose CA was made with a 10-day lifetime (ca_ttl)."""
    from pe_remote.testing.master import serving_check

    master = master_factory("pe37")
    layout = master.flavor
    master.check(f"systemctl stop pe-puppet pe-puppetserver && rm -rf {layout.ssldir} && "
                 f"{layout.puppet} cert generate {master.certname} --dns_alt_names=puppet,puppet.pe-remote.test "
                 "--ca_ttl 10d >/dev/null && systemctl start pe-puppetserver && "
                 f"for i in $(seq 60); do {serving_check(master)} && break; sleep 1; done && "
                 "systemctl start pe-puppet")
    report = tmp_path / "verify.json"
    proc = run_cli("fab", *fab_target_args(master), "verify", "--known-hosts", str(master.known_hosts_path),
                   "--report", str(report))
    assert proc.returncode == 9, describe(proc)
    assert f"the CA cert (Puppet CA: {master.certname}) ends in" in proc.stderr
    assert "under --warn-days 90" in proc.stderr
    assert "CA cert (Puppet CA:" in proc.stdout and "WARN" in proc.stdout  # the table
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["flavor"] == "pe37"
    ca = next(d for d in data["dates"] if d["what"].startswith("CA cert"))
    assert 9 <= ca["days_left"] <= 10 and ca["status"] == "WARN"
    # Under a 5-day margin nothing is named: the exit is 0.
    proc = run_cli("fab", *fab_target_args(master), "verify", "--known-hosts", str(master.known_hosts_path),
                   "--warn-days", "5")
    assert proc.returncode == 0, describe(proc)
