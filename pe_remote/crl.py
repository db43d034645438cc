"""`refresh-crl`: the CA's CRL re-signed with a fresh nextUpdate before it ends.

An expired CRL stops every agent of the site. Puppet re-signs its CRL only when it revokes a cert;
a quiet CA's CRL simply runs out (PE 3.x-era CRLs were issued for five years). This job re-signs the
signing CA's CRL in place with the CA's own key: the same entries, the CRL number + 1, nextUpdate
`days` from now; copies it to the host's CRL; and makes the server read it (a reload where its unit
can, else a restart). Backup first, plan shown, each step checked, the result proven from the CRL's
bytes, and any failure rolled back from the backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pe_remote.backup import Backup
from pe_remote.commands import crl as commands
from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import CrlInfo, read_crls, sha256_hex
from pe_remote.commands.steps import reload_service, same_files, server_ready_check, service_command
from pe_remote.discovery import MasterFacts, discover
from pe_remote.errors import InputError, Refused
from pe_remote.events import Events, Listener
from pe_remote.events import run_job
from pe_remote.inplace import (change_and_prove, decode_record, encode_record, recorded_number, refuse_unless_ca,
                               same_number_as_run, show_plan)
from pe_remote.journal import Journal
from pe_remote.runs import Proof, Unfinished, unfinished
from pe_remote.plan import Plan, Step
from pe_remote.report import RunReport

DEFAULT_DAYS = 5 * 365  # the lifetime Puppet gives its own CRLs
MAX_DAYS = 20 * 365


@dataclass(frozen=True)
class CrlPaths:
    ca_crl: str
    host_crl: str
    ca_cert: str
    ca_key: str
    root_key: str  # Puppet 6+: the root CA's key, which signs the root CA's CRL (the file's second)

    @classmethod
    def of(cls, facts: MasterFacts) -> "CrlPaths":
        return cls(f"{facts.cadir}/ca_crl.pem", f"{facts.ssldir}/crl.pem", f"{facts.cadir}/ca_crt.pem",
                   f"{facts.cadir}/ca_key.pem", f"{facts.cadir}/root_key.pem")


@dataclass(frozen=True)
class CrlState:
    """The CRLs as the master has them, read from their bytes."""

    ca_crl: tuple[CrlInfo, ...]
    host_crl: tuple[CrlInfo, ...]
    served: tuple[CrlInfo, ...]  # what the CA endpoint on 8140 hands agents (empty: nothing answered)
    ca_crl_sha256: str  # of the file as it is, for the step's check
    can_reload: bool
    root_key: bool = False  # the root CA's key is there: the root CA's CRL is re-signed too


# The files a CrlState is read from, as a job records them before its first change.
STATE_FILES = ("ca_crl", "host_crl", "served_crl", "ca_cert")
STATE_FLAGS = ("can_reload", "root_key")


def read_raw(remote, facts: MasterFacts) -> dict[str, bytes | bool]:
    """The CRLs' and the CA cert's bytes (and whether the server's unit can reload), as the master has them."""
    paths = CrlPaths.of(facts)
    output = remote.run(commands.crl_files(paths.ca_crl, paths.host_crl, paths.ca_cert, facts.server_service,
                                           facts.hostcert, facts.hostprivkey, paths.root_key), check=False).stdout
    found = protocol.split(output)
    raw: dict[str, bytes | bool] = {name: protocol.decoded(found.get(name, [])) for name in STATE_FILES}
    raw["can_reload"] = any(line.strip() == "CanReload=yes" for line in found.get("can_reload", []))
    raw["root_key"] = any(line.strip() == "present" for line in found.get("root_key", []))
    return raw


def crl_state(raw: dict) -> CrlState:
    ca_cert = raw["ca_cert"]
    return CrlState(tuple(read_crls(raw["ca_crl"], ca_cert)), tuple(read_crls(raw["host_crl"], ca_cert)),
                    tuple(read_crls(raw["served_crl"], ca_cert)), sha256_hex(raw["ca_crl"]),
                    bool(raw["can_reload"]), bool(raw.get("root_key", False)))


def read_state(remote, facts: MasterFacts) -> CrlState:
    return crl_state(read_raw(remote, facts))


def build_refresh_plan(facts: MasterFacts, state: CrlState, days: int) -> Plan:
    """The steps: re-sign, copy to the host CRL, make the server read it (reload or restart), wait for it."""
    steps = crl_steps(facts, state, days) + server_pickup_steps(facts, state.can_reload, "the CRL")
    return Plan(facts, (), tuple(steps), (), (), ())


def crl_steps(facts: MasterFacts, state: CrlState, days: int) -> list[Step]:
    """Re-sign the CA's CRL in place, then copy it to the host's CRL."""
    paths = CrlPaths.of(facts)
    return [
        Step("resign-crl", f"Re-sign the CA's CRL{'s' if renewed(state) > 1 else ''} (valid {days} days from now)",
             commands.resign(paths.ca_crl, [paths.ca_key, paths.root_key], paths.ca_cert, days),
             check=commands.differs_from(paths.ca_crl, state.ca_crl_sha256)),
        Step("copy-host-crl", f"Copy it to the host's CRL {paths.host_crl}",
             commands.copy_over(paths.ca_crl, paths.host_crl), check=same_files([(paths.ca_crl, paths.host_crl)])),
    ]


def server_pickup_steps(facts: MasterFacts, can_reload: bool, what: str) -> list[Step]:
    """Make a running server read `what` again: a reload where its unit can (seconds), else a restart;
    then wait until it answers on 8140. A server that was stopped is left stopped."""
    server = facts.server_service
    if server not in facts.running_services:
        return []
    if can_reload:
        steps = [Step(f"reload:{server}", f"Reload {server} (it reads {what} again)", reload_service(server))]
    else:
        steps = [Step(f"stop:{server}", f"Stop {server}", service_command(facts, server, "stopped")),
                 Step(f"start:{server}", f"Start {server}", service_command(facts, server, "running"))]
    return steps + [Step("wait-server", f"Wait for {server} to answer on 8140", server_ready_check(facts),
                         server_ready=True)]


def crl_is_back(before: CrlState, now: CrlState) -> bool:
    """After a rollback: the old CRL, byte for byte; or one the server re-signed ITSELF on its start
    (Puppet Server 8 renews a CRL near its end, dating every entry anew): same issuer and revoked
    serials, signed by the CA, a higher number."""
    if now.ca_crl_sha256 == before.ca_crl_sha256:
        return True
    if not now.ca_crl or not before.ca_crl:
        return False
    old, new = before.ca_crl[0], now.ca_crl[0]
    return (new.signed_by_ca and new.issuer == old.issuer and new.serials == old.serials
            and (new.number or 0) > (old.number or 0))


def renewed(state: CrlState) -> int:
    """How many CRLs of the CA's file the re-signing renews: the signing CA's, and the root CA's where
    its key is there (the rest, if any, is kept byte for byte)."""
    return len(state.ca_crl) if state.root_key else min(1, len(state.ca_crl))


def refresh_problems(before: CrlState, after: CrlState, days: int, now: datetime, *, served: bool) -> list[str]:
    """Every way the refreshed CRLs differ from what the job promised (empty: all good)."""
    if not after.ca_crl:
        return ["no readable CRL in the CA's folder"]
    if len(after.ca_crl) != len(before.ca_crl):
        return [f"the CA's CRL file holds {len(after.ca_crl)} CRLs, not {len(before.ca_crl)}"]
    problems = []
    count = renewed(before)
    for index, (old, new) in enumerate(zip(before.ca_crl, after.ca_crl)):
        which = "the CRL" if index == 0 else f"the CRL of {old.issuer}"
        if index >= count:
            if new.der_sha256 != old.der_sha256:
                problems.append(f"{which} changed (its issuer's key is not there to re-sign it)")
            continue
        if not new.signed_by_ca:
            problems.append(f"{which} does not verify against its issuer's cert")
        if new.issuer != old.issuer:
            problems.append(f"{which}'s issuer changed to {new.issuer!r}")
        if new.number != (old.number or 0) + 1:
            problems.append(f"{which}'s number is {new.number}, not {(old.number or 0) + 1}")
        if new.entries != old.entries:
            lost, gained = sorted(old.entries - new.entries), sorted(new.entries - old.entries)
            problems.append(f"{which}'s entries changed (lost {len(lost)}, gained {len(gained)})")
        if new.next_update is None or new.next_update < now + timedelta(days=days) - timedelta(hours=1):
            problems.append(f"{which}'s nextUpdate is {new.next_update}, not {days} days from now")
    if [c.der_sha256 for c in after.host_crl] != [c.der_sha256 for c in after.ca_crl]:
        problems.append("the host's CRL is not the CA's")
    if served and (not after.served or after.served[0].der_sha256 != after.ca_crl[0].der_sha256):
        problems.append("the CA endpoint on 8140 does not serve the new CRL")
    return problems


@dataclass
class RefreshResult:
    facts: MasterFacts
    plan: Plan
    outcome: str  # ok, dry-run
    before: CrlState
    after: CrlState | None = None
    backup: Backup | None = None


def refresh_crl(remote, console, *, days: int | None = None, dry_run: bool = False, backup_dir: str = "backups",
                flavor: str | None = None, report: RunReport | None = None,
                listeners: tuple[Listener, ...] = (), unfinished_run: Unfinished = Unfinished()) -> RefreshResult:
    """The `refresh-crl` job (see the module docstring); raises RolledBack (7) or Incomplete (8) on failure.
    `days` None: DEFAULT_DAYS, or what an unfinished run being resumed recorded (another value is refused)."""
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS):
        raise InputError(f"--days {days!r}: give whole days from 1 to {MAX_DAYS}")
    return run_job(remote, console, "refresh-crl",
                   lambda events: _refresh(remote, console, events, days, dry_run, backup_dir, flavor, unfinished_run),
                   dry_run=dry_run, report=report, listeners=listeners)


def crl_plan_lines(before: CrlState, days: int) -> list[str]:
    ends = datetime.now(timezone.utc) + timedelta(days=days)
    lines = []
    for index, crl in enumerate(before.ca_crl):
        kept = index >= renewed(before)
        lines += [f"  CRL of {crl.issuer} now: number {crl.number}, {len(crl.entries)} revoked certs, nextUpdate "
                  f"{_when(crl.next_update, '%Y-%m-%d %H:%M UTC')}",
                  "    after: kept as it is (its issuer's key is not on this master)" if kept else
                  f"    after: number {(crl.number or 0) + 1}, the same {len(crl.entries)} entries, nextUpdate "
                  f"{ends:%Y-%m-%d} ({days} days)"]
    return lines


def _when(moment: datetime | None, form: str) -> str:
    """A CRL's nextUpdate as shown; X.509 lets a CRL leave it out (Puppet's never do)."""
    return "none" if moment is None else moment.strftime(form)


def refuse_unsigned_crl(facts: MasterFacts, before: CrlState) -> None:
    if not before.ca_crl or not before.ca_crl[0].signed_by_ca:
        raise Refused(f"the CRL {CrlPaths.of(facts).ca_crl} is missing, unreadable or not signed by the CA cert "
                      f"{CrlPaths.of(facts).ca_cert}: refusing to re-sign it; nothing was changed")


class RefreshJob:
    """refresh-crl's side of a journalled run (runs.Job)."""

    task = "refresh-crl"

    def __init__(self, remote) -> None:
        self.remote = remote
        self.after: CrlState | None = None

    @staticmethod
    def record(days: int, raw: dict) -> dict:
        return {"days": days, "before": encode_record(raw)}

    @staticmethod
    def recorded(journal: Journal) -> tuple[int, CrlState]:
        return (recorded_number(journal, "days", 1, MAX_DAYS),
                crl_state(decode_record(journal, journal.job.get("before"), STATE_FILES, STATE_FLAGS)))

    def plan(self, journal: Journal) -> Plan:
        days, before = self.recorded(journal)
        return build_refresh_plan(journal.facts, before, days)

    def proof(self, journal: Journal, plan: Plan) -> Proof:
        days, before = self.recorded(journal)
        facts = journal.facts

        def check() -> list[str]:
            self.after = read_state(self.remote, facts)
            return refresh_problems(before, self.after, days, datetime.now(timezone.utc),
                                    served=facts.server_service in facts.running_services)

        def not_back(outcome) -> str | None:
            return None if crl_is_back(before, read_state(self.remote, facts)) else "the CRL is not the old one"

        return Proof("CRL", "the CRL is not right", check, not_back, "The old CRL is in place again and checked")


def _refresh(remote, console, events: Events, days: int | None, dry_run: bool, backup_dir: str,
             flavor: str | None, options: Unfinished) -> RefreshResult:
    label = remote.target.label
    facts = discover(remote, flavor_override=flavor)
    job = RefreshJob(remote)
    continued = unfinished(remote, facts, job, console, events, options, dry_run=dry_run,
                           vet_resume=same_number_as_run("--days", "days", days, 1, MAX_DAYS))
    if continued:
        _, before = job.recorded(continued.journal)
        if continued.outcome == "ok":
            _said_refreshed(console, label, before, job.after, continued.journal.local_backup)
        return RefreshResult(continued.journal.facts, continued.plan, continued.outcome, before, job.after)
    refuse_unless_ca(facts, label, "refresh-crl")
    days = DEFAULT_DAYS if days is None else days
    raw = read_raw(remote, facts)
    before = crl_state(raw)
    refuse_unsigned_crl(facts, before)
    plan = build_refresh_plan(facts, before, days)
    if show_plan(console, events, facts, plan, [f"Plan for {label}: re-sign the CA's CRL ({facts.flavor.title})",
                                                *crl_plan_lines(before, days)], dry_run=dry_run):
        return RefreshResult(facts, plan, "dry-run", before)
    console.confirm(f"Re-sign the CRL of {facts.certname}'s CA on {label}, valid {days} days?")
    backup = change_and_prove(remote, facts, plan, job, job.record(days, raw), console, events,
                              backup_dir=backup_dir)
    _said_refreshed(console, label, before, job.after, str(backup.local_path))
    return RefreshResult(facts, plan, "ok", before, job.after, backup)


def _said_refreshed(console, label: str, before: CrlState, after: CrlState, backup: str) -> None:
    current, new = before.ca_crl[0], after.ca_crl[0]
    console.notice(f"Refreshed the CRL on {label}: number {current.number} -> {new.number}, "
                   f"{len(new.entries)} entries kept, next update {new.next_update:%Y-%m-%d %H:%M} UTC "
                   f"(was {_when(current.next_update, '%Y-%m-%d')}); backup {backup}")
