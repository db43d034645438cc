"""Unit tests for what the operator and a CI job read: `discover`'s facts and the regen plan as text
(pe_remote.render), the JSON run report (pe_remote.report), and the console's waits and log."""

from __future__ import annotations

import io
import json
import re
import time

import pytest

from cli_fakes import make_cert, make_facts
from pe_remote import console as console_module
from pe_remote.console import Console
from pe_remote.discovery import ServiceState
from pe_remote.errors import InputError
from pe_remote.flavors import FLAVORS
from pe_remote.plan import Plan, Step
from pe_remote.render import render_facts, render_plan
from pe_remote.report import OUTCOMES, SCHEMA_PATH, RunReport, StepRecord, utc_now


def field(text: str, name: str) -> str:
    """The value of `name:` in render_facts' output."""
    line = next(l for l in text.splitlines() if l.startswith(f"{name}:"))
    return line.split(":", 1)[1].strip()


# --- render_facts ---------------------------------------------------------------------------------

def test_facts_of_a_master_with_a_cert():
    facts = make_facts("pe2019", pe_version="2021.7.2", dns_alt_names=("puppet", "puppet.example.com"),
                       cert=make_cert("2B", sans=("DNS:puppet", "DNS:master.example.com", "DNS:a.example.com")))
    text = render_facts(facts, "prod")
    assert field(text, "host") == "prod (hostname master)"
    assert field(text, "flavor").startswith("pe2019 - ")
    assert field(text, "puppet") == "/opt/puppetlabs/bin/puppet (version 7.23.0, PE 2021.7.2)"
    assert field(text, "dns_alt_names") == "puppet, puppet.example.com"
    assert field(text, "cadir") == "/etc/puppetlabs/puppetserver/ca (CA key present)"
    assert field(text, "cached catalog").endswith("/catalog/master.example.com.json")
    assert field(text, "cert serial") == "2B"
    assert field(text, "cert SANs") == "DNS:a.example.com, DNS:master.example.com, DNS:puppet"  # sorted
    assert field(text, "cert expires") == "Nov 24 00:38:59 2041 GMT"
    assert "no cert at" not in text


def test_facts_of_a_bare_host():
    facts = make_facts("puppet6", cert=False, puppetserver=None, dns_alt_names=(), ca_key_present=False,
                       services=(ServiceState("puppet", False, False, "absent"),
                                 ServiceState("puppetserver", False, False, "absent")))
    text = render_facts(facts, "h")
    assert field(text, "puppetserver") == "not found"
    assert field(text, "dns_alt_names") == "(none)"
    assert field(text, "services") == "none of the known Puppet services"
    assert "(CA key ABSENT)" in text
    assert field(text, "cert") == f"no cert at {facts.hostcert}"
    assert "cert serial" not in text


def test_only_the_services_that_exist_are_listed_with_their_state():
    facts = make_facts(services=(ServiceState("puppet", True, False, "inactive"),
                                 ServiceState("puppetserver", True, True, "active"),
                                 ServiceState("pe-puppet", False, False, "absent")))
    assert field(render_facts(facts, "h"), "services") == "puppet (inactive), puppetserver (active)"


# --- render_plan ----------------------------------------------------------------------------------

def a_plan(**changes) -> Plan:
    steps = (
        Step("stop:a", "Stop a", "STOP-A"),
        Step("stop:b", "Stop b", "STOP-B", needs=()),  # alongside the first step
        Step("generate", "Generate", "GEN", check="CHECK-GEN", needs=("stop:a", "stop:b")),
        Step("start:a", "Start a", "START-A"),  # the default: after the step before it
    )
    values = dict(facts=make_facts(), alt_names=("puppet",), steps=steps, skipped_services=(),
                  stopped_services=(), dropped_sans=())
    values.update(changes)
    return Plan(**values)


def numbered(text: str) -> dict[int, str]:
    return {int(m[1]): m[2] for m in re.finditer(r"^\s*(\d+)\. (.+)$", text, re.M)}


def test_the_plan_lists_the_backup_then_every_step_with_its_command_in_order():
    text = render_plan(a_plan(), "BACKUP-CMD", "prod")
    lines = text.splitlines()
    assert lines[0].startswith("Plan for prod: regenerate the cert of master.example.com (")
    assert "  alt names: puppet" in lines
    assert "  current serial: 1A" in lines
    assert numbered(text) == {0: "Back up the SSL directory", 1: "Stop a", 2: "Stop b (alongside 1)",
                              3: "Generate (after 1, 2)", 4: "Start a"}
    commands = [line.strip()[2:] for line in lines if line.strip().startswith("$ ")]
    assert commands == ["BACKUP-CMD", "STOP-A", "STOP-B", "GEN", "START-A"]
    assert lines[lines.index("      $ GEN") + 1] == "      check: CHECK-GEN"
    assert sum("check:" in line for line in lines) == 1
    for absent in ("DROPPED", "skipped", "left stopped"):
        assert absent not in text


def test_the_plan_names_dropped_skipped_and_stopped_services_and_no_serial():
    plan = a_plan(facts=make_facts(cert=False), alt_names=(), dropped_sans=("DNS:old.example.com",),
                  skipped_services=("pe-activemq",), stopped_services=("puppet", "pxp-agent"))
    lines = render_plan(plan, "B", "h").splitlines()
    assert "  alt names: (none)" in lines
    assert "  DROPPED from the current cert (--drop-alt-names): DNS:old.example.com" in lines
    assert "  current serial: (none)" in lines
    assert "  not on this host, skipped: pe-activemq" in lines
    assert "  already stopped, left stopped: puppet, pxp-agent" in lines


# --- the run report -------------------------------------------------------------------------------

def test_the_report_has_every_field_the_schema_requires_and_no_other():
    schema = json.loads(SCHEMA_PATH.read_text())
    data = RunReport("h").as_dict()
    assert set(data) == set(schema["required"]) == set(schema["properties"])
    assert data["schema"] == schema["properties"]["schema"]["const"]
    assert set(OUTCOMES) <= set(schema["properties"]["outcome"]["enum"])
    # Every generation of the table can be a report's flavor (puppet5 was missing: its reports failed
    # validation against the published schema).
    assert set(schema["properties"]["flavor"]["enum"]) == set(FLAVORS) | {None}


def test_a_new_report_is_a_failure_until_told_otherwise():
    report = RunReport("h")
    data = report.as_dict()
    assert (data["outcome"], data["exit_code"], data["error"], data["ended"]) == ("failed", 0, None, None)
    assert data["steps"] == [] and data["alt_names"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["started"])


def test_utc_now_is_iso_with_milliseconds_and_z():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())


def test_certs_and_steps_in_the_report():
    assert RunReport.cert_dict(None) is None
    cert = RunReport.cert_dict(make_cert("FF", sans=("DNS:z", "DNS:a")))
    assert cert == {"serial": "FF", "issuer": "CN=Puppet CA: master.example.com",
                    "not_after": "Nov 24 00:38:59 2041 GMT", "sha256": "AB:CD:EF", "sans": ["DNS:a", "DNS:z"]}
    step = StepRecord("stop:a", "Stop a", 1.0, 2.5, "ok", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z")
    report = RunReport("h", steps=[step], old_cert=cert, outcome="ok", exit_code=0, run_id="r1")
    data = report.as_dict()
    assert data["steps"] == [{"key": "stop:a", "title": "Stop a", "started": "2026-01-01T00:00:00.000Z",
                              "ended": "2026-01-01T00:00:01.500Z", "outcome": "ok"}]
    assert data["old_cert"]["serial"] == "FF" and data["run_id"] == "r1"


def test_write_makes_the_folder_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "ci" / "artifacts" / "report.json"
    report = RunReport("h", outcome="rolled-back", exit_code=7, error="step 'generate' failed")
    report.write(path)
    assert json.loads(path.read_text()) == report.as_dict()
    assert path.read_text().endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_write_replaces_an_earlier_report(tmp_path):
    path = tmp_path / "report.json"
    RunReport("h", outcome="failed").write(str(path))
    RunReport("h", outcome="ok").write(str(path))
    assert json.loads(path.read_text())["outcome"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# --- the console: waits and the log ---------------------------------------------------------------

def test_a_long_wait_ticks_on_a_terminal(monkeypatch):
    monkeypatch.setattr(console_module, "TICK_SECONDS", 0.02)
    out = io.StringIO()
    with Console(out, interactive=True).waiting("the server's answer on 8140"):
        time.sleep(0.15)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(re.fullmatch(r"    \.\.\. the server's answer on 8140: still waiting \(\d+s\)", l) for l in lines)
    count = len(lines)
    time.sleep(0.06)
    assert len(out.getvalue().splitlines()) == count  # the ticks stop with the wait


def test_a_wait_off_a_terminal_says_nothing(monkeypatch):
    monkeypatch.setattr(console_module, "TICK_SECONDS", 0.01)
    out = io.StringIO()
    with Console(out, interactive=False).waiting("x"):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_a_wait_ends_its_ticker_when_the_body_fails(monkeypatch):
    monkeypatch.setattr(console_module, "TICK_SECONDS", 0.01)
    out = io.StringIO()
    with pytest.raises(ZeroDivisionError):
        with Console(out, interactive=True).waiting("x"):
            1 / 0
    count = len(out.getvalue())
    time.sleep(0.05)
    assert len(out.getvalue()) == count


def test_the_console_asks_the_stream_whether_it_is_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert Console(Terminal()).interactive is True
    assert Console(io.StringIO()).interactive is False


def test_control_characters_from_the_master_never_reach_the_terminal_or_the_log(tmp_path):
    out = io.StringIO()
    log = tmp_path / "run.log"
    console = Console(out, interactive=False, log_path=log)
    console.notice("serial \x1b[2J1A")
    console.close()
    console.close()  # closing twice is harmless
    assert out.getvalue() == "serial ?[2J1A\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ serial \?\[2J1A\n", log.read_text())


def test_assume_yes_logs_the_answer_and_asks_nothing(tmp_path):
    out = io.StringIO()
    log = tmp_path / "run.log"
    console = Console(out, assume_yes=True, interactive=False, log_path=log)
    console.confirm("Regenerate?")
    console.close()
    assert out.getvalue() == ""
    assert log.read_text().endswith("Regenerate? yes (--yes)\n")


def test_a_log_file_that_cannot_be_written_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the log file .* choose another with --log-file"):
        Console(io.StringIO(), log_path=blocker / "logs" / "run.log")
