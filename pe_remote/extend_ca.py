"""`extend-ca`: the CA certificate renewed in place before it ends, with the same key, serial, subject
and extensions (as Puppet's ca_extend does), so every cert it signed stays valid and agents that still
hold the old CA cert keep working.

Every cert of the CA bundle is renewed (Puppet 6+ keeps an intermediate CA signed by a root CA whose key
sits beside it; older generations one self-signed CA), each signed by its issuer's key, on the master.
The bundle goes where the generation keeps it (the CA folder and the ssldir's certs/ca.pem), the CA's
CRL is re-signed (`refresh-crl`'s step), and the server reads them again (reload or restart). Then the
proof, from the bytes: same keys, serials, subjects and extensions, the new end dates, each cert
verifying against its issuer, the master's cert against the new CA cert, the CRL, the CA endpoint
serving the new cert, and an agent run on the master that trusts only the OLD bundle.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from pe_remote.agents import AgentPush, push_ca_bundle, render_pushes
from pe_remote.backup import Backup
from pe_remote.commands import ca as commands
from pe_remote.commands import crl as crl_commands
from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import CaCertInfo, issued_by, read_bundle, sha256_hex
from pe_remote.commands.discovery import REMOTE_STATE_DIR
from pe_remote.commands.steps import same_files
from pe_remote.crl import DEFAULT_DAYS as CRL_DEFAULT_DAYS, STATE_FILES as CRL_STATE_FILES, STATE_FLAGS as CRL_STATE_FLAGS
from pe_remote.crl import (CrlState, crl_plan_lines, crl_state, crl_steps, read_raw as read_crl_raw, read_state,
                           refresh_problems, refuse_unsigned_crl, server_pickup_steps)
from pe_remote.discovery import MasterFacts, discover
from pe_remote.errors import AgentsNotUpdated, InputError, Refused
from pe_remote.inventory import Target
from pe_remote.events import Events, Listener
from pe_remote.events import run_job
from pe_remote.inplace import (change_and_prove, decode_record, encode_record, recorded_number, refuse_unless_ca,
                               same_number_as_run, show_plan)
from pe_remote.journal import Journal
from pe_remote.runs import Proof, Unfinished, unfinished
from pe_remote.names import printable
from pe_remote.plan import Plan, Step
from pe_remote.report import RunReport

DEFAULT_YEARS = 15  # as ca_extend, and as Puppet's own CA lifetime
MAX_YEARS = 50
CRL_DAYS = CRL_DEFAULT_DAYS  # the CA's CRL, re-signed with its new cert, lives as refresh-crl makes it


@dataclass(frozen=True)
class CaState:
    bundle: bytes  # the CA folder's ca_crt.pem
    certs: tuple[CaCertInfo, ...]
    host_bundle: bytes  # the ssldir's certs/ca.pem
    hostcert: bytes
    root_key: bool  # a root CA key beside the CA's (Puppet 6+)
    served: tuple[CaCertInfo, ...]  # what the CA endpoint on 8140 hands agents


def bundle_paths(facts: MasterFacts) -> tuple[str, str, list[str]]:
    """(the CA bundle, the host's copy, the CA keys that may sign)."""
    return (f"{facts.cadir}/ca_crt.pem", f"{facts.ssldir}/certs/ca.pem",
            [f"{facts.cadir}/ca_key.pem", f"{facts.cadir}/root_key.pem"])


# The files a CaState is read from, as the job records them before its first change.
STATE_FILES = ("ca_bundle", "host_bundle", "hostcert", "served_ca")
STATE_FLAGS = ("root_key",)


def read_raw(remote, facts: MasterFacts) -> dict[str, bytes | bool]:
    bundle, host_bundle, keys = bundle_paths(facts)
    found = protocol.split(remote.run(commands.ca_files(bundle, host_bundle, facts.hostcert, facts.hostprivkey,
                                                        keys[1]), check=False).stdout)
    raw: dict[str, bytes | bool] = {name: protocol.decoded(found.get(name, [])) for name in STATE_FILES}
    raw["root_key"] = any(line.strip() == "present" for line in found.get("root_key", []))
    return raw


def ca_state(raw: dict) -> CaState:
    return CaState(raw["ca_bundle"], tuple(read_bundle(raw["ca_bundle"])), raw["host_bundle"], raw["hostcert"],
                   bool(raw["root_key"]), tuple(read_bundle(raw["served_ca"])))


def read_ca_state(remote, facts: MasterFacts) -> CaState:
    return ca_state(read_raw(remote, facts))


def build_extend_plan(facts: MasterFacts, ca: CaState, crl: CrlState, years: int) -> Plan:
    bundle, host_bundle, keys = bundle_paths(facts)
    steps = [
        Step("extend-ca", f"Renew the CA cert{'s' if len(ca.certs) > 1 else ''} ({years} years, same keys)",
             commands.extend(bundle, keys, years), check=crl_commands.differs_from(bundle, sha256_hex(ca.bundle))),
        Step("copy-host-ca", f"Copy the CA bundle to {host_bundle}", crl_commands.copy_over(bundle, host_bundle),
             check=same_files([(bundle, host_bundle)])),
        *crl_steps(facts, crl, CRL_DAYS),
    ]
    return Plan(facts, (), tuple(steps + server_pickup_steps(facts, crl.can_reload, "the CA cert and CRL")),
                (), (), ())


def extend_problems(before: CaState, after: CaState, years: int, now: datetime, *, served: bool) -> list[str]:
    """Every way the renewed CA differs from what the job promised (empty: all good)."""
    problems = []
    if len(after.certs) != len(before.certs):
        return [f"the CA bundle holds {len(after.certs)} certs, not {len(before.certs)}"]
    for old, new in zip(before.certs, after.certs):
        for field, what in (("subject", "subject"), ("serial", "serial"), ("pubkey_sha256", "key"),
                            ("extensions", "extensions")):
            if getattr(old, field) != getattr(new, field):
                problems.append(f"the {what} of {old.subject} changed")
        if new.not_after < now + timedelta(days=365 * years - 2):
            problems.append(f"{new.subject} ends {new.not_after:%Y-%m-%d}, not in {years} years")
        if not new.issued_by_bundle:
            problems.append(f"{new.subject} does not verify against its issuer's key")
    if after.host_bundle != after.bundle:
        problems.append("the host's CA bundle is not the CA's")
    if not issued_by(after.hostcert, after.bundle):
        problems.append("the master's cert does not verify against the new CA cert")
    if served and (not after.served or after.served[0].sha256 != after.certs[0].sha256):
        problems.append("the CA endpoint on 8140 does not serve the new CA cert")
    return problems


@dataclass
class ExtendResult:
    facts: MasterFacts
    plan: Plan
    outcome: str  # ok, dry-run
    before: CaState
    after: CaState | None = None
    backup: Backup | None = None
    agent_exit: int | None = None
    agents: tuple[AgentPush, ...] = ()  # one row per agent the new bundle was pushed to


def extend_ca(remote, console, *, years: int | None = None, dry_run: bool = False, backup_dir: str = "backups",
              flavor: str | None = None, report: RunReport | None = None, listeners: tuple[Listener, ...] = (),
              unfinished_run: Unfinished = Unfinished(), agents: AgentsToPush | None = None) -> ExtendResult:
    """The `extend-ca` job (see the module docstring); raises RolledBack (7) or Incomplete (8) on failure.
    With `agents`, the new bundle is then pushed to them (AgentsNotUpdated, 10, if it did not reach all).
    `years` None: DEFAULT_YEARS, or what an unfinished run being resumed recorded (another value is refused)."""
    if years is not None and (not isinstance(years, int) or isinstance(years, bool) or not 1 <= years <= MAX_YEARS):
        raise InputError(f"--years {years!r}: give whole years from 1 to {MAX_YEARS}")
    return run_job(remote, console, "extend-ca",
                   lambda events: _extend(remote, console, events, years, dry_run, backup_dir, flavor, unfinished_run,
                                          agents or AgentsToPush()),
                   dry_run=dry_run, report=report, listeners=listeners)


class ExtendJob:
    """extend-ca's side of a journalled run (runs.Job)."""

    task = "extend-ca"

    def __init__(self, remote) -> None:
        self.remote = remote
        self.after: CaState | None = None
        self.agent_exit: int | None = None

    @staticmethod
    def record(years: int, raw: dict, crl_raw: dict) -> dict:
        return {"years": years, "before": encode_record(raw), "crl_before": encode_record(crl_raw)}

    @staticmethod
    def recorded(journal: Journal) -> tuple[int, CaState, CrlState]:
        return (recorded_number(journal, "years", 1, MAX_YEARS),
                ca_state(decode_record(journal, journal.job.get("before"), STATE_FILES, STATE_FLAGS)),
                crl_state(decode_record(journal, journal.job.get("crl_before"), CRL_STATE_FILES, CRL_STATE_FLAGS)))

    def plan(self, journal: Journal) -> Plan:
        years, before, crl_before = self.recorded(journal)
        return build_extend_plan(journal.facts, before, crl_before, years)

    def proof(self, journal: Journal, plan: Plan) -> Proof:
        years, before, crl_before = self.recorded(journal)
        facts = journal.facts
        server_runs = facts.server_service in facts.running_services

        def check() -> list[str]:
            now = datetime.now(timezone.utc)
            self.after = read_ca_state(self.remote, facts)
            problems = extend_problems(before, self.after, years, now, served=server_runs)
            problems += refresh_problems(crl_before, read_state(self.remote, facts), CRL_DAYS, now, served=server_runs)
            if server_runs:
                self.agent_exit, said = _agent_with_old_ca(self.remote, facts, before.bundle)
                if self.agent_exit not in (0, 2):
                    problems.append(f"an agent run on the master trusting the OLD CA cert failed (exit "
                                    f"{self.agent_exit}: {printable(said)[:300]})")
            return problems

        def not_back(outcome) -> str | None:
            return None if read_ca_state(self.remote, facts).bundle == before.bundle else "the CA cert is not the old one"

        return Proof("CA cert", "the CA cert is not right", check, not_back,
                     "The old CA cert is in place again and checked")


def _extend(remote, console, events: Events, years: int | None, dry_run: bool, backup_dir: str,
            flavor: str | None, options: Unfinished, agents: "AgentsToPush") -> ExtendResult:
    label = remote.target.label
    facts = discover(remote, flavor_override=flavor)
    job = ExtendJob(remote)
    continued = unfinished(remote, facts, job, console, events, options, dry_run=dry_run,
                           vet_resume=same_number_as_run("--years", "years", years, 1, MAX_YEARS))
    if continued:
        _, before, _ = job.recorded(continued.journal)
        result = ExtendResult(continued.journal.facts, continued.plan, continued.outcome, before, job.after,
                              agent_exit=job.agent_exit)
        if continued.outcome == "ok":
            _said_renewed(console, label, continued.journal.facts, before, job.after, continued.journal.local_backup)
            result.agents = _push(console, label, before, job.after, agents, events)
        return result
    refuse_unless_ca(facts, label, "extend-ca")
    years = DEFAULT_YEARS if years is None else years
    raw, crl_raw = read_raw(remote, facts), read_crl_raw(remote, facts)
    before, crl_before = ca_state(raw), crl_state(crl_raw)
    _refuse_unusable(facts, before)
    refuse_unsigned_crl(facts, crl_before)
    plan = build_extend_plan(facts, before, crl_before, years)
    ends = datetime.now(timezone.utc) + timedelta(days=365 * years)
    lines = [f"Plan for {label}: renew the CA cert ({facts.flavor.title})",
             *(f"  {c.subject} (serial {c.serial}): ends {c.not_after:%Y-%m-%d}, after: {ends:%Y-%m-%d}; same key, "
               "subject and extensions" for c in before.certs),
             *crl_plan_lines(crl_before, CRL_DAYS),
             *([f"  Then the new bundle to the agents' certs/ca.pem (old one kept aside): "
                f"{', '.join(t.label for t in agents.targets)}"] if agents.targets else [])]
    if show_plan(console, events, facts, plan, lines, dry_run=dry_run):
        return ExtendResult(facts, plan, "dry-run", before)
    console.confirm(f"Renew the CA cert of {label} for {years} years (same key)?")
    backup = change_and_prove(remote, facts, plan, job, job.record(years, raw, crl_raw), console, events,
                              backup_dir=backup_dir)
    _said_renewed(console, label, facts, before, job.after, str(backup.local_path))
    result = ExtendResult(facts, plan, "ok", before, job.after, backup, job.agent_exit)
    result.agents = _push(console, label, before, job.after, agents, events)
    return result


@dataclass(frozen=True)
class AgentsToPush:
    """`--agents`: where the new CA bundle goes once the master is proven (each agent's own connection)."""

    targets: tuple[Target, ...] = ()
    accept_new_host_key: bool = False
    connect: Callable | None = None  # default: pe_remote.connection.connect


def _push(console, label: str, before: CaState, after: CaState, agents: AgentsToPush,
          events: Events) -> tuple[AgentPush, ...]:
    """The new bundle to the agents named; AgentsNotUpdated (10) unless every one has it now."""
    if not agents.targets:
        return ()
    rows = tuple(push_ca_bundle(agents.targets, after.bundle, console, connect=agents.connect,
                                accept_new_host_key=agents.accept_new_host_key))
    events.emit("agents-pushed", rows=rows)
    console.notice(render_pushes(list(rows)))
    failed = [row for row in rows if not row.ok]
    if failed:
        first_end = min(c.not_after for c in before.certs)
        raise AgentsNotUpdated(f"the CA cert of {label} is renewed, but {len(failed)} of {len(rows)} agents did not "
                               f"get the new bundle (first: {failed[0].host}: {failed[0].error}); their old one works "
                               f"until {first_end:%Y-%m-%d}: push again with --agents, or replace the file by hand")
    return rows


def _said_renewed(console, label: str, facts: MasterFacts, before: CaState, after: CaState, backup: str) -> None:
    console.notice(f"Renewed the CA cert on {label}: "
                   + "; ".join(f"{c.subject} now ends {c.not_after:%Y-%m-%d}" for c in after.certs)
                   + f"; same keys and serials; backup {backup}")
    console.notice(agent_guidance(facts, before))


def _refuse_unusable(facts: MasterFacts, ca: CaState) -> None:
    if not ca.certs or not all(c.issued_by_bundle for c in ca.certs):
        raise Refused(f"the CA bundle {bundle_paths(facts)[0]} is missing, unreadable or holds a cert whose issuer "
                      "is not in it: refusing to renew it; nothing was changed")
    if len(ca.certs) > 1 and not ca.root_key:
        raise Refused(f"the CA bundle {bundle_paths(facts)[0]} holds a chain but no root CA key is beside the CA's "
                      f"({bundle_paths(facts)[2][1]}): the intermediate cannot be renewed here; nothing was changed")


def _agent_with_old_ca(remote, facts: MasterFacts, old_bundle: bytes) -> tuple[int, str]:
    """(exit status, its last line of output) of an agent run trusting only the old CA bundle."""
    output = remote.run(commands.agent_with_old_ca(facts.puppet, facts.flavor.agent_lock_flags,
                                                   base64.b64encode(old_bundle).decode(), REMOTE_STATE_DIR),
                        check=False, timeout=600).stdout
    found = protocol.split(output)
    status = protocol.number(found.get("agent", []))
    said = [line.strip() for line in protocol.decoded(found.get("agent_output", [])).decode(errors="replace")
            .splitlines() if line.strip()]
    return (-1 if status is None else status), (said[-1] if said else "")


def agent_guidance(facts: MasterFacts, before: CaState) -> str:
    """How agents get the new CA cert (they keep working with the old one until it ends)."""
    first_end = min(c.not_after for c in before.certs)
    bundle = bundle_paths(facts)[1]
    return (f"Agents: their cached CA cert (<ssldir>/certs/ca.pem on each agent) still works until "
            f"{first_end:%Y-%m-%d} (same keys); replace it with this master's {bundle} before then. Puppet 8 "
            "agents fetch the new one themselves (ca_refresh_interval, daily); older agents need the file "
            "replaced (copy it, or delete it: the agent downloads the CA cert again on its next run).")
