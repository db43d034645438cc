"""Unit tests of verify.py: what `check_regen` and `check_master` find wrong, `verify_master` and its
JSON report, and (separately) reading the verification back from a master.

`read_verification` is faked where a test is about the checks; the parsing test runs the module's own
verification command in a local `sh` against files under tmp_path, so it does not depend on the
command's text or its section markers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeRemote, in_shell, make_cert, make_crl
from pe_remote import verify
from pe_remote.commands.certs import fingerprint
from pe_remote.discovery import ServiceState
from pe_remote.errors import VerificationFailed
from pe_remote.expiry import Dated
from pe_remote.names import san_entries
from pe_remote.plan import build_plan
from pe_remote.verify import Verification, check_master, check_regen
from test_unit_trust import RECORDED

C = RECORDED.certname
OLD = RECORDED.cert
ALT = ("puppet", "puppet.pe-remote.test")
PLAN = build_plan(RECORDED, ALT)


def _new(**changes):
    cert = dataclasses.replace(OLD, serial="2", sha256="AB:CD", sans=PLAN.expected_sans, pubkey_sha256="f" * 64)
    return dataclasses.replace(cert, **changes)


def _result(cert=None, **changes) -> Verification:
    cert = cert or _new()
    fields = {"cert": cert, "served_sha256": cert.sha256, "key_matches": True, "inactive_services": (),
              "revoked_serials": frozenset({OLD.serial}), "agent_exit": None}
    fields.update(changes)
    return Verification(**fields)


# --- check_regen: each way a regen's result can be wrong -------------------------------------------------

def test_a_good_regen_has_no_problem():
    assert check_regen(PLAN, _result()) == []
    assert check_regen(PLAN, _result(agent_exit=0)) == []
    assert check_regen(PLAN, _result(agent_exit=2)) == []  # --noop with changes pending


@pytest.mark.parametrize("result, says", [
    (_result(_new(serial=OLD.serial)), f"serial unchanged ({OLD.serial})"),
    (_result(_new(serial="0")), "the new serial 0 is not above the old 1"),
    (_result(_new(serial="not-hex")), "the new serial not-hex is not above the old 1"),
    (_result(revoked_serials=frozenset({"5"})), "the old serial 1 is not in the CA's CRL"),
    (_result(agent_exit=1), "an agent run on the master against itself failed (exit 1)"),
    (_result(agent_exit=-1), "failed (exit -1)"),
    (_result(_new(issuer="CN=Some other CA")), "issuer changed from 'CN=Puppet CA: master.pe-remote.test' to "
                                               "'CN=Some other CA'"),
    (_result(_new(sans=frozenset({f"DNS:{C}"}))), f"SANs are ['DNS:{C}'], expected"),
    (_result(key_matches=False), "the private key does not match the new cert"),
    (_result(inactive_services=("puppet", "puppetserver")), "not running: puppet, puppetserver"),
    (_result(served_sha256=""), "nothing answers TLS on port 8140"),
    (_result(served_sha256="11:22:33"), "port 8140 serves 11:22:33..., not the new cert AB:CD..."),
], ids=["serial-same", "serial-lower", "serial-unreadable", "not-revoked", "agent-failed", "agent-no-answer",
        "issuer", "sans", "key", "inactive", "not-served", "served-other"])
def test_each_problem_of_a_regen_is_found(result, says):
    problems = check_regen(PLAN, result)
    assert len(problems) == 1, problems
    assert says in problems[0]


def test_all_problems_are_found_at_once():
    bad = _result(_new(serial=OLD.serial, issuer="CN=x", sans=frozenset()), served_sha256="", key_matches=False,
                  inactive_services=("puppet",), revoked_serials=frozenset(), agent_exit=1)
    assert len(check_regen(PLAN, bad)) == 8


@pytest.mark.parametrize("where", ["skipped_services", "stopped_services"])
def test_a_server_left_stopped_or_absent_is_not_asked_to_serve(where):
    plan = dataclasses.replace(PLAN, **{where: (RECORDED.server_service,)})
    assert check_regen(plan, _result(served_sha256="")) == []


def test_without_an_old_cert_only_the_new_one_is_judged():
    plan = dataclasses.replace(PLAN, facts=dataclasses.replace(RECORDED, cert=None))
    assert check_regen(plan, _result(revoked_serials=frozenset())) == []
    assert check_regen(plan, _result(key_matches=False)) == ["the private key does not match the new cert"]


# --- check_master: `verify` ------------------------------------------------------------------------------

def _current(**changes):
    cert = dataclasses.replace(OLD, sans=san_entries(C, ALT))
    return _result(dataclasses.replace(cert, **changes))


def test_a_healthy_master_has_no_problem():
    assert check_master(RECORDED, _current(), ALT) == []


def test_verify_names_ca_files_left_frozen_and_how_to_give_them_back():
    (problem,) = check_master(RECORDED, dataclasses.replace(_current(), freeze_left=True), ALT)
    assert "freeze of the CA files was cut off" in problem and "`regen` on it gives them back first" in problem
    assert "--abandon" in problem and "with no run left, before its backup" in problem


@pytest.mark.parametrize("result, says", [
    (_current(issuer="CN=Rogue CA"), "issuer is 'CN=Rogue CA', not the CA 'CN=Puppet CA: master.pe-remote.test'"),
    (_current(sans=frozenset({f"DNS:{C}", "DNS:puppet"})), "SANs differ from the certname + alt names: missing "
                                                          "DNS:puppet.pe-remote.test"),
    (_current(sans=san_entries(C, (*ALT, "extra"))), "SANs differ from the certname + alt names: unexpected DNS:extra"),
    (dataclasses.replace(_current(), key_matches=False), f"the private key {RECORDED.hostprivkey} does not match"),
    (dataclasses.replace(_current(), inactive_services=("puppetserver",)), "not running: puppetserver"),
    (dataclasses.replace(_current(), served_sha256=""), "nothing answers TLS on port 8140"),
    (dataclasses.replace(_current(), served_sha256="99:99"), "serves 99:99..., not the cert on disk"),
], ids=["issuer", "sans-missing", "sans-extra", "key", "inactive", "not-served", "served-other"])
def test_each_problem_of_a_master_is_found(result, says):
    problems = check_master(RECORDED, result, ALT)
    assert len(problems) == 1, problems
    assert says in problems[0]


def test_without_names_given_more_sans_are_fine_but_not_fewer():
    extra = _current(sans=san_entries(C, (*ALT, "extra")))
    assert check_master(RECORDED, extra, ALT, exact=False) == []
    fewer = _current(sans=frozenset({f"DNS:{C}"}))
    problems = check_master(RECORDED, fewer, ALT, exact=False)
    assert problems == ["SANs differ from the certname + alt names: missing DNS:puppet, DNS:puppet.pe-remote.test"]


def test_without_a_ca_subject_or_a_server_those_are_not_checked():
    facts = dataclasses.replace(RECORDED, ca_subject="", services=tuple(
        s for s in RECORDED.services if s.name != "puppetserver"))
    assert check_master(facts, dataclasses.replace(_current(issuer="CN=x"), served_sha256=""), ALT) == []


# --- verify_master and its JSON report ---------------------------------------------------------------------

@pytest.fixture
def verified(monkeypatch):
    """verify_master's collaborators: the verification read and the end dates read."""
    seen = {}
    now = datetime.now(timezone.utc)
    dates = [Dated("master cert", RECORDED.hostcert, now + timedelta(days=3650)),
             Dated("CA CRL (Puppet CA)", f"{RECORDED.cadir}/ca_crl.pem", now + timedelta(days=10, hours=1))]

    def read_verification(remote, facts, services, *, agent=False):
        seen["services"], seen["agent"] = list(services), agent
        return seen.get("result", _current())

    def read_dates(output, facts):
        seen["dates_output"] = output
        return dates

    monkeypatch.setattr(verify, "read_verification", read_verification)
    monkeypatch.setattr(verify, "read_dates", read_dates)
    return seen


def test_verify_master_reads_the_services_and_the_end_dates(verified):
    remote = FakeRemote(lambda command, index, kwargs: in_shell("echo the-dates"))
    result, problems, dates = verify.verify_master(remote, RECORDED)
    assert verified["services"] == ["puppet", "puppetserver"] and verified["agent"] is False
    assert verified["dates_output"] == "the-dates\n" and remote.calls[0][1]["check"] is False
    assert len(dates) == 2
    assert problems == [f"the CA CRL (Puppet CA) ends in 10 days, on {dates[1].ends:%Y-%m-%d} "
                        f"(under --warn-days 90; {RECORDED.cadir}/ca_crl.pem)"]
    assert result.cert.serial == OLD.serial


def test_verify_master_warn_days_and_given_names(verified):
    verified["result"] = _current(sans=san_entries(C, (*ALT, "extra")))
    _, problems, _ = verify.verify_master(FakeRemote(), RECORDED, warn_days=5)
    assert problems == []  # configured names present, more is fine; 10 days left is not under 5
    _, problems, _ = verify.verify_master(FakeRemote(), RECORDED, ALT, warn_days=5)
    assert problems == ["SANs differ from the certname + alt names: unexpected DNS:extra"]  # named: exact


def test_the_verify_report_is_json(tmp_path):
    path = tmp_path / "verify.json"
    result = _current()
    dates = [{"what": "master cert", "file": RECORDED.hostcert, "ends": "2041-11-30T13:26:01+00:00",
              "days_left": 5000.0, "status": "ok"}]
    verify.write_verify_report(str(path), "m", RECORDED, result, [], dates)
    data = json.loads(path.read_text())
    assert data["schema"] == "pe-remote-verify/1" and data["host"] == "m" and data["ok"] is True
    assert data["flavor"] == RECORDED.flavor.name and data["certname"] == C
    assert data["cert"] == {"serial": OLD.serial, "issuer": OLD.issuer, "sans": sorted(result.cert.sans),
                            "sha256": OLD.sha256}
    assert data["dates"] == dates and data["problems"] == []
    assert datetime.fromisoformat(data["checked"]).tzinfo is not None
    assert path.read_text().endswith("}\n")

    verify.write_verify_report(str(path), "m", RECORDED, result, ["not running: puppet"], [])
    data = json.loads(path.read_text())
    assert data["ok"] is False and data["problems"] == ["not running: puppet"]


# --- reading the verification back (parsing: the module's own command, run in a local sh) ---------------

def _master_files(tmp_path, *, revoked=(1,), agent_exit=2, with_cert=True, key_of_cert=True):
    ssl, ca = tmp_path / "ssl", tmp_path / "ca"
    for folder in (ssl / "certs", ssl / "private_keys", ca):
        folder.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key_pem, ca_key, _ = make_cert("Puppet CA: test", serial=1)
    cert_pem, key_pem, _, cert = make_cert(C, serial=0x2A, sans=(C, "puppet"), issuer_cn="Puppet CA: test")
    if with_cert:
        (ssl / "certs" / f"{C}.pem").write_bytes(cert_pem)
    (ssl / "private_keys" / f"{C}.pem").write_bytes(key_pem if key_of_cert else ca_key_pem)
    (ca / "ca_crl.pem").write_bytes(make_crl("Puppet CA: test", ca_key, revoked))
    agent = tmp_path / "puppet"
    agent.write_text(f"#!/bin/sh\nexit {agent_exit}\n")
    os.chmod(agent, 0o755)
    facts = dataclasses.replace(
        RECORDED, ssldir=str(ssl), cadir=str(ca), hostcert=f"{ssl}/certs/{C}.pem",
        hostprivkey=f"{ssl}/private_keys/{C}.pem", puppet=str(agent), init_system="sysv",
        services=(ServiceState("pe-remote-test-absent", True, True, "active"),))
    return facts, cert


def _shell_remote():
    return FakeRemote(lambda command, index, kwargs: in_shell(command))


def test_reading_the_verification_from_the_master(tmp_path):
    facts, cert = _master_files(tmp_path, revoked=(1, 0x1F))
    result = verify.read_verification(_shell_remote(), facts, ["pe-remote-test-absent"], agent=True)
    assert result.cert.serial == "2A" and result.cert.sha256 == fingerprint(cert)
    assert result.cert.sans == frozenset({f"DNS:{C}", "DNS:puppet"})
    assert result.key_matches is True
    assert result.inactive_services == ("pe-remote-test-absent",)
    assert result.revoked_serials == frozenset({"1", "1F"})
    assert result.agent_exit == 2
    assert isinstance(result.served_sha256, str)


def test_reading_the_verification_a_key_of_another_cert_and_no_agent_run(tmp_path):
    facts, _ = _master_files(tmp_path, key_of_cert=False)
    result = verify.read_verification(_shell_remote(), facts, [])
    assert result.key_matches is False and result.agent_exit is None and result.inactive_services == ()


def test_reading_the_verification_without_a_cert_fails(tmp_path):
    facts, _ = _master_files(tmp_path, with_cert=False)
    with pytest.raises(VerificationFailed, match=f"no readable cert at {facts.hostcert}"):
        verify.read_verification(_shell_remote(), facts, [])


def test_without_a_cert_a_freeze_left_is_named_too(tmp_path, monkeypatch):
    # A generate killed while the CA was frozen can leave no cert AND the CA files root's: both are said.
    facts, _ = _master_files(tmp_path, with_cert=False)
    state = tmp_path / "ca-freeze.owners"
    monkeypatch.setattr(verify, "CA_FREEZE_STATE", str(state))
    with pytest.raises(VerificationFailed) as without:
        verify.read_verification(_shell_remote(), facts, [])
    assert "cut off" not in str(without.value)
    state.write_text("mode=755 /ca\nend\n")
    with pytest.raises(VerificationFailed) as left:
        verify.read_verification(_shell_remote(), facts, [])
    message = str(left.value)
    assert message.startswith(f"no readable cert at {facts.hostcert}; a regen's freeze of the CA files was cut off")
    assert "\n" not in message
