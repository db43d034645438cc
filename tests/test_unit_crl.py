"""Unit tests for `refresh-crl` (pe_remote/crl.py): the plan, the proof read from the CRLs' bytes, and the
job's paths (dry run, refusals, success, rollback) on fakes. The re-signing itself runs on real
masters in tests/test_refresh_crl.py."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import datetime
import io
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pe_remote import crl as job
from pe_remote import runs
from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import read_crls
from pe_remote.commands.steps import thaw_saved_freeze
from pe_remote.backup import RemoteBackup
from pe_remote.console import Console
from pe_remote.errors import Incomplete, InputError, Refused, RemoteCommandFailed, RolledBack
from pe_remote.report import RunReport
from test_unit_backup_verify import RECORDED

NOW = datetime.datetime.now(datetime.timezone.utc)
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA: master.pe-remote.test")])


def _ca_pem(key=KEY) -> bytes:
    cert = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _crl_pem(number: int, days: float, revoked=(7, 9), key=KEY, dated=datetime.datetime(2025, 1, 1)) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(CA_NAME).last_update(NOW)
               .next_update(NOW + datetime.timedelta(days=days)).add_extension(x509.CRLNumber(number), False))
    for serial in revoked:
        builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                                  .revocation_date(dated).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


CA = _ca_pem()
OLD = _crl_pem(4, 3)
NEW = _crl_pem(5, 1825)


def raw(ca_crl: bytes, host_crl: bytes | None = None, served: bytes | None = None, *, reload: bool = True,
        ca: bytes = CA, root_key: bool = False) -> dict:
    """The bytes read_raw finds on a master (and a journal records)."""
    return {"ca_crl": ca_crl, "host_crl": host_crl if host_crl is not None else ca_crl,
            "served_crl": served if served is not None else ca_crl, "ca_cert": ca, "can_reload": reload,
            "root_key": root_key}


def state(*args, **kwargs):
    return job.crl_state(raw(*args, **kwargs))


def test_a_state_is_read_from_its_bytes():
    found = state(OLD, served=b"")
    assert found.ca_crl_sha256 == hashlib.sha256(OLD).hexdigest() and found.served == ()
    assert [c.der_sha256 for c in found.host_crl] == [c.der_sha256 for c in read_crls(OLD, CA)]


def problems(after, before=None, days=1825):
    return job.refresh_problems(before or state(OLD), after, days, NOW, served=True)


def test_a_good_refresh_has_no_problems():
    assert problems(state(NEW)) == []


@pytest.mark.parametrize("after, expected", [
    (lambda: state(_crl_pem(6, 1825)), "the CRL's number is 6, not 5"),
    (lambda: state(_crl_pem(5, 1825, revoked=(7,))), "the CRL's entries changed (lost 1, gained 0)"),
    (lambda: state(_crl_pem(5, 30)), "nextUpdate"),
    (lambda: state(_crl_pem(5, 1825, key=OTHER_KEY)), "does not verify against its issuer's cert"),
    (lambda: state(NEW, host_crl=OLD), "the host's CRL is not the CA's"),
    (lambda: state(NEW, served=OLD), "the CA endpoint on 8140 does not serve the new CRL"),
    (lambda: state(NEW + OLD, host_crl=NEW + OLD), "holds 2 CRLs, not 1"),
    (lambda: state(b""), "no readable CRL"),
])
def test_each_way_a_refresh_can_be_wrong_is_named(after, expected):
    found = problems(after())
    assert len(found) == 1 and expected in found[0], found


# Puppet 6+: the CA file holds the signing CA's CRL, then the root CA's, which ends too.
ROOT_KEY = ec.generate_private_key(ec.SECP256R1())
ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet Root CA: 0123456789")])
ROOT_CA = (x509.CertificateBuilder().subject_name(ROOT_NAME).issuer_name(ROOT_NAME).public_key(ROOT_KEY.public_key())
           .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
           .not_valid_after(NOW + datetime.timedelta(days=3650)).sign(ROOT_KEY, hashes.SHA256())
           .public_bytes(serialization.Encoding.PEM))


def _root_crl(number: int, days: float) -> bytes:
    return (x509.CertificateRevocationListBuilder().issuer_name(ROOT_NAME).last_update(NOW)
            .next_update(NOW + datetime.timedelta(days=days)).add_extension(x509.CRLNumber(number), False)
            .sign(ROOT_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def chain(ca_crl: bytes, *, root_key: bool = True):
    return state(ca_crl, ca=CA + ROOT_CA, root_key=root_key)


def test_with_the_root_key_the_root_cas_crl_is_renewed_too():
    before = chain(OLD + _root_crl(1, 3))
    assert job.renewed(before) == 2
    assert job.refresh_problems(before, chain(NEW + _root_crl(2, 1825)), 1825, NOW, served=True) == []
    found = job.refresh_problems(before, chain(NEW + _root_crl(1, 3)), 1825, NOW, served=True)
    assert any("the CRL of CN=Puppet Root CA: 0123456789's number is 1, not 2" in p for p in found), found
    assert any("CN=Puppet Root CA: 0123456789's nextUpdate" in p for p in found), found


def test_without_the_root_key_the_root_cas_crl_is_kept_byte_for_byte():
    root = _root_crl(1, 3)
    before = chain(OLD + root, root_key=False)
    assert job.renewed(before) == 1
    assert job.refresh_problems(before, chain(NEW + root, root_key=False), 1825, NOW, served=True) == []
    found = job.refresh_problems(before, chain(NEW + _root_crl(2, 1825), root_key=False), 1825, NOW, served=True)
    assert found == ["the CRL of CN=Puppet Root CA: 0123456789 changed (its issuer's key is not there to re-sign it)"]


def test_the_plan_says_what_becomes_of_each_crl():
    lines = job.crl_plan_lines(chain(OLD + _root_crl(1, 3)), 1825)
    assert sum("after: number" in line for line in lines) == 2
    lines = job.crl_plan_lines(chain(OLD + _root_crl(1, 3), root_key=False), 1825)
    assert sum("after: number" in line for line in lines) == 1 and any("kept as it is" in line for line in lines)


def test_after_a_rollback_the_old_crl_or_the_servers_own_renewal_counts_as_back():
    before = state(OLD)
    assert job.crl_is_back(before, state(OLD))
    assert job.crl_is_back(before, state(_crl_pem(5, 1825)))  # Puppet Server 8 renewed it on its start
    assert job.crl_is_back(before, state(_crl_pem(5, 1825, dated=NOW)))  # ... dating every entry anew
    assert not job.crl_is_back(before, state(_crl_pem(4, 1825)))  # not the old one, not a newer one
    assert not job.crl_is_back(before, state(_crl_pem(5, 1825, revoked=(7,))))  # an entry lost
    assert not job.crl_is_back(before, state(_crl_pem(5, 1825, key=OTHER_KEY)))
    assert not job.crl_is_back(before, state(b""))


def test_a_server_left_stopped_is_not_asked_for_the_crl():
    assert job.refresh_problems(state(OLD), state(NEW, served=b""), 1825, NOW, served=False) == []


# --- the plan ------------------------------------------------------------------------------------

def test_plan_reloads_a_server_whose_unit_can():
    plan = job.build_refresh_plan(RECORDED, state(OLD, reload=True), 1825)
    assert [s.key for s in plan.steps] == ["resign-crl", "copy-host-crl", "reload:puppetserver", "wait-server"]
    assert " 1825 " in plan.steps[0].command and "/ca_key.pem " in plan.steps[0].command
    assert plan.steps[-1].server_ready


def test_plan_restarts_a_server_that_cannot_reload():
    plan = job.build_refresh_plan(RECORDED, state(OLD, reload=False), 30)
    assert [s.key for s in plan.steps] == ["resign-crl", "copy-host-crl", "stop:puppetserver", "start:puppetserver",
                                           "wait-server"]


def test_plan_leaves_a_stopped_server_stopped():
    stopped = dataclasses.replace(RECORDED, services=tuple(
        dataclasses.replace(s, active=False) if s.name == "puppetserver" else s for s in RECORDED.services))
    assert [s.key for s in job.build_refresh_plan(stopped, state(OLD), 30).steps] == ["resign-crl", "copy-host-crl"]


def test_read_state_parses_the_sections():
    encode = lambda data: base64.encodebytes(data).decode()  # noqa: E731
    output = (f"{protocol.marker('ca_crl')}\n{encode(OLD)}{protocol.marker('host_crl')}\n{encode(OLD)}"
              f"{protocol.marker('ca_cert')}\n{encode(CA)}{protocol.marker('served_crl')}\n{encode(OLD)}"
              f"{protocol.marker('can_reload')}\nCanReload=yes\n")
    remote = types.SimpleNamespace(run=lambda command, check=True: types.SimpleNamespace(stdout=output))
    found = job.read_state(remote, RECORDED)
    assert found.can_reload and found.ca_crl[0].number == 4 and found.ca_crl[0].signed_by_ca
    assert found.served[0].der_sha256 == found.ca_crl[0].der_sha256
    assert {serial for serial, _ in found.ca_crl[0].entries} == {"7", "9"}


# --- the job on fakes ----------------------------------------------------------------------------

class Master:
    commands_run = 0
    target = types.SimpleNamespace(label="m", backup_dir="backups")

    def __init__(self) -> None:
        self.commands: list[str] = []

    def hold(self, command):
        return "==> lock-held <==", types.SimpleNamespace(close=lambda: None)

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        return types.SimpleNamespace(ok=True, stdout="", exit_status=0)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    facts = dataclasses.replace(RECORDED, backup_free_kb=10**7)
    states = [raw(OLD), raw(NEW)]
    calls = types.SimpleNamespace(executed=[], put_back=[], backup=0, states=states)
    monkeypatch.setattr(job, "discover", lambda remote, flavor_override=None: facts)
    monkeypatch.setattr(job, "read_raw", lambda remote, facts: calls.states.pop(0))

    def backup(remote, facts, folder):
        calls.backup += 1
        return types.SimpleNamespace(local_path=tmp_path / "b.tar.gz", sha256="a" * 64,
                                     remote=RemoteBackup("/root/pe-remote-backups/b.tar.gz", "a" * 64, 1))

    monkeypatch.setattr(runs, "take_backup", backup)
    monkeypatch.setattr(runs, "execute", lambda remote, plan, console, **kw: calls.executed.append(plan))

    def put_back(remote, facts, tarball, sha256, start, console, **_):
        calls.put_back.append(tarball)
        return types.SimpleNamespace(moved_aside=("/var/lib/puppet/ssl.pe-remote-failed-x",))

    monkeypatch.setattr(runs, "put_back", put_back)
    return calls


def _run(**kwargs):
    report = RunReport("m")
    console = Console(out=io.StringIO(), assume_yes=True)
    try:
        return job.refresh_crl(Master(), console, report=report, **kwargs), report, console
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        return exc, report, console


def test_a_refresh_backs_up_runs_the_plan_and_proves_it(fakes):
    result, report, console = _run(days=1825)
    assert result.outcome == "ok" and fakes.backup == 1 and len(fakes.executed) == 1
    assert report.exit_code == 0 and report.outcome == "ok"
    assert "number 4 -> 5, 2 entries kept" in console.out.getvalue()


def test_a_dry_run_shows_the_plan_and_changes_nothing(fakes):
    result, report, console = _run(dry_run=True)
    assert result.outcome == "dry-run" and fakes.backup == 0 and fakes.executed == []
    shown = console.out.getvalue()
    assert "Re-sign the CA's CRL" in shown and "now: number 4, 2 revoked certs" in shown and "Dry run" in shown


def test_a_cut_off_freeze_with_no_run_left_is_given_back_before_the_backup(fakes, monkeypatch):
    # A regen's freeze cut off, its journal moved aside: a backup now would keep the CA files root's.
    frozen = dataclasses.replace(RECORDED, backup_free_kb=10**7, ca_freeze_left=True)
    monkeypatch.setattr(job, "discover", lambda remote, flavor_override=None: frozen)
    master = Master()
    at_backup = []
    backup = runs.take_backup
    monkeypatch.setattr(runs, "take_backup", lambda *a: (at_backup.append(list(master.commands)), backup(*a))[1])
    console = Console(out=io.StringIO(), assume_yes=True)
    assert job.refresh_crl(master, console, report=RunReport("m"), days=1825).outcome == "ok"
    assert at_backup == [[thaw_saved_freeze()]] and "no run is left to resume" in console.out.getvalue()
    fakes.states[:] = [raw(OLD)]
    dry = Console(out=io.StringIO(), assume_yes=True)
    quiet = Master()
    assert job.refresh_crl(quiet, dry, report=RunReport("m"), dry_run=True).outcome == "dry-run"
    assert thaw_saved_freeze() not in quiet.commands and "which a real run does first" in dry.out.getvalue()


def test_a_wrong_result_is_rolled_back_exit_7(fakes):
    fakes.states[1:] = [raw(_crl_pem(5, 1825, revoked=(7,))), raw(OLD)]
    error, report, _ = _run()
    assert isinstance(error, RolledBack) and "entries changed" in str(error)
    assert fakes.put_back == ["/root/pe-remote-backups/b.tar.gz"] and report.exit_code == 7


def test_a_rollback_that_does_not_bring_the_old_crl_back_is_incomplete(fakes):
    fakes.states[1:] = [raw(_crl_pem(5, 30)), raw(_crl_pem(5, 1825, revoked=(7,)))]
    error, report, _ = _run()
    assert isinstance(error, Incomplete) and "not the old one" in str(error) and report.exit_code == 8


def test_a_rollback_that_fails_is_incomplete(fakes, monkeypatch):
    fakes.states[1:] = [raw(_crl_pem(5, 30))]

    def broken(*a, **k):
        raise RemoteCommandFailed("tar -xzpf", 2, "tar: error")

    monkeypatch.setattr(runs, "put_back", broken)
    error, report, _ = _run()
    assert isinstance(error, Incomplete) and "ROLLBACK FAILED" in str(error) and report.exit_code == 8


def test_no_ca_key_is_refused_before_anything(fakes, monkeypatch):
    monkeypatch.setattr(job, "discover", lambda remote, flavor_override=None:
                        dataclasses.replace(RECORDED, ca_key_present=False))
    error, report, _ = _run()
    assert isinstance(error, Refused) and "not the CA" in str(error) and report.exit_code == 4
    assert fakes.backup == 0


def test_a_crl_the_ca_did_not_sign_is_refused(fakes):
    fakes.states[0] = raw(_crl_pem(4, 3, key=OTHER_KEY))
    error, _, _ = _run()
    assert isinstance(error, Refused) and "not signed by the CA" in str(error) and fakes.backup == 0


@pytest.mark.parametrize("days", [0, -1, job.MAX_DAYS + 1, "10"])
def test_days_out_of_range_is_an_input_error(fakes, days):
    error, _, _ = _run(days=days)
    assert isinstance(error, InputError) and "--days" in str(error)


def test_a_crl_without_next_update_is_shown_as_none_not_a_traceback():
    # X.509 lets a CRL leave nextUpdate out (Puppet's never do); the plan and the result still print.
    before = job.crl_state(raw(OLD))
    without = dataclasses.replace(before, ca_crl=(dataclasses.replace(before.ca_crl[0], next_update=None),
                                                  *before.ca_crl[1:]))
    lines = job.crl_plan_lines(without, 30)
    assert "revoked certs, nextUpdate none" in lines[0] and "(30 days)" in lines[1]
