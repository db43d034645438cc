"""The regen job: discover, plan, confirm, back up, run the steps, verify."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pe_remote.backup import REMOTE_BACKUP_DIR, Backup, backup_name, create_command, local_backup_dir, \
    prepare_local_dir, take_backup
from pe_remote.console import Console
from pe_remote.discovery import MasterFacts, discover
from pe_remote.errors import ConnectionFailed, Refused, StepFailed, VerificationFailed
from pe_remote.executor import Execution, execute
from pe_remote.plan import Plan, build_plan
from pe_remote.render import render_plan
from pe_remote.verify import Verification, check_regen, read_verification


@dataclass(frozen=True)
class RegenOptions:
    alt_names: tuple[str, ...] | None = None  # None: keep what the master says
    dry_run: bool = False
    backup_dir: str = "backups"
    flavor: str | None = None


@dataclass
class RegenResult:
    facts: MasterFacts
    plan: Plan
    outcome: str  # "ok" or "dry-run"
    backup: Backup | None = None
    execution: Execution | None = None
    verification: Verification | None = None
    commands_run: int = 0
    seconds: float = 0.0

    @property
    def old_serial(self) -> str | None:
        return self.facts.cert.serial if self.facts.cert else None

    @property
    def new_serial(self) -> str | None:
        return self.verification.cert.serial if self.verification else None


def preflight(plan: Plan) -> None:
    """Read-only checks that must pass before the first change."""
    facts = plan.facts
    if not facts.ca_key_present:
        raise Refused(f"{facts.cadir}/ca_key.pem is absent: this host is not the CA, so it cannot sign "
                      "its own new cert; run pe-remote against the CA master")
    if facts.cert is None:
        raise Refused(f"the master has no cert at {facts.hostcert}: nothing to regenerate")
    server = facts.service(facts.flavor.server_service)
    if server is None or not server.exists:
        raise Refused(f"service {facts.flavor.server_service} does not exist on this host: is it a "
                      f"{facts.flavor.title} master? (override the detection with --flavor)")


def regen(remote, options: RegenOptions, console: Console) -> RegenResult:
    started = time.monotonic()
    facts = discover(remote, flavor_override=options.flavor)
    alt_names = options.alt_names if options.alt_names is not None else facts.dns_alt_names
    plan = build_plan(facts, alt_names)
    name = backup_name(facts.certname)
    label = remote.target.label
    console.info(render_plan(plan, create_command(facts, f"{REMOTE_BACKUP_DIR}/{name}"), label))
    if options.dry_run:
        console.info("Dry run: nothing was changed on the master.")
        return RegenResult(facts, plan, "dry-run", commands_run=remote.commands_run,
                           seconds=time.monotonic() - started)
    preflight(plan)
    if plan.dropped_sans:
        console.warn(f"the new cert will NOT carry {', '.join(plan.dropped_sans)}, which the current cert has: "
                     "agents reaching the master by those names will fail")
        console.confirm(f"Drop {', '.join(plan.dropped_sans)} from {facts.certname}'s cert?")
    console.confirm(f"Regenerate the cert of {facts.certname} on {label} with alt names "
                    f"{', '.join(alt_names) or '(none)'}? Puppet services stop until it is done.")
    folder = local_backup_dir(options.backup_dir, label)
    prepare_local_dir(folder)
    console.info("Backing up the SSL directory ...")
    backup = take_backup(remote, facts, folder)
    console.info(f"Backup: {backup.local_path} (sha256 {backup.sha256}); on the master: {backup.remote.path}")
    try:
        execution = execute(remote, plan, console)
    except (StepFailed, ConnectionFailed) as exc:
        # The master may be half-way through: say where the backup is, with the "changed" exit code.
        title = exc.step_title if isinstance(exc, StepFailed) else "run the steps"
        reason = exc.reason if isinstance(exc, StepFailed) else str(exc)
        raise StepFailed(title, f"{reason}. The SSL backup is {backup.local_path} "
                         f"(on the master: {backup.remote.path}); see README 'Restoring a backup by hand'") from None
    verification = read_verification(remote, plan)
    problems = check_regen(plan, verification)
    if problems:
        raise VerificationFailed(f"the regen ran but the result is wrong: {'; '.join(problems)}. "
                                 f"The SSL backup is {backup.local_path} (on the master: {backup.remote.path})")
    result = RegenResult(facts, plan, "ok", backup, execution, verification, remote.commands_run,
                         time.monotonic() - started)
    downtime = f"{execution.downtime:.1f}s" if execution.downtime is not None else "n/a"
    console.info(f"Regenerated {facts.certname}: serial {result.old_serial} -> {result.new_serial}; "
                 f"downtime {downtime}; {result.commands_run} remote commands; backup {backup.local_path}")
    return result


def backup_only(remote, backup_dir: str, console: Console, flavor: str | None = None) -> Backup:
    """`backup` on its own: discover, then back up and pull; changes nothing else."""
    facts = discover(remote, flavor_override=flavor)
    folder = local_backup_dir(backup_dir, remote.target.label)
    prepare_local_dir(folder)
    backup = take_backup(remote, facts, folder)
    console.info(f"Backup of {facts.ssldir} from {remote.target.label}: {backup.local_path}")
    console.info(f"sha256 {backup.sha256} (matches the master's copy {backup.remote.path})")
    return backup
