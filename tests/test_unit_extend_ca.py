"""Unit tests for `extend-ca` (pe_remote/extend_ca.py): the plan, the proof read from the certs' bytes,
and the job's refusals and paths on fakes. The renewal itself runs on real masters (tests/test_extend_ca.py)."""

from __future__ import annotations

import dataclasses
import datetime
import io
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pe_remote import extend_ca as job
from pe_remote import runs
from pe_remote.commands.certs import read_bundle
from pe_remote.backup import RemoteBackup
from pe_remote.console import Console
from pe_remote.errors import AgentsNotUpdated, InputError, Refused, RolledBack
from pe_remote.report import RunReport
from test_unit_backup_verify import RECORDED
from test_unit_crl import NEW as NEW_CRL, OLD as OLD_CRL, raw as crl_raw, state as crl_state

NOW = datetime.datetime.now(datetime.timezone.utc)
ROOT_KEY, CA_KEY, HOST_KEY = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
ROOT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet Root CA: 1234")])
INTERMEDIATE = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA: master.pe-remote.test")])


def _cert(subject, issuer, key, signer, days, serial, ca=True):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(serial).not_valid_before(NOW - datetime.timedelta(days=1))
               .not_valid_after(NOW + datetime.timedelta(days=days)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def bundle(days: float, *, root_signer=ROOT_KEY, serial=2) -> bytes:
    return (_cert(INTERMEDIATE, ROOT, CA_KEY, root_signer, days, serial)
            + _cert(ROOT, ROOT, ROOT_KEY, ROOT_KEY, days, 1))


HOSTCERT = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master.pe-remote.test")]), INTERMEDIATE,
                 HOST_KEY, CA_KEY, 10, 5, ca=False)
OLD = bundle(10)
NEW = bundle(15 * 365 + 1)


def ca_raw(data: bytes, *, host: bytes | None = None, hostcert: bytes = HOSTCERT, served: bytes | None = None,
           root_key: bool = True) -> dict:
    """The bytes read_raw finds on a master (and a journal records)."""
    return {"ca_bundle": data, "host_bundle": data if host is None else host, "hostcert": hostcert,
            "served_ca": data if served is None else served, "root_key": root_key}


def ca_state(*args, **kwargs) -> job.CaState:
    return job.ca_state(ca_raw(*args, **kwargs))


def test_a_state_is_read_from_its_bytes():
    found = ca_state(OLD, served=b"", root_key=False)
    assert found.bundle == OLD and [c.serial for c in found.certs] == [c.serial for c in read_bundle(OLD)]
    assert found.served == () and not found.root_key and found.hostcert == HOSTCERT


def problems(after, years=15):
    return job.extend_problems(ca_state(OLD), after, years, NOW, served=True)


def test_a_good_renewal_has_no_problems():
    assert problems(ca_state(NEW)) == []


@pytest.mark.parametrize("after, expected", [
    (lambda: ca_state(bundle(365)), "not in 15 years"),
    (lambda: ca_state(bundle(15 * 366, serial=3)), "the serial of CN=Puppet CA: master.pe-remote.test changed"),
    (lambda: ca_state(bundle(15 * 366, root_signer=CA_KEY)), "does not verify against its issuer's key"),
    (lambda: ca_state(NEW, host=OLD), "the host's CA bundle is not the CA's"),
    (lambda: ca_state(NEW, served=OLD), "does not serve the new CA cert"),
    (lambda: ca_state(NEW, hostcert=_cert(INTERMEDIATE, ROOT, HOST_KEY, HOST_KEY, 10, 9)),
     "the master's cert does not verify"),
    (lambda: ca_state(NEW[:NEW.index(b"-----END CERTIFICATE-----") + 26]), "holds 1 certs, not 2"),
])
def test_each_way_a_renewal_can_be_wrong_is_named(after, expected):
    found = problems(after())
    assert any(expected in p for p in found), found


def test_the_plan_renews_copies_resigns_the_crl_and_reloads():
    plan = job.build_extend_plan(RECORDED, ca_state(OLD), crl_state(OLD_CRL), 15)
    assert [s.key for s in plan.steps] == ["extend-ca", "copy-host-ca", "resign-crl", "copy-host-crl",
                                           "reload:puppetserver", "wait-server"]
    command = plan.steps[0].command
    assert "/ca_key.pem" in command and "/root_key.pem" in command and " 15 " in command


# --- the job on fakes ----------------------------------------------------------------------------

class Master:
    commands_run = 0
    target = types.SimpleNamespace(label="m", backup_dir="backups")

    def hold(self, command):
        return "==> lock-held <==", types.SimpleNamespace(close=lambda: None)

    def run(self, command, *, check=True, timeout=None):
        return types.SimpleNamespace(stdout="==> agent <==\n0\n==> agent_output <==\nTm90aWNlOiBBcHBsaWVkCg==\n",
                                     ok=True)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    calls = types.SimpleNamespace(ca=[ca_raw(OLD), ca_raw(NEW)], crl=[crl_raw(OLD_CRL), crl_state(NEW_CRL)],
                                  backup=0, put_back=[])
    monkeypatch.setattr(job, "discover", lambda remote, flavor_override=None: RECORDED)
    monkeypatch.setattr(job, "read_raw", lambda remote, facts: calls.ca.pop(0))
    monkeypatch.setattr(job, "read_crl_raw", lambda remote, facts: calls.crl.pop(0))
    monkeypatch.setattr(job, "read_state", lambda remote, facts: calls.crl.pop(0))

    def backup(remote, facts, folder):
        calls.backup += 1
        return types.SimpleNamespace(local_path=tmp_path / "b.tar.gz", sha256="a" * 64,
                                     remote=RemoteBackup("/root/pe-remote-backups/b.tar.gz", "a" * 64, 1))

    def put_back(remote, facts, tarball, sha256, start, console, **_):
        calls.put_back.append(tarball)
        return types.SimpleNamespace(moved_aside=("/var/lib/puppet/ssl.pe-remote-failed-x",))

    monkeypatch.setattr(runs, "take_backup", backup)
    monkeypatch.setattr(runs, "execute", lambda *a, **k: None)
    monkeypatch.setattr(runs, "put_back", put_back)
    return calls


def _run(**kwargs):
    report, console = RunReport("m"), Console(out=io.StringIO(), assume_yes=True)
    try:
        return job.extend_ca(Master(), console, report=report, **kwargs), report, console
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        return exc, report, console


def test_a_renewal_proves_itself_and_says_what_agents_need(fakes):
    result, report, console = _run()
    assert result.outcome == "ok" and result.agent_exit == 0 and report.exit_code == 0
    shown = console.out.getvalue()
    assert "Renewed the CA cert" in shown and "Agents:" in shown and "Puppet 8" in shown


def test_a_dry_run_changes_nothing(fakes):
    result, _, console = _run(dry_run=True)
    assert result.outcome == "dry-run" and fakes.backup == 0
    assert "same key, subject and extensions" in console.out.getvalue()


def test_a_wrong_renewal_is_rolled_back(fakes):
    fakes.ca[1:] = [ca_raw(bundle(365)), ca_raw(OLD)]
    error, report, _ = _run()
    assert isinstance(error, RolledBack) and "not in 15 years" in str(error) and report.exit_code == 7
    assert fakes.put_back == ["/root/pe-remote-backups/b.tar.gz"]


def test_a_chain_without_its_root_key_is_refused(fakes):
    fakes.ca[0] = ca_raw(OLD, root_key=False)
    error, _, _ = _run()
    assert isinstance(error, Refused) and "no root CA key" in str(error) and fakes.backup == 0


def test_a_bundle_that_does_not_verify_is_refused(fakes):
    fakes.ca[0] = ca_raw(bundle(10, root_signer=CA_KEY))
    error, _, _ = _run()
    assert isinstance(error, Refused) and "refusing to renew it" in str(error)


def test_not_the_ca_is_refused(fakes, monkeypatch):
    monkeypatch.setattr(job, "discover", lambda remote, flavor_override=None:
                        dataclasses.replace(RECORDED, ca_key_present=False))
    error, report, _ = _run()
    assert isinstance(error, Refused) and report.exit_code == 4


@pytest.mark.parametrize("years", [0, 51, "15"])
def test_years_out_of_range_is_an_input_error(years):
    with pytest.raises(InputError, match="--years"):
        job.extend_ca(Master(), Console(out=io.StringIO()), years=years)



def test_an_agent_that_trusts_only_the_old_ca_and_fails_rolls_back_naming_why(fakes, monkeypatch):
    import base64

    said = base64.b64encode(b"Info: Using environment 'production'\nError: certificate verify failed\n").decode()
    monkeypatch.setattr(Master, "run", lambda self, command, **kw: types.SimpleNamespace(
        stdout=f"==> agent <==\n1\n==> agent_output <==\n{said}\n", ok=True))
    fakes.ca[2:] = [ca_raw(OLD)]  # what the rollback finds: the old bundle
    error, report, _ = _run()
    assert isinstance(error, RolledBack) and report.exit_code == 7
    assert "trusting the OLD CA cert failed (exit 1: Error: certificate verify failed)" in str(error)


# --- --agents: the new bundle to the agents once the master is proven ----------------------------

def _agents(monkeypatch, rows):
    from pe_remote import agents
    from pe_remote.inventory import Target

    pushed = []

    def push(targets, bundle, console, **kwargs):
        pushed.append((tuple(t.label for t in targets), bundle, kwargs["accept_new_host_key"]))
        return [agents.AgentPush(t.label, status, aside, error) for t, (status, aside, error) in zip(targets, rows)]

    monkeypatch.setattr(job, "push_ca_bundle", push)
    targets = tuple(Target(address=f"agent{i}.example", port=22, user="root") for i in range(len(rows)))
    return pushed, job.AgentsToPush(targets, accept_new_host_key=True)


def test_agents_get_the_new_bundle_after_the_proof(fakes, monkeypatch):
    pushed, agents = _agents(monkeypatch, [("updated", "/ssl/certs/ca.pem.pe-remote-x", ""),
                                           ("already current", "", "")])
    result, report, console = _run(agents=agents)
    assert result.outcome == "ok" and report.exit_code == 0
    assert pushed == [(("agent0.example", "agent1.example"), NEW, True)]
    assert [r.status for r in result.agents] == ["updated", "already current"]
    assert "/ssl/certs/ca.pem.pe-remote-x" in console.out.getvalue()  # the table


def test_an_agent_that_did_not_get_it_exits_10_and_the_master_stays_renewed(fakes, monkeypatch):
    _, agents = _agents(monkeypatch, [("updated", "/a", ""), ("failed", "", "no puppet found; nothing changed")])
    error, report, _ = _run(agents=agents)
    assert isinstance(error, AgentsNotUpdated) and error.exit_code == 10 and report.exit_code == 10
    assert "1 of 2 agents" in str(error) and "no puppet found" in str(error) and fakes.put_back == []


def test_a_dry_run_names_the_agents_and_pushes_nothing(fakes, monkeypatch):
    pushed, agents = _agents(monkeypatch, [("updated", "", "")])
    result, _, console = _run(dry_run=True, agents=agents)
    assert result.outcome == "dry-run" and pushed == []
    assert "Then the new bundle to the agents' certs/ca.pem" in console.out.getvalue() and "agent0.example" in \
        console.out.getvalue()


def test_a_failed_renewal_pushes_nothing(fakes, monkeypatch):
    pushed, agents = _agents(monkeypatch, [("updated", "", "")])
    fakes.ca[1:] = [ca_raw(bundle(365)), ca_raw(OLD)]
    error, _, _ = _run(agents=agents)
    assert isinstance(error, RolledBack) and pushed == []
