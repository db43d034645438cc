"""Unit tests for pe_remote.flavors (which generation a master is) and pe_remote.plan (the ordered steps)."""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from pe_remote.discovery import ServiceState, parse_discovery
from pe_remote.flavors import ALL_SERVICES, FLAVORS, PE37, PE2016, PE2019, PUPPET6, UnknownFlavor, detect_flavor
from pe_remote.plan import Plan, Step, build_plan, cert_files, fill, server_ready_check, service_command

DATA = Path(__file__).parent / "data"
RECORDED = parse_discovery((DATA / "discovery-oss7.txt").read_text())
CERTNAME = RECORDED.certname  # master.pe-remote.test: needs no quoting
ALT = ("puppet", "puppet.pe-remote.test")


# --- detect_flavor ------------------------------------------------------------------------------

@pytest.mark.parametrize("puppet_version, pe_version, flavor", [
    ("3.7.4 (Puppet Enterprise 3.7.2)", "3.7.2", PE37),
    ("3.8.7 (Puppet Enterprise 3.8.8)", "3.8.8\n", PE37),
    ("4.7.0", "2016.4.0", PE2016),
    ("5.3.3", "2017.3.2", PE2016),
    ("5.5.1", "2018.1.0", PE2016),
    ("6.17.0", "2019.8.1", PE2019),
    ("7.21.0", "2021.7.2", PE2019),
    ("7.24.0", "2023.2.0", PE2019),
    ("8.4.0", "2023.8.0", PE2019),
    ("6.28.0", None, PUPPET6),
    ("7.23.0", None, PUPPET6),
    ("8.10.0", None, PUPPET6),
    ("7.23.0", "", PUPPET6),  # an empty pe_version file is no PE marker
])
def test_detect_flavor(puppet_version, pe_version, flavor):
    assert detect_flavor(puppet_version, pe_version) is flavor


@pytest.mark.parametrize("puppet_version, pe_version, mentioned", [
    ("3.8.7", None, "3.8.7"),  # OSS 3
    ("", None, "unknown version"),
    ("2.7.19 (Puppet Enterprise 2.8.1)", "2.8.1", "2.8.1"),  # PE 2.x
    ("4.2.1", "2015.2.0", "2015.2.0"),  # PE 2015 is neither 3.x nor 2016+
    ("7.0.0", "garbage", "garbage"),
])
def test_detect_flavor_unsupported(puppet_version, pe_version, mentioned):
    with pytest.raises(UnknownFlavor) as info:
        detect_flavor(puppet_version, pe_version)
    assert mentioned in str(info.value)


def test_flavor_table_is_consistent():
    assert set(FLAVORS) == {"pe37", "pe2016", "puppet5", "puppet6", "pe2019"}
    for flavor in FLAVORS.values():
        assert sorted(flavor.start_order) == sorted(flavor.services), flavor.name
        assert flavor.server_services and set(flavor.server_services) <= set(flavor.services)
        assert set(flavor.services) <= set(ALL_SERVICES)


# --- helpers ------------------------------------------------------------------------------------

def services(active=(), inactive=()) -> tuple[ServiceState, ...]:
    """Every known service: absent unless listed."""
    states = []
    for name in ALL_SERVICES:
        if name in active:
            states.append(ServiceState(name, True, True, "active"))
        elif name in inactive:
            states.append(ServiceState(name, True, False, "inactive"))
        else:
            states.append(ServiceState(name, False, False, "absent"))
    return tuple(states)


def facts_for(flavor, *, active=None, inactive=(), **changes):
    active = flavor.services if active is None else active
    return dataclasses.replace(RECORDED, flavor=flavor, services=services(active, inactive), **changes)


def keys(plan) -> list[str]:
    return [step.key for step in plan.steps]


def step(plan, key):
    return next(s for s in plan.steps if s.key == key)


# --- step order --------------------------------------------------------------------------------

def test_pe37_order():
    plan = build_plan(facts_for(PE37), ALT)
    assert keys(plan) == [
        "stop:pe-puppet", "stop:pe-puppetserver", "stop:pe-activemq", "stop:pe-mcollective",
        "clean", "remove-catalog", "generate",
        "start:pe-puppetserver", "wait-server", "start:pe-activemq", "start:pe-mcollective", "start:pe-puppet",
    ]


def test_pe37_cert_work_overlaps_only_the_services_with_their_own_credentials():
    needs = build_plan(facts_for(PE37), ALT).needs()
    # The agent stops alongside the server; both are stopped before anything touches the SSL folders ...
    assert needs["stop:pe-puppet"] == ()
    assert needs["stop:pe-puppetserver"] == ()
    assert needs["clean"] == ("stop:pe-puppet", "stop:pe-puppetserver")
    # ... the broker and MCollective (own copies of the credentials) stop alongside the cert work,
    assert needs["stop:pe-activemq"] == ("stop:pe-puppet", "stop:pe-puppetserver")
    assert needs["stop:pe-mcollective"] == ("stop:pe-activemq",)
    # the server starts only after generate, and each service starts only after its own stop.
    assert needs["start:pe-puppetserver"] == ("generate",)
    assert needs["start:pe-activemq"] == ("wait-server", "stop:pe-mcollective")
    assert needs["start:pe-mcollective"] == ("start:pe-activemq",)
    assert needs["start:pe-puppet"] == ("wait-server",)


def test_pe2016_the_agent_stops_alongside_the_server_and_everything_else_runs_in_order():
    plan = build_plan(facts_for(PE2016), ALT)
    needs, keys_ = plan.needs(), keys(plan)
    others = [k for k in keys_ if k.startswith("stop:") and k != "stop:puppet"]
    assert needs["stop:puppet"] == needs[others[0]] == ()
    assert needs["clean"] == ("stop:puppet", others[-1])  # the seed's order: clean, catalog, generate
    rest = [k for k in keys_[1:] if k not in (others[0], "clean")]
    assert all(needs[k] == (keys_[keys_.index(k) - 1],) for k in rest)
    assert keys_[-1] == "start:puppet"  # the agent still starts last, once the server answers


@pytest.mark.parametrize("flavor", [PUPPET6, PE2019], ids=lambda f: f.name)
def test_puppet6_restart_path_overlaps_the_stops_and_the_cert_work_that_needs_less(flavor):
    plan = build_plan(facts_for(flavor, reloadable=()), ALT)
    needs, keys_ = plan.needs(), keys(plan)
    others = [k for k in keys_ if k.startswith("stop:") and k != "stop:puppet"]
    assert needs["clean"] == ()
    assert needs["stop:puppet"] == needs[others[0]] == ("clean",)
    assert all(needs[k] == (keys_[keys_.index(k) - 1],) for k in others[1:])
    # the agent's cached catalog goes once the agent is stopped, the cleaned cert's leftovers once cleaned,
    assert needs["remove-catalog"] == ("stop:puppet",)
    assert needs["delete-leftovers"] == ("clean",)
    # and generate (the CA offline) waits for every stop and both.
    assert needs["generate"] == ("stop:puppet", others[-1], "delete-leftovers", "remove-catalog")
    after = keys_[keys_.index("generate") + 1:]
    assert all(needs[k] == (keys_[keys_.index(k) - 1],) for k in after)
    assert keys_[-1] == "start:puppet"


def test_pe37_with_only_the_agent_and_the_server_stops_them_together_then_runs_in_order():
    plan = build_plan(facts_for(PE37, active=("pe-puppet", "pe-puppetserver")), ALT)
    needs = plan.needs()
    assert needs["stop:pe-puppet"] == needs["stop:pe-puppetserver"] == ()
    assert needs["clean"] == ("stop:pe-puppet", "stop:pe-puppetserver")
    later = keys(plan)[keys(plan).index("clean") + 1:]
    assert all(needs[k] == (keys(plan)[keys(plan).index(k) - 1],) for k in later)


def test_pe37_with_only_the_broker_running_still_starts_it_after_its_stop():
    needs = build_plan(facts_for(PE37, active=("pe-puppet", "pe-puppetserver", "pe-activemq")), ALT).needs()
    assert needs["start:pe-activemq"] == ("wait-server", "stop:pe-activemq")
    assert "start:pe-mcollective" not in needs


def test_a_step_may_only_need_earlier_steps():
    bad = Plan(RECORDED, (), (Step("a", "A", "true", needs=("b",)), Step("b", "B", "true")), (), (), ())
    with pytest.raises(ValueError, match="not an earlier step"):
        bad.needs()


def test_pe2016_order():
    plan = build_plan(facts_for(PE2016), ALT)
    assert keys(plan) == [
        "stop:puppet", "stop:pe-puppetserver", "stop:pe-activemq", "stop:mcollective",
        "stop:pe-orchestration-services", "stop:pxp-agent",
        "clean", "remove-catalog", "generate",
        "start:pe-puppetserver", "wait-server", "start:pe-orchestration-services", "start:pe-activemq",
        "start:mcollective", "start:pxp-agent", "start:puppet",
    ]


def test_puppet6_cleans_before_the_stops_and_deletes_leftovers_after():
    plan = build_plan(facts_for(PUPPET6), ALT)
    assert keys(plan) == [
        "clean", "stop:puppet", "stop:puppetserver", "delete-leftovers", "remove-catalog", "generate",
        "start:puppetserver", "wait-server", "start:puppet",
    ]


def test_recorded_master_plan_is_the_puppet6_plan():
    assert keys(build_plan(RECORDED, RECORDED.dns_alt_names)) == keys(build_plan(facts_for(PUPPET6), ALT))


def test_pe2019_order():
    plan = build_plan(facts_for(PE2019), ALT)
    assert keys(plan) == [
        "clean",
        "stop:puppet", "stop:pxp-agent", "stop:pe-puppetserver", "stop:pe-orchestration-services",
        "stop:pe-console-services", "stop:pe-nginx", "stop:pe-puppetdb", "stop:pe-postgresql",
        "delete-leftovers", "remove-catalog", "generate",
        "start:pe-postgresql", "start:pe-puppetdb", "start:pe-puppetserver", "wait-server",
        "start:pe-orchestration-services", "start:pe-console-services", "start:pe-nginx", "start:pxp-agent",
        "start:puppet",
    ]


@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_wait_server_follows_the_server_start(flavor):
    facts = facts_for(flavor)
    ks = keys(build_plan(facts, ALT))
    assert ks[ks.index(f"start:{facts.server_service}") + 1] == "wait-server"
    assert [s.key for s in build_plan(facts_for(flavor), ALT).steps if s.server_ready] == ["wait-server"]


# --- absent and inactive services --------------------------------------------------------------

def test_absent_services_are_skipped_and_listed():
    facts = facts_for(PE37, active=("pe-puppet", "pe-puppetserver"))
    plan = build_plan(facts, ALT)
    assert plan.skipped_services == ("pe-activemq", "pe-mcollective")
    assert plan.stopped_services == ()
    assert not any(k.endswith(("pe-activemq", "pe-mcollective")) for k in keys(plan))
    assert keys(plan) == ["stop:pe-puppet", "stop:pe-puppetserver", "clean", "remove-catalog", "generate",
                          "start:pe-puppetserver", "wait-server", "start:pe-puppet"]


def test_inactive_services_are_left_stopped():
    facts = facts_for(PE37, active=("pe-puppetserver", "pe-activemq", "pe-mcollective"), inactive=("pe-puppet",))
    plan = build_plan(facts, ALT)
    assert plan.stopped_services == ("pe-puppet",)
    assert plan.skipped_services == ()
    assert "stop:pe-puppet" not in keys(plan)
    assert "start:pe-puppet" not in keys(plan)


def test_server_not_running_means_no_wait_step():
    plan = build_plan(facts_for(PUPPET6, active=("puppet",), inactive=("puppetserver",)), ALT)
    assert "wait-server" not in keys(plan)
    assert plan.stopped_services == ("puppetserver",)


def test_services_of_other_flavors_are_ignored():
    # The OSS services exist and run on this host, but a PE 3.7 plan neither stops them nor lists them.
    facts = facts_for(PE37, active=(*PE37.services, "puppet", "puppetserver"))
    plan = build_plan(facts, ALT)
    assert "stop:puppet" not in keys(plan) and "stop:puppetserver" not in keys(plan)
    assert "puppet" not in plan.skipped_services


# --- commands: argv and quoting ----------------------------------------------------------------

def test_pe37_commands_argv():
    facts = facts_for(PE37, puppet="/opt/puppet/bin/puppet", puppetserver=None)
    plan = build_plan(facts, ALT)
    p = "/opt/puppet/bin/puppet"
    assert shlex.split(step(plan, "stop:pe-puppet").command) == [p, "resource", "service", "pe-puppet",
                                                                  "ensure=stopped"]
    start = [p, "resource", "service", "pe-puppet", "ensure=running"]
    # A start is bounded in seconds, and tried once more after 3 s only if it failed quickly
    # (transient failures on loaded masters), not after a start that hung until its bound.
    command = step(plan, "start:pe-puppet").command
    bounded = shlex.join(["timeout", "300", *start])
    assert command == (f"{{ t=$(date +%s); {bounded} || {{ r=$?; [ $r != 124 ] && [ $(( $(date +%s) - t )) -lt 30 ] "
                       f"&& sleep 3 && {bounded}; }}; }}")
    assert step(plan, "start:pe-puppet").timeout > 2 * 300
    assert shlex.split(step(plan, "clean").command) == [p, "cert", "clean", CERTNAME]
    assert shlex.split(step(plan, "generate").command) == [
        p, "cert", "generate", CERTNAME, "--dns_alt_names=puppet,puppet.pe-remote.test"]
    assert shlex.split(step(plan, "remove-catalog").command) == ["rm", "-f", RECORDED.catalog_path]


def test_puppet6_commands_argv():
    plan = build_plan(RECORDED, ALT)
    ps = "/usr/bin/puppetserver"
    clean = step(plan, "clean").command
    # One call of the CA's clean endpoint, with the master's own cert, verified against its CA bundle;
    # the CLI where the endpoint answers otherwise.
    assert "-X PUT" in clean and f"https://{CERTNAME}:8140/puppet-ca/v1/clean" in clean
    assert f"--resolve {CERTNAME}:8140:127.0.0.1" in clean and "--cacert /var/lib/puppet/ssl/certs/ca.pem" in clean
    assert f"--data '{{\"certnames\": [\"{CERTNAME}\"]}}'" in clean
    assert f"{ps} ca clean --certname {CERTNAME}" in clean
    # The CA may complain after revoking its own client cert: success is the old serial in the CRL.
    assert clean.endswith("|| echo \"(exit $?; the CA's CRL decides)\"")
    assert shlex.split(step(plan, "generate").command) == [
        ps, "ca", "generate", "--certname", CERTNAME, "--subject-alt-names", "puppet,puppet.pe-remote.test",
        "--ca-client"]
    assert shlex.split(step(plan, "delete-leftovers").command) == ["rm", "-f", *cert_files(RECORDED)]
    assert shlex.split(step(plan, "stop:puppetserver").command) == [
        "/usr/bin/puppet", "resource", "service", "puppetserver", "ensure=stopped"]


def test_cert_files():
    assert cert_files(RECORDED) == [
        f"/var/lib/puppet/ssl/certs/{CERTNAME}.pem",
        f"/var/lib/puppet/ssl/private_keys/{CERTNAME}.pem",
        f"/var/lib/puppet/ssl/public_keys/{CERTNAME}.pem",
        f"/var/lib/puppet/ssl/certificate_requests/{CERTNAME}.pem",
        f"/etc/puppet/puppetserver/ca/signed/{CERTNAME}.pem",
    ]


@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_no_alt_names_means_no_alt_names_flag(flavor):
    plan = build_plan(facts_for(flavor), ())
    argv = shlex.split(step(plan, "generate").command)
    assert not any("alt" in word for word in argv), argv
    assert CERTNAME in argv
    if flavor.clean_while_running:
        assert argv[-1] == "--ca-client"  # the flag after the dropped pair survives


def test_pe37_generate_without_alt_names():
    plan = build_plan(facts_for(PE37), ())
    assert shlex.split(step(plan, "generate").command) == [RECORDED.puppet, "cert", "generate", CERTNAME]


def test_puppet6_generate_without_alt_names():
    plan = build_plan(RECORDED, ())
    assert shlex.split(step(plan, "generate").command) == [
        "/usr/bin/puppetserver", "ca", "generate", "--certname", CERTNAME, "--ca-client"]


def test_single_alt_name():
    plan = build_plan(facts_for(PE37), ("puppet",))
    assert shlex.split(step(plan, "generate").command)[-1] == "--dns_alt_names=puppet"


def test_commands_need_no_quoting_for_plain_values():
    # Plain names produce plain commands: nothing is quoted that does not need it.
    plan = build_plan(facts_for(PE37), ALT)
    assert step(plan, "generate").command == (
        f"/usr/bin/puppet cert generate {CERTNAME} --dns_alt_names=puppet,puppet.pe-remote.test")


def test_plan_commands_lists_every_step_command():
    plan = build_plan(RECORDED, ALT)
    assert plan.commands() == [s.command for s in plan.steps]
    assert len(plan.commands()) == len(plan.steps)


@pytest.mark.parametrize("init, check", [
    ("systemd", "! systemctl is-active --quiet pe-puppet.service"),
    ("sysv", "! /etc/init.d/pe-puppet status >/dev/null 2>&1"),
])
def test_stop_check_per_init_system(init, check):
    plan = build_plan(facts_for(PE37, init_system=init), ALT)
    assert step(plan, "stop:pe-puppet").check == check
    assert step(plan, "start:pe-puppet").check == check[2:]


# --- every step has a check (and service steps an undo) ----------------------------------------

@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_every_step_has_a_check(flavor):
    plan = build_plan(facts_for(flavor), ALT)
    for s in plan.steps:
        if s.server_ready:
            # The wait step's command IS the check: it exits 1 unless 8140 serves the cert in time.
            assert s.command == server_ready_check(plan.facts)
            assert "exit 1" in s.command and "puppet-ca/v1/certificate/ca" in s.command
        else:
            assert s.check, s.key


@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_service_steps_undo_each_other(flavor):
    plan = build_plan(facts_for(flavor), ALT)
    for s in plan.steps:
        if s.key.startswith("stop:"):
            assert s.undo == service_command(plan.facts, s.key[5:], "running")
        if s.key.startswith("start:"):
            assert s.undo == service_command(plan.facts, s.key[6:], "stopped")


def test_pe37_clean_check_covers_every_file_clean_deletes_and_the_revocation():
    plan = build_plan(facts_for(PE37), ALT)
    check = step(plan, "clean").check
    kept = f"{plan.facts.ssldir}/public_keys/{plan.facts.certname}.pem"  # Puppet's clean leaves it
    for path in cert_files(plan.facts):
        assert (shlex.quote(path) in check) is (path != kept)
    assert f"grep -qixF {plan.facts.cert.serial}" in check and "ca_crl.pem" in check


def test_generate_check_requires_cert_key_and_signed_copy():
    plan = build_plan(RECORDED, ALT)
    check = step(plan, "generate").check
    assert shlex.split(check)[:12] == [
        "test", "-s", f"/var/lib/puppet/ssl/certs/{CERTNAME}.pem", "&&",
        "test", "-s", f"/var/lib/puppet/ssl/private_keys/{CERTNAME}.pem", "&&",
        "test", "-s", f"/etc/puppet/puppetserver/ca/signed/{CERTNAME}.pem", "&&"]
    assert f"still has the old serial {RECORDED.cert.serial}" in check


def test_checks_really_work_in_a_shell(tmp_path):
    """Run the file checks against a real folder: they pass only when their effect is there."""
    ssldir, cadir = tmp_path / "ssl", tmp_path / "ca"
    facts = facts_for(PUPPET6, ssldir=str(ssldir), cadir=str(cadir), client_datadir=str(tmp_path / "cd"))
    plan = build_plan(facts, ALT)

    def ok(command: str) -> bool:
        return subprocess.run(["sh", "-c", command], capture_output=True).returncode == 0

    paths = [Path(p) for p in cert_files(facts)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    cert = Path(f"{ssldir}/certs/{CERTNAME}.pem")

    def make_cert(serial: str) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={CERTNAME}",
                        "-set_serial", f"0x{serial}", "-keyout", str(tmp_path / "k.pem"), "-out", str(cert),
                        "-days", "2"], check=True, capture_output=True)

    make_cert("0A")
    assert not ok(step(plan, "delete-leftovers").check)
    assert ok(step(plan, "generate").check)
    make_cert(facts.cert.serial)  # the old cert (put back by hand) is not this run's new one
    assert not ok(step(plan, "generate").check)
    assert ok(step(plan, "delete-leftovers").command)
    assert ok(step(plan, "delete-leftovers").check)
    assert not ok(step(plan, "generate").check)


def _write_crl(path: Path, revoked: list[int]) -> None:
    """A real CRL (as the CA writes it), revoking `revoked`, signed by a throwaway CA key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA: test")]))
               .last_update(now).next_update(now + datetime.timedelta(days=1)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(key, hashes.SHA256())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("revoked, passes", [([], False), ([7, 10], False), ([7, 2], True), ([0x12], False)])
def test_puppet6_clean_check_passes_only_when_the_old_serial_is_in_the_crl(tmp_path, revoked, passes):
    cadir = tmp_path / "ca"
    facts = facts_for(PUPPET6, cadir=str(cadir), cert=dataclasses.replace(RECORDED.cert, serial="2"))
    _write_crl(cadir / "ca_crl.pem", revoked)
    check = step(build_plan(facts, ALT), "clean").check
    assert (subprocess.run(["sh", "-c", check], capture_output=True).returncode == 0) is passes


# --- dropped SANs and expected SANs ------------------------------------------------------------

def test_same_alt_names_drop_nothing():
    plan = build_plan(RECORDED, ALT)
    assert plan.dropped_sans == ()
    assert plan.expected_sans == RECORDED.cert.sans


def test_fewer_alt_names_are_reported_as_dropped():
    assert build_plan(RECORDED, ("puppet",)).dropped_sans == ("DNS:puppet.pe-remote.test",)
    assert build_plan(RECORDED, ()).dropped_sans == ("DNS:puppet", "DNS:puppet.pe-remote.test")


def test_added_alt_names_drop_nothing():
    plan = build_plan(RECORDED, (*ALT, "10.0.0.1"))
    assert plan.dropped_sans == ()
    assert "IP:10.0.0.1" in plan.expected_sans


def test_no_current_cert_drops_nothing():
    assert build_plan(dataclasses.replace(RECORDED, cert=None), ()).dropped_sans == ()


# --- quoting holds even if validation were bypassed ---------------------------------------------

HOSTILE_CERTNAME = "x; touch PWNED #"
HOSTILE_ALT = ("a b", "$(touch PWNED)", "`touch PWNED`")


def test_fill_quotes_a_value_with_a_space():
    facts = dataclasses.replace(RECORDED, certname="my master", puppet="/opt/my puppet/bin/puppet")
    command = fill(PE37.generate, facts, ("a b", "c"))
    assert shlex.split(command) == ["/opt/my puppet/bin/puppet", "cert", "generate", "my master",
                                    "--dns_alt_names=a b,c"]


@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_fill_keeps_hostile_values_as_single_words(flavor):
    facts = dataclasses.replace(RECORDED, certname=HOSTILE_CERTNAME, flavor=flavor)
    for template in (flavor.clean, flavor.generate):
        argv = shlex.split(fill(template, facts, HOSTILE_ALT))
        assert HOSTILE_CERTNAME in argv
        assert "touch" not in argv and "PWNED" not in argv


def _argv_recorder(folder: Path) -> str:
    """A stand-in binary that writes its arguments NUL-separated to folder/argv."""
    script = folder / "bin" / "record argv"  # a space in the path, too
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nfor a; do printf '%s\\0' \"$a\"; done > {shlex.quote(str(folder / 'argv'))}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize("flavor", list(FLAVORS.values()), ids=list(FLAVORS))
def test_hostile_values_cannot_inject_in_a_real_shell(tmp_path, flavor):
    binary = _argv_recorder(tmp_path)
    facts = dataclasses.replace(facts_for(flavor), certname=HOSTILE_CERTNAME, puppet=binary, puppetserver=binary,
                                ssldir=str(tmp_path / "ssl dir"), cadir=str(tmp_path / "ca;dir"),
                                client_datadir=str(tmp_path / "$(touch PWNED)"))
    plan = build_plan(facts, HOSTILE_ALT)
    generate = step(plan, "generate").command
    subprocess.run(["sh", "-c", generate], cwd=tmp_path, check=True)
    argv = (tmp_path / "argv").read_bytes().split(b"\0")[:-1]
    assert HOSTILE_CERTNAME.encode() in argv
    assert not (tmp_path / "PWNED").exists()
    # Every other step's command and check too: run them all; none may create the marker file.
    for s in plan.steps:
        if s.server_ready:
            continue
        for command in (s.command, s.check):
            # Every path is under tmp_path and the binaries are the recorder: safe to run for real.
            subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True)
            assert not (tmp_path / "PWNED").exists(), command


# --- alt names that are IP addresses ------------------------------------------------------------

def _puppetserver_ca_sans(certname: str, subject_alt_names: str) -> frozenset[str]:
    """The SANs `puppetserver ca generate --subject-alt-names V` writes (puppetserver-ca-cli munge_alt_names:
    a name without an `IP:`/`DNS:` prefix becomes `DNS:name`), as commands/certs.py reads them."""
    names = [n.strip() for n in f"{subject_alt_names},DNS:{certname}".split(",") if n.strip()]
    munged = {n if n.startswith(("IP:", "DNS:")) else f"DNS:{n}" for n in names}
    return frozenset(f"IP:{ipaddress.ip_address(n[3:])}" if n.startswith("IP:") else n for n in munged)


def _puppet_cert_sans(certname: str, dns_alt_names: str) -> frozenset[str]:
    """The SANs `puppet cert generate --dns_alt_names=V` requests (Puppet 3-5 CertificateRequest#generate:
    every name, the certname included, becomes `DNS:name`)."""
    return frozenset(f"DNS:{n.strip()}" for n in [*dns_alt_names.split(","), certname] if n.strip())


def test_models_agree_with_plan_for_host_names():
    # The two models above reproduce the plan's promise for plain host names: they are fair judges.
    plan6 = build_plan(RECORDED, ALT)
    argv = shlex.split(step(plan6, "generate").command)
    assert _puppetserver_ca_sans(CERTNAME, argv[argv.index("--subject-alt-names") + 1]) == plan6.expected_sans
    plan37 = build_plan(facts_for(PE37), ALT)
    value = shlex.split(step(plan37, "generate").command)[-1].split("=", 1)[1]
    assert _puppet_cert_sans(CERTNAME, value) == plan37.expected_sans


@pytest.mark.parametrize("flavor", [PUPPET6, PE2019], ids=["puppet6", "pe2019"])
def test_ip_alt_name_reaches_puppetserver_ca_as_an_ip(flavor):
    plan = build_plan(facts_for(flavor), ("puppet", "10.0.0.1"))
    argv = shlex.split(step(plan, "generate").command)
    produced = _puppetserver_ca_sans(CERTNAME, argv[argv.index("--subject-alt-names") + 1])
    assert produced == plan.expected_sans


@pytest.mark.parametrize("flavor", [PE37, PE2016], ids=["pe37", "pe2016"])
def test_ip_alt_name_with_puppet_cert_is_refused_or_expected_as_dns(flavor):
    from pe_remote.errors import InputError
    try:
        plan = build_plan(facts_for(flavor), ("puppet", "10.0.0.1"))
    except InputError:
        return
    value = shlex.split(step(plan, "generate").command)[-1].split("=", 1)[1]
    assert _puppet_cert_sans(CERTNAME, value) == plan.expected_sans


def test_the_shown_plan_says_which_steps_start_alongside_others():
    from pe_remote.render import render_plan
    shown = render_plan(build_plan(facts_for(PE37), ALT), "tar -czf - ...", "master")
    lines = [line.strip() for line in shown.splitlines() if line.strip()[:2].strip().rstrip(".").isdigit()]
    assert "2. Stop pe-puppetserver (alongside 1)" in lines
    assert "3. Stop pe-activemq (after 1, 2)" in lines
    assert "5. Clean the cert of master.pe-remote.test (after 1, 2)" in lines
    assert "10. Start pe-activemq (after 9, 4)" in lines
    assert "12. Start pe-puppet (after 9)" in lines
    assert "6. Remove the cached catalog" in lines  # follows the step before it: no mark
