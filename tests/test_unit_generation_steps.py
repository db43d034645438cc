"""Unit tests: the steps that differ by generation, run for real in a local shell where they can be.

- The readiness wait (`server_ready_check`) is bounded in wall-clock seconds and says why it gave up.
- PE 2016.4-2018.1's credential copies (orchestration-services): the step copies the new cert and keys,
  makes the PKCS#8 `.pk8` key, and its check fails when a copy differs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from pe_remote.backup import backup_paths
from pe_remote.flavors import PE2016, PE37, CredentialCopy
from pe_remote.plan import build_plan, server_ready_check
from test_unit_flavors_plan import ALT, RECORDED, facts_for, keys

ORCH = "/etc/puppetlabs/orchestration-services/ssl"


def _make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key.pem", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                    "-keyout", str(key), "-out", str(cert), "-days", "2"], check=True, capture_output=True)
    return cert, key


def test_ready_wait_is_bounded_in_seconds_and_says_why(tmp_path):
    cert, _ = _make_cert(tmp_path, "master.pe-remote.test")
    facts = dataclasses.replace(RECORDED, hostcert=str(cert))
    started = time.monotonic()
    proc = subprocess.run(["sh", "-c", server_ready_check(facts, timeout=2)], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    # Nothing listens on this machine's 8140: the check names that and stops at its bound.
    assert "port 8140 not ready after 2s: no TLS handshake on 8140" in proc.stdout
    assert elapsed < 6, elapsed


def test_ready_wait_without_a_cert_on_disk_fails_at_once(tmp_path):
    facts = dataclasses.replace(RECORDED, hostcert=str(tmp_path / "missing.pem"))
    proc = subprocess.run(["sh", "-c", server_ready_check(facts, timeout=60)], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 1 and "no readable cert" in proc.stdout


def test_copy_step_only_where_the_copy_folder_exists():
    with_copies = facts_for(PE2016, copy_dirs=(ORCH,))
    ks = keys(build_plan(with_copies, ALT))
    assert ks[ks.index("generate") + 1] == "copy-credentials"
    assert ks.index("copy-credentials") < ks.index("start:pe-puppetserver")
    assert "copy-credentials" not in keys(build_plan(facts_for(PE2016), ALT))
    assert "copy-credentials" not in keys(build_plan(facts_for(PE37, copy_dirs=(ORCH,)), ALT))
    assert ORCH in backup_paths(with_copies)
    assert ORCH not in backup_paths(facts_for(PE2016))


def _copy_facts(tmp_path: Path):
    """A pe2016 master laid out under tmp_path, with the copy folder owned by root (this test's user)."""
    ssl = tmp_path / "ssl"
    for sub in ("certs", "private_keys", "public_keys"):
        (ssl / sub).mkdir(parents=True)
    name = RECORDED.certname
    cert, key = _make_cert(tmp_path, name)
    (ssl / "certs" / f"{name}.pem").write_bytes(cert.read_bytes())
    (ssl / "private_keys" / f"{name}.pem").write_bytes(key.read_bytes())
    pub = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True, check=True).stdout
    (ssl / "public_keys" / f"{name}.pem").write_bytes(pub)
    copies = tmp_path / "orchestration-services-ssl"
    copies.mkdir()
    flavor = dataclasses.replace(PE2016, credential_copies=(CredentialCopy(str(copies), "root", pk8=True),))
    facts = facts_for(flavor, copy_dirs=(str(copies),), ssldir=str(ssl))
    step = next(s for s in build_plan(facts, ALT).steps if s.key == "copy-credentials")
    return step, copies, name


def test_copy_step_makes_exact_copies_and_a_matching_pk8(tmp_path):
    import os

    if os.geteuid() != 0:
        pytest.skip("the step chowns the copies: needs root (as on a master)")
    step, copies, name = _copy_facts(tmp_path)
    assert subprocess.run(["sh", "-c", step.check], capture_output=True).returncode != 0, "check passed before"
    subprocess.run(["sh", "-c", step.command], check=True, capture_output=True)
    assert subprocess.run(["sh", "-c", step.check], capture_output=True).returncode == 0
    assert {p.name for p in copies.iterdir()} == {f"{name}.{k}" for k in
                                                 ("cert.pem", "public_key.pem", "private_key.pem", "private_key.pk8")}
    assert (copies / f"{name}.private_key.pk8").stat().st_mode & 0o777 == 0o600
    # A copy that no longer matches (say an old key left behind) fails the check.
    (copies / f"{name}.private_key.pk8").write_bytes(b"old")
    assert subprocess.run(["sh", "-c", step.check], capture_output=True).returncode != 0


def test_a_start_that_hangs_is_given_up_at_its_bound_and_not_retried(tmp_path):
    """Puppet Server with a key it cannot use stays 'activating' until systemd's own limit (5 min in
    Debian's unit), and a retry doubled that: the start is now bounded and retried only after a
    quick failure."""
    from pe_remote.plan import service_command

    fake = tmp_path / "puppet"
    fake.write_text("#!/bin/sh\necho started >> \"$0.log\"\nsleep 30\n")  # hangs like that start
    fake.chmod(0o755)
    facts = dataclasses.replace(RECORDED, puppet=str(fake))
    started = time.monotonic()
    proc = subprocess.run(["sh", "-c", service_command(facts, "puppetserver", "running", timeout=2)])
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
    assert (tmp_path / "puppet.log").read_text() == "started\n"  # tried once: it hung, it did not fail fast


def test_a_start_that_hangs_fails_every_start_after_it_and_the_next_service_never_starts(tmp_path):
    # Joined with `&&`, the retry's `;` ended the list: the server's start given up (and its ready check
    # never run) was followed by the agent's, whose success passed for the whole. A rollback then read
    # "started" and found nothing served.
    from pe_remote.commands.steps import start_all, stop_all

    fake = tmp_path / "puppet"
    fake.write_text("#!/bin/sh\necho \"$3 $4\" >> \"$0.log\"\ncase \"$3 $4\" in \"puppetserver ensure=running\") sleep 30;; esac\n")
    fake.chmod(0o755)
    facts = dataclasses.replace(RECORDED, puppet=str(fake))
    proc = subprocess.run(["sh", "-c", start_all(facts, ["puppet", "puppetserver"], timeout=2)])
    assert proc.returncode != 0
    assert (tmp_path / "puppet.log").read_text() == "puppetserver ensure=running\n"
    assert subprocess.run(["sh", "-c", stop_all(facts, ["puppet", "puppetserver"])]).returncode == 0
    assert (tmp_path / "puppet.log").read_text().splitlines()[1:] == ["puppet ensure=stopped", "puppetserver ensure=stopped"]


def test_a_start_that_fails_fast_is_retried_once(tmp_path):
    from pe_remote.plan import service_command

    fake = tmp_path / "puppet"
    fake.write_text("#!/bin/sh\necho started >> \"$0.log\"\nexit 1\n")
    fake.chmod(0o755)
    facts = dataclasses.replace(RECORDED, puppet=str(fake))
    proc = subprocess.run(["sh", "-c", service_command(facts, "puppetserver", "running", timeout=20)])
    assert proc.returncode != 0
    assert (tmp_path / "puppet.log").read_text() == "started\nstarted\n"
