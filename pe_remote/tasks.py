"""The tasks: `pe-remote TASK`, `fab -H root@master TASK` and `invoke TASK --host ALIAS` run these.

Thin layer: parse flags, call the library, turn its errors into exit codes (pe_remote.cli).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from invoke import Collection, task

from pe_remote.cli import (TARGET_HELP, alt_names_from, check_flavor, check_report_path, connected, exits_cleanly,
                           for_each_host, named_target, per_host_file, run_id_from, run_log_path, target_from,
                           targets_from, whole_number)
from pe_remote.commands.steps import SERVER_READY_TIMEOUT
from pe_remote.connection import check_login
from pe_remote.console import Console
from pe_remote.crl import DEFAULT_DAYS as DEFAULT_CRL_DAYS, MAX_DAYS as MAX_CRL_DAYS, refresh_crl as refresh
from pe_remote.discovery import discover as discover_master
from pe_remote.agents import agent_targets
from pe_remote.extend_ca import DEFAULT_YEARS as DEFAULT_CA_YEARS, MAX_YEARS as MAX_CA_YEARS, AgentsToPush, \
    extend_ca as extend
from pe_remote.errors import InputError, Mismatch, PeRemoteError
from pe_remote.expiry import DEFAULT_WARN_DAYS, dates_to_json, render_dates
from pe_remote.flavors import FLAVORS
from pe_remote.names import parse_alt_names, printable
from pe_remote.regen import RegenOptions, backup_only, regen as run_regen
from pe_remote.render import render_facts
from pe_remote.report import RunReport, utc_now
from pe_remote.restore import restore_backup
from pe_remote.runs import Unfinished
from pe_remote.verify import verify_master, write_verify_report

FLAVOR_HELP = f"skip detection and use this generation: {', '.join(FLAVORS)}"
BACKUP_DIR_HELP = "local folder for backups (default: the inventory's backup_dir, else ./backups)"


PARALLEL_HELP = "with several hosts, how many to work on at once (default 4)"


@task(auto_shortflags=False, help={**TARGET_HELP, "flavor": FLAVOR_HELP, "parallel": PARALLEL_HELP})
@exits_cleanly
def discover(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
             flavor=None, parallel=None):
    """Show what pe-remote finds on a master (read-only): certname, alt names, paths, services, cert."""
    check_flavor(flavor)
    targets = targets_from(c, host, inventory, key_file, known_hosts)
    found = for_each_host(targets, lambda remote: (remote.target.label, discover_master(remote, flavor_override=flavor)),
                          accept_new_host_key=accept_new_host_key, parallel=parallel, title="discover",
                          describe=lambda value: f"{value[1].flavor.name} {value[1].certname} serial "
                                                 f"{value[1].cert.serial if value[1].cert else '-'}")
    for label, facts in found:
        print(printable(render_facts(facts, label)))


@task(auto_shortflags=False, help={**TARGET_HELP, "backup_dir": BACKUP_DIR_HELP, "flavor": FLAVOR_HELP,
                                   "parallel": PARALLEL_HELP})
@exits_cleanly
def backup(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
           backup_dir=None, flavor=None, parallel=None):
    """Back up the master's SSL directory and pull the tarball back, verified (changes nothing else)."""
    check_flavor(flavor)
    targets = targets_from(c, host, inventory, key_file, known_hosts)
    console = Console()
    for_each_host(targets, lambda remote: backup_only(remote, backup_dir or remote.target.backup_dir, console,
                                                      flavor=flavor),
                  accept_new_host_key=accept_new_host_key, parallel=parallel, title="backup",
                  describe=lambda b: f"{b.local_path} sha256 {b.sha256[:16]}...")


@task(auto_shortflags=False, optional=["rollback"], help={
    **TARGET_HELP,
    "dns_alt_names": "comma-separated alt names for the new cert (default: the master's dns_alt_names "
                     "together with every alt name the current cert carries)",
    "drop_alt_names": "comma-separated alt names of the current cert to leave out of the new one; a name is "
                      "never dropped otherwise, --yes included",
    "yes": "do not ask before changing the master (for CI); the plan is printed on a terminal and always logged",
    "dry_run": "discover and print the exact remote commands in order, then run the real run's checks (a master "
               "it refuses fails the same way); change nothing",
    "backup_dir": BACKUP_DIR_HELP,
    "flavor": FLAVOR_HELP,
    "verbose": "print every remote command as it runs",
    "force": "proceed although the master looks like a monolithic PE install (PuppetDB/console on it)",
    "rollback": "an earlier run on this master did not finish: roll it back instead of resuming it; "
                "--rollback RUN_ID names it (needed for a run older than 24 hours)",
    "resume": "resume the unfinished run RUN_ID (needed for a run older than 24 hours; a recent one is "
              "resumed by default)",
    "abandon": "close the unfinished run RUN_ID's journal without touching anything else on the master",
    "server_timeout": "seconds a service start, and then the server's first answer on 8140, may take before "
                      "the run is rolled back (default 300; a big master with many JRubies may need more)",
    "report": "write a JSON report of the run to this file, whatever the outcome (schema: README, Report); "
              "with several hosts, one file each, named FILE-<host>.json",
    "log_file": "log of the run (default: ~/.local/state/pe-remote/logs/<UTC time>-<host>-regen.log); with "
                "several hosts, one file each, named FILE-<host>.log",
    "wave": "with several hosts, how many to regenerate at once (default 1; more needs --yes); nothing starts "
            "after a failure",
    "restart": "stop and start the services as the generation's documented procedure does, even where the "
               "server could read the new cert on a reload (Puppet Server 6+: the default there)",
})
@exits_cleanly
def regen(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
          dns_alt_names=None, drop_alt_names=None, yes=False, dry_run=False, backup_dir=None, flavor=None,
          verbose=False, force=False, rollback=False, resume=None, abandon=None, report=None, log_file=None,
          wave=None, server_timeout=None, restart=False):
    """Regenerate the master's SSL cert: back up, stop services, clean, generate, start, verify.

    Where the server can read a new cert on a reload (Puppet Server 6+ whose unit can reload), it keeps
    serving while the new cert is made and reloads (seconds of downtime); --restart forces the stop/start
    procedure. Prints the plan first and asks before the first change unless --yes. Any failure after the
    first change is rolled back from the run's backup. If an earlier run was cut off (lost
    connection), this resumes it, or rolls it back with --rollback; no second backup is taken.
    Several hosts (--host a,b) go one at a time (--wave N), stopping at the first failure.
    """
    targets = targets_from(c, host, inventory, key_file, known_hosts)
    several = len(targets) > 1
    written: list[str] = []
    # Every flag is checked before the first connection (exit 2, nothing touched).
    check_flavor(flavor)
    report = check_report_path(report)
    report_for = per_host_file(c, report, targets)
    log_for = per_host_file(c, os.path.expanduser(log_file), targets, ".log") if log_file else None
    drop = parse_alt_names(drop_alt_names, source="--drop-alt-names")
    run_id = run_id_from(rollback, resume, abandon)
    server_timeout = checked_server_timeout(server_timeout)
    wave = whole_number(wave, "--wave", "a whole number of hosts, 1 or more", low=1, default=1)
    if wave > 1 and several and not (yes or dry_run):
        # Masters regenerated at once run in threads: their questions would race for one terminal.
        raise InputError(f"--wave {wave} regenerates {min(wave, len(targets))} masters at once: add --yes (no "
                         "question can be answered for several masters at once), or leave --wave out")
    for target in targets:
        alt_names_from(dns_alt_names, target)

    def one_master(remote):
        target = remote.target
        options = RegenOptions(alt_names=alt_names_from(dns_alt_names, target),
                               alt_names_from_inventory=dns_alt_names is None and target.alt_names is not None,
                               drop_alt_names=drop,
                               dry_run=dry_run,
                               backup_dir=backup_dir or target.backup_dir, flavor=flavor, force=force,
                               rollback=bool(rollback), abandon=bool(abandon),
                               run_id=run_id, server_timeout=server_timeout, restart=restart)
        console = Console(verbose=verbose, assume_yes=yes,
                          log_path=log_for(target.label) if log_for else run_log_path(target, "regen"))
        if verbose:
            remote.on_command = console.command
        record = RunReport(target.label)
        try:
            return run_regen(remote, options, console, record)
        except Exception as exc:
            record.error = record.error or str(exc)
            record.exit_code = record.exit_code or getattr(exc, "exit_code", 1)
            raise
        finally:
            console.info(f"Log: {console.log_path}")
            console.close()
            if report:
                record.write(report_for(target.label))
                written.append(target.label)

    try:
        for_each_host(targets, one_master, accept_new_host_key=accept_new_host_key, changing=True, wave=wave,
                      title="regen", describe=lambda r: f"{r.outcome}: serial {r.old_serial} -> {r.new_serial}")
    except PeRemoteError as exc:
        if report and len(targets) == 1 and not written:  # refused before a connection: still leave a report
            RunReport(targets[0].label, ended=utc_now(), error=str(exc),
                      exit_code=exc.exit_code).write(report_for(targets[0].label))
        raise


def checked_server_timeout(value) -> int:
    return whole_number(value, "--server-timeout", "whole seconds from 10 to 3600", low=10, high=3600,
                        default=SERVER_READY_TIMEOUT)


@task(auto_shortflags=False, help={
    **TARGET_HELP,
    "tarball": "the local backup (.tar.gz taken by backup or regen) to put back",
    "sha256": "expected sha256 of the tarball (default: the .sha256 file written beside it)",
    "yes": "do not ask before stopping the services",
    "flavor": FLAVOR_HELP,
    "server_timeout": "seconds a service start, and then the server's first answer on 8140, may take "
                      "(default 300)",
})
@exits_cleanly
def restore(c, tarball, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
            sha256=None, yes=False, flavor=None, server_timeout=None):
    """Put a local SSL backup back on a master (checksum verified first; services stopped and started)."""
    check_flavor(flavor)
    server_timeout = checked_server_timeout(server_timeout)
    from pathlib import Path

    from pe_remote import restore as restoring

    target = target_from(c, host, inventory, key_file, known_hosts)
    # The local tarball and its sha256 are checked before any connection (exit 2, nothing touched).
    backup = restoring.check_local_backup(Path(tarball).expanduser(), sha256)
    with connected(target, accept_new_host_key) as remote:
        restore_backup(remote, backup, Console(assume_yes=yes), flavor=flavor, server_timeout=server_timeout)


@task(auto_shortflags=False, help={
    **TARGET_HELP,
    "dns_alt_names": "exactly the alt names the cert must carry besides the certname (default: it must carry "
                     "the master's dns_alt_names, and may carry more)",
    "flavor": FLAVOR_HELP,
    "parallel": PARALLEL_HELP,
    "warn_days": "name (and exit 9 for) any cert or CRL that ends in fewer days than this (default 90)",
    "report": "write the findings as JSON to this file (with several hosts, one file each: FILE-<host>.json)",
})
@exits_cleanly
def verify(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
           dns_alt_names=None, flavor=None, parallel=None, warn_days=None, report=None):
    """Check a master's cert, services and end dates (read-only); exit 9 naming every problem.

    Checks: issuer is the CA, SANs = certname + alt names, key matches the cert, port 8140 presents
    the cert on disk, every Puppet service of the master is running, and the end dates of the master
    cert, every CA cert and the CRLs (expired, or under --warn-days).
    """
    check_flavor(flavor)
    report = check_report_path(report)
    warn_days = whole_number(warn_days, "--warn-days", "a whole number of days, 0 or more", low=0, default=DEFAULT_WARN_DAYS)
    targets = targets_from(c, host, inventory, key_file, known_hosts)
    report_for = per_host_file(c, report, targets)
    for target in targets:  # checked before the first connection (exit 2)
        alt_names_from(dns_alt_names, target)

    def one_master(remote):
        label = remote.target.label
        facts = discover_master(remote, flavor_override=flavor)
        result, problems, dates = verify_master(remote, facts, alt_names_from(dns_alt_names, remote.target),
                                                warn_days=warn_days)
        now = datetime.now(timezone.utc)
        print(printable(f"{label}: {facts.certname} serial {result.cert.serial}, issuer {result.cert.issuer}, "
                        f"SANs {', '.join(sorted(result.cert.sans))}"))
        print(printable(render_dates(label, dates, now, warn_days)))
        if report:
            write_verify_report(report_for(label), label, facts, result, problems,
                                dates_to_json(dates, now, warn_days))
        if problems:
            raise Mismatch(f"{label} fails verification: " + "; ".join(problems))
        print(f"{label}: OK (issuer, SANs, key, 8140, services, end dates)")
        return "OK"

    for_each_host(targets, one_master, accept_new_host_key=accept_new_host_key, parallel=parallel, title="verify")


# The flags refresh-crl and extend-ca share.
CA_JOB_HELP = {
    **TARGET_HELP,
    "dry_run": "show the plan (every remote command) and change nothing",
    "backup_dir": BACKUP_DIR_HELP,
    "flavor": FLAVOR_HELP,
    "verbose": "print every remote command as it runs",
    "rollback": "an earlier run of this task on this master did not finish: roll it back instead of resuming "
                "it; --rollback RUN_ID names it (needed for a run older than 24 hours)",
    "resume": "resume the unfinished run RUN_ID (needed for a run older than 24 hours; a recent one is "
              "resumed by default)",
    "abandon": "close the unfinished run RUN_ID's journal without touching anything else on the master",
}


@task(name="refresh-crl", auto_shortflags=False, optional=["rollback"], help={
    **CA_JOB_HELP,
    "days": f"how long the re-signed CRL is valid, in days (default {DEFAULT_CRL_DAYS}, Puppet's own; "
            "a resumed run keeps its own)",
    "yes": "do not ask before changing the CRL",
})
@exits_cleanly
def refresh_crl(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
                days=None, yes=False, dry_run=False, backup_dir=None, flavor=None, verbose=False,
                rollback=False, resume=None, abandon=None):
    """Re-sign the CA's CRL with a fresh end date: same entries, CRL number + 1 (backup first).

    For a CRL near its nextUpdate (see `verify`): the signing CA's CRL is re-signed on the master with
    the CA key, copied to the host's CRL, and the server made to read it (a reload where its unit can,
    else a restart). The result is proven from the CRL's bytes; a failure puts the backup back. A run cut
    off (lost connection) is resumed by the next one, or rolled back with --rollback.
    """
    check_flavor(flavor)
    unfinished = unfinished_from(rollback, resume, abandon)
    # Not given: the default, or a resumed run's own (a resume asked with another is refused).
    days = None if days is None else whole_number(days, "--days", f"whole days from 1 to {MAX_CRL_DAYS}", low=1,
                                                  high=MAX_CRL_DAYS)
    _ca_job(c, "refresh-crl", host, inventory, key_file, known_hosts, accept_new_host_key, verbose, yes,
            lambda remote, console, folder: refresh(remote, console, days=days, dry_run=dry_run, backup_dir=folder,
                                                    flavor=flavor, unfinished_run=unfinished), backup_dir)


@task(name="extend-ca", auto_shortflags=False, optional=["rollback"], help={
    **CA_JOB_HELP,
    "agents": "once the master is proven, push the new CA bundle to these agents' <ssldir>/certs/ca.pem over SSH "
              "as root (aliases or [root@]host[:port], comma-separated; same key and known_hosts as the master; "
              "each old file kept aside; a table of results; exit 10 if one did not get it)",
    "years": f"the renewed CA cert's lifetime in years (default {DEFAULT_CA_YEARS}; a resumed run keeps "
             "its own)",
    "yes": "do not ask before changing the CA cert",
})
@exits_cleanly
def extend_ca(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
              years=None, yes=False, dry_run=False, backup_dir=None, flavor=None, verbose=False,
              rollback=False, resume=None, abandon=None, agents=None):
    """Renew the CA cert before it ends: same key, serial, subject and extensions (backup first).

    Every cert of the CA bundle (Puppet 6+: the intermediate and the root) is re-signed on the master
    with its issuer's key and a new validity, written to the CA folder and the ssldir's certs/ca.pem; the
    CA's CRL is re-signed; the server reads them again (reload or restart). Proven from the bytes and by an
    agent run that still trusts only the OLD CA cert; a failure puts the backup back. Prints what agents need.
    A run cut off (lost connection) is resumed by the next one, or rolled back with --rollback. --agents
    then puts the new bundle on the agents named.
    """
    check_flavor(flavor)
    unfinished = unfinished_from(rollback, resume, abandon)
    pushed = AgentsToPush(tuple(agent_targets(agents, lambda name: named_target(c, name, inventory, key_file,
                                                                                 known_hosts))),
                          accept_new_host_key) if agents is not None else None
    years = None if years is None else whole_number(years, "--years", f"whole years from 1 to {MAX_CA_YEARS}", low=1,
                                                    high=MAX_CA_YEARS)
    for agent in pushed.targets if pushed else ():
        # What the push would refuse per agent (not root, a key file missing), refused now: before the
        # master's CA is renewed, not after it (exit 10).
        try:
            check_login(agent)
        except InputError as exc:
            raise InputError(f"--agents {agent.label}: {exc}") from None
    _ca_job(c, "extend-ca", host, inventory, key_file, known_hosts, accept_new_host_key, verbose, yes,
            lambda remote, console, folder: extend(remote, console, years=years, dry_run=dry_run, backup_dir=folder,
                                                   flavor=flavor, unfinished_run=unfinished, agents=pushed),
            backup_dir)


def unfinished_from(rollback, resume, abandon) -> Unfinished:
    return Unfinished(rollback=bool(rollback), abandon=bool(abandon), run_id=run_id_from(rollback, resume, abandon))


def _ca_job(c, task_name, host, inventory, key_file, known_hosts, accept_new_host_key, verbose, yes, job,
            backup_dir) -> None:
    """One master, a console with its log, the connection: what refresh-crl and extend-ca share."""
    target = target_from(c, host, inventory, key_file, known_hosts)
    console = Console(verbose=verbose, assume_yes=yes, log_path=run_log_path(target, task_name))
    try:
        with connected(target, accept_new_host_key) as remote:
            if verbose:
                remote.on_command = console.command
            job(remote, console, backup_dir or target.backup_dir)
    finally:
        console.info(f"Log: {console.log_path}")
        console.close()


ns = Collection(discover, backup, regen, restore, verify, refresh_crl, extend_ca)
