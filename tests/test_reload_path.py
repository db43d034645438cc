"""regen's reload path on Puppet Server 7 and 8 (Debian's own puppetserver), end to end, beside what
tests/test_generations.py proves on every generation (there, oss7 and oss8 regen on the reload path and
roll back when the reloaded server refuses the new cert):

- while the CA's files are frozen for generate, the running CA (user puppet) can write none of them: a
  CSR submitted to it is refused and nothing in the CA changes; every owner is back afterwards;
- where the server's unit cannot reload, or a CA file is writable by its group (it cannot be frozen), regen
  falls back to the stop/start procedure; --restart forces it.
"""

from __future__ import annotations

import json

import pytest

from conftest import CUT, describe, fab_target_args, on_master_when, run_cli
from pe_remote.commands.shell import join
from pe_remote.commands.steps import CA_WRITABLE, with_ca_frozen
from test_faults import _regen_args, assert_serves
from test_regen_pe37 import _cert_facts

pytestmark = pytest.mark.container
INTRUDER = "intruder.pe-remote.test"


def _owners(master) -> str:
    cadir = master.flavor.cadir
    paths = [cadir] + [f"{cadir}/{name}" for name in CA_WRITABLE]
    return master.check(f"for p in {join(paths)}; do [ ! -e \"$p\" ] || stat -c '%a %U:%G %n' \"$p\"; done")


def _submit_csr() -> str:
    """Shell: a CSR for INTRUDER submitted to the running CA, as any agent may; prints the HTTP code."""
    url = f"https://127.0.0.1:8140/puppet-ca/v1/certificate_request/{INTRUDER}?environment=production"
    return (f"openssl req -new -newkey rsa:2048 -nodes -keyout /tmp/intruder.key -subj /CN={INTRUDER} "
            f"-out /tmp/intruder.csr 2>/dev/null && curl -sk -o /dev/null -w 'csr %{{http_code}}\\n' -X PUT "
            f"-H 'Content-Type: text/plain' --data-binary @/tmp/intruder.csr {join([url])}")


@pytest.mark.parametrize("staging_master", ["oss7", "oss8"], indirect=True)
def test_while_the_ca_is_frozen_the_running_ca_writes_nothing(staging_master):
    # The shared master's plugin check proves, after the test, that no SSL or CA file changed.
    master = staging_master
    cadir = master.flavor.cadir
    owners = _owners(master)
    assert "root:" not in owners, owners  # the CA's files belong to the CA's user
    # In the frozen window: a CSR from an agent (the CA would write requests/), and the CA's own user
    # appending to its serial counter, replacing it as the service writes files (a temporary file renamed
    # over it), and creating a signed cert.
    replace = f"echo 99 > {cadir}/serial.tmp && mv {cadir}/serial.tmp {cadir}/serial"
    attempt = (f"{_submit_csr()}; runuser -u puppet -- sh -c {join([f'echo x >> {cadir}/serial'])} 2>&1; "
               f"echo serial $?; runuser -u puppet -- sh -c {join([replace])} 2>&1; echo replace $?; "
               f"rm -f {cadir}/serial.tmp; "
               f"runuser -u puppet -- sh -c {join([f'touch {cadir}/signed/{INTRUDER}.pem'])} 2>&1; echo signed $?")
    # The saved owners kept out of the shared master's state folder (a real run's backup makes it).
    code, out = master.exec(with_ca_frozen(cadir, attempt, state="/tmp/ca-freeze.owners"))
    assert code == 0, out
    csr = next(line for line in out.splitlines() if line.startswith("csr "))
    assert csr != "csr 200", out  # refused: the CA could not write the request
    assert "serial 0" not in out and "replace 0" not in out and "signed 0" not in out, out
    assert "Permission denied" in out, out
    assert _owners(master) == owners
    assert master.exec(f"test -e {cadir}/requests/{INTRUDER}.pem")[0] != 0
    assert master.exec(f"test -e {cadir}/signed/{INTRUDER}.pem")[0] != 0
    # Outside the window the same CSR is taken (the check above can fail): then put it away again.
    code, out = master.exec(_submit_csr())
    assert "csr 200" in out, out
    master.check(f"puppetserver ca clean --certname {INTRUDER} >/dev/null 2>&1 || rm -f {cadir}/requests/{INTRUDER}.pem")
    master.check(f"test ! -e {cadir}/requests/{INTRUDER}.pem")


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_a_server_that_cannot_reload_takes_the_restart_path_and_restart_forces_it(fresh_master, tmp_path):
    master = fresh_master
    dry = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--known-hosts", str(master.known_hosts_path))
    assert dry.returncode == 0 and "path: reload" in dry.stdout and "Reload puppetserver" in dry.stdout, describe(dry)
    forced = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--restart", "--known-hosts",
                     str(master.known_hosts_path))
    assert forced.returncode == 0 and "path: restart (--restart)" in forced.stdout, describe(forced)
    assert "Reload puppetserver" not in forced.stdout and "Start puppetserver" in forced.stdout

    # A CA file its group may write cannot be frozen: discovery sees it and the plan restarts instead.
    serial = f"{master.flavor.cadir}/serial"
    master.check(f"chmod g+w {serial}")
    dry = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--known-hosts", str(master.known_hosts_path))
    assert dry.returncode == 0 and "path: restart (the CA's serial is writable by group or others" in dry.stdout, \
        describe(dry)
    master.check(f"chmod g-w {serial}")

    # A unit without ExecReload (test setup: a drop-in that empties it) cannot reload: the run restarts.
    master.check("mkdir -p /etc/systemd/system/puppetserver.service.d && printf '[Service]\\nExecReload=\\n' "
                 "> /etc/systemd/system/puppetserver.service.d/no-reload.conf && systemctl daemon-reload && "
                 "systemctl show -p CanReload puppetserver | grep -qx CanReload=no")
    dry = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--known-hosts", str(master.known_hosts_path))
    assert "path: restart (the puppetserver unit cannot reload" in dry.stdout, describe(dry)
    old = _cert_facts(master)
    proc = run_cli("fab", *_regen_args(master, tmp_path, "--report", str(tmp_path / "r.json")))
    assert proc.returncode == 0, describe(proc)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["path"] == "restart", report
    keys = [step["key"] for step in report["steps"]]
    assert "stop:puppetserver" in keys and "start:puppetserver" in keys and not any(k.startswith("reload:") for k in keys)
    new = _cert_facts(master)
    assert new["serial"] != old["serial"]
    assert_serves(master, new["sha256"])


@pytest.mark.parametrize("fresh_master", ["oss7"], indirect=True)
def test_a_generate_killed_while_the_ca_is_frozen_gets_its_owners_back_on_resume(fresh_master, tmp_path):
    # A reboot or a kill -9 between the freeze and the thaw: the CA files stay root's. Before, the
    # resumed run froze them again, recorded root as their owner, and the CA could never sign again.
    master = fresh_master
    cadir = master.flavor.cadir
    owners = _owners(master)
    old = _cert_facts(master)
    # Once frozen and the CA CLI started (its process, not the step's shell, whose line names the state
    # file): the connection cut, then the step's shell killed ([x]: not the watcher itself); the CA CLI
    # runs on to its end, as on a master whose shell died.
    state = "/root/pe-remote-backups/ca-freeze.owners"
    # The path is put together in the shell: the watcher's own line must not match the pkill pattern.
    frozen_and_generating = (f"S={state.removesuffix('.owners')}; S=$S.owners; [ -f \"$S\" ] && "
                             f"[ \"$(stat -c %u {cadir}/serial)\" = 0 ] && "
                             "ps -eo args= | grep -v ca-freeze | grep -q '[c]a generate'")
    with on_master_when(master, frozen_and_generating, f"{CUT} && pkill -KILL -f '[c]a-freeze.owners'"):
        proc = run_cli("fab", *_regen_args(master, tmp_path))
    assert proc.returncode == 8, describe(proc)
    master.check("for i in $(seq 1 600); do pgrep -f '[c]a generate' >/dev/null || exit 0; sleep 0.1; done; exit 1")
    frozen = _owners(master)
    assert "root:" in frozen and frozen != owners, frozen  # the scenario: left frozen, the owners saved
    assert master.exec(f"test -f {state}")[0] == 0

    # `verify` names it; the dry run says it would give the owners back, and changes nothing.
    check = run_cli("fab", *fab_target_args(master), "verify", "--known-hosts", str(master.known_hosts_path))
    assert check.returncode != 0 and "freeze of the CA files was cut off" in check.stdout + check.stderr, describe(check)
    dry = run_cli("fab", *fab_target_args(master), "regen", "--dry-run", "--known-hosts", str(master.known_hosts_path))
    assert "after giving the CA files back the owners" in dry.stdout, describe(dry)
    assert _owners(master) == frozen

    resumed = run_cli("fab", *_regen_args(master, tmp_path))
    assert resumed.returncode == 0, describe(resumed)
    assert "Gave the CA files back the owners saved" in resumed.stdout, describe(resumed)
    # Every owner back, and the CA folder's mode (the CA CLI itself may rewrite a file with its own mode).
    after = _owners(master).splitlines()
    assert after[0] == owners.splitlines()[0] and [line.split(" ", 1)[1] for line in after] == \
        [line.split(" ", 1)[1] for line in owners.splitlines()], (after, owners)
    assert master.exec(f"test -e {state}")[0] != 0
    new = _cert_facts(master)
    assert new["serial"] != old["serial"]
    assert_serves(master, new["sha256"])
    # The CA writes again: an agent's CSR is taken.
    code, out = master.exec(_submit_csr())
    assert "csr 200" in out, out
