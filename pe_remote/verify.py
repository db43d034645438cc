"""Verification after a regen: the cert on disk and the cert served are the new ones.

One remote command reads the new cert, its key, the cert served on 8140 and the
state of every service; `check_regen` compares them with what the plan promised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import CertInfo
from pe_remote.commands.facts import (cert_with_key, crl_file, freeze_left, read_cert_with_key, read_crl_serials,
                                      read_freeze_left, read_inactive, read_served_cert, served_cert, service_states)
from pe_remote.commands.steps import CA_FREEZE_STATE
from pe_remote.commands.run import exit_status_of
from pe_remote.errors import VerificationFailed
from pe_remote.expiry import DEFAULT_WARN_DAYS, Dated, dated_files_command, expiry_problems, read_dates
from pe_remote.names import san_entries
from pe_remote.plan import Plan


@dataclass(frozen=True)
class Verification:
    cert: CertInfo
    served_sha256: str
    key_matches: bool
    inactive_services: tuple[str, ...]
    revoked_serials: frozenset[str] = frozenset()
    agent_exit: int | None = None  # None: no agent run asked for
    freeze_left: bool = False  # a freeze of the CA files was cut off before its thaw (they are root's)


FREEZE_LEFT = (f"a regen's freeze of the CA files was cut off: they belong to root, so the CA cannot sign or revoke "
               f"(their owners are saved in {CA_FREEZE_STATE}); `regen` on it gives them back first, as it resumes the "
               "cut-off run (or closes it with --abandon), or, with no run left, before its backup")


def verification_script(facts, services: list[str], *, agent: bool = False) -> str:
    """The master's cert and key, the cert served on 8140, the services, the CA's CRL, and with
    `agent` the exit status of an agent run (--noop) on the master against itself."""
    parts = [cert_with_key("cert", facts.hostcert, facts.hostprivkey), served_cert("served", facts.certname),
             service_states("services", facts.init_system, services), crl_file("crl", f"{facts.cadir}/ca_crl.pem"),
             freeze_left("freeze", CA_FREEZE_STATE)]
    if agent:
        parts.append(exit_status_of("agent", [facts.puppet, "agent", "-t", "--noop", *facts.flavor.agent_lock_flags]))
    return "\n".join(parts) + "\n"


def read_verification(remote, facts, services: list[str], *, agent: bool = False) -> Verification:
    sections = protocol.split(remote.run(verification_script(facts, services, agent=agent), check=False).stdout)
    cert, key_matches = read_cert_with_key(sections, "cert")
    if cert is None:  # a generate cut off can leave no cert AND a freeze: both are named
        left = read_freeze_left(sections, "freeze")
        raise VerificationFailed(f"no readable cert at {facts.hostcert}" + (f"; {FREEZE_LEFT}" if left else ""))
    served = read_served_cert(sections, "served")
    agent_exit = None
    if agent:
        status = protocol.number(sections.get("agent", []))
        agent_exit = -1 if status is None else status
    return Verification(cert, served.sha256 if served else "", key_matches, read_inactive(sections, "services"),
                        read_crl_serials(sections, "crl"), agent_exit, read_freeze_left(sections, "freeze"))


def _serial_value(serial: str) -> int:
    try:
        return int(serial, 16)
    except ValueError:
        return -1


def served_problems(result: Verification, expected: str) -> list[str]:
    """What is wrong with what port 8140 presents, compared with the cert read from disk."""
    if not result.served_sha256:
        return ["nothing answers TLS on port 8140"]
    if result.served_sha256 != result.cert.sha256:
        return [f"port 8140 serves {result.served_sha256[:23]}..., not {expected} {result.cert.sha256[:23]}..."]
    return []


def check_regen(plan: Plan, result: Verification) -> list[str]:
    """Every way the result differs from what the plan promised (empty: all good)."""
    old = plan.facts.cert
    problems = []
    if old and result.cert.serial == old.serial:
        problems.append(f"serial unchanged ({old.serial})")
    elif old and _serial_value(result.cert.serial) <= _serial_value(old.serial):
        # The CA's counter only goes up: a lower serial means it was reset or damaged, and the
        # new cert may share its serial with another (revoking one would revoke both).
        problems.append(f"the new serial {result.cert.serial} is not above the old {old.serial}: the CA's serial "
                        "counter was reset or damaged")
    if old and old.serial not in result.revoked_serials:
        problems.append(f"the old serial {old.serial} is not in the CA's CRL")
    if result.agent_exit not in (None, 0, 2):
        problems.append(f"an agent run on the master against itself failed (exit {result.agent_exit})")
    if old and result.cert.issuer != old.issuer:
        problems.append(f"issuer changed from {old.issuer!r} to {result.cert.issuer!r}")
    if result.cert.sans != plan.expected_sans:
        problems.append(f"SANs are {sorted(result.cert.sans)}, expected {sorted(plan.expected_sans)}")
    if not result.key_matches:
        problems.append("the private key does not match the new cert")
    if result.inactive_services:
        problems.append(f"not running: {', '.join(result.inactive_services)}")
    if result.freeze_left:
        problems.append(f"the CA files still belong to root (their owners are saved in {CA_FREEZE_STATE}): the CA "
                        "could not sign or revoke")
    server = plan.facts.server_service
    if server not in plan.skipped_services and server not in plan.stopped_services:
        problems += served_problems(result, "the new cert")
    return problems


def check_master(facts, result: Verification, alt_names: tuple[str, ...], *, exact: bool = True) -> list[str]:
    """`verify`: every way the master's current cert and services are not right (empty: healthy).
    End dates (the master cert's among them) are expiry.py's: verify_master adds them."""
    problems = []
    cert = result.cert
    if facts.ca_subject and cert.issuer != facts.ca_subject:
        problems.append(f"issuer is {cert.issuer!r}, not the CA {facts.ca_subject!r}")
    wanted = san_entries(facts.certname, alt_names)
    # Without names given, the configured ones must be there; more is fine (Puppet 6+ masters
    # usually configure none: their cert is the record of the names agents use).
    if cert.sans != wanted and (exact or not wanted <= cert.sans):
        missing, extra = sorted(wanted - cert.sans), sorted(cert.sans - wanted) if exact else []
        problems.append("SANs differ from the certname + alt names:"
                        + (f" missing {', '.join(missing)}" if missing else "")
                        + (f" unexpected {', '.join(extra)}" if extra else ""))
    if not result.key_matches:
        problems.append(f"the private key {facts.hostprivkey} does not match the cert")
    if result.inactive_services:
        problems.append(f"not running: {', '.join(result.inactive_services)}")
    if result.freeze_left:
        problems.append(FREEZE_LEFT)
    server = facts.service(facts.server_service)
    if server and server.exists:
        problems += served_problems(result, "the cert on disk")
    return problems


def verify_master(remote, facts, alt_names: tuple[str, ...] | None = None, *,
                  warn_days: int = DEFAULT_WARN_DAYS) -> tuple[Verification, list[str], list[Dated]]:
    """`verify`: the cert, the services, and every end date (master cert, CA certs, CRLs)."""
    services = [s.name for s in facts.services if s.exists and s.name in facts.flavor.services]
    result = read_verification(remote, facts, services)
    dates = read_dates(remote.run(dated_files_command(facts), check=False).stdout, facts)
    problems = check_master(facts, result, facts.dns_alt_names if alt_names is None else alt_names,
                            exact=alt_names is not None)
    return result, problems + expiry_problems(dates, datetime.now(timezone.utc), warn_days), dates


def write_verify_report(path: str, label: str, facts, result: Verification, problems: list[str],
                        dates: list[dict]) -> None:
    """`verify --report`: the findings as JSON (schema pe-remote-verify/1)."""
    import json

    data = {"schema": "pe-remote-verify/1", "host": label, "checked": datetime.now(timezone.utc).isoformat(),
            "flavor": facts.flavor.name, "certname": facts.certname,
            "cert": {"serial": result.cert.serial, "issuer": result.cert.issuer, "sans": sorted(result.cert.sans),
                     "sha256": result.cert.sha256},
            "dates": dates, "problems": problems, "ok": not problems}
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
