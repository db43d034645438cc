"""pe-remote tasks: regenerate a Puppet master's SSL cert over SSH.

Thin layer: parse flags, call pe_remote, turn its errors into exit codes.
The same tasks serve `fab -H root@master TASK` and `invoke TASK --host ALIAS`.
"""

from invoke import Collection, task

from pe_remote.cli import TARGET_HELP, alt_names_from, connected, exits_cleanly, run_log_path, target_from
from pe_remote.console import Console
from pe_remote.errors import Mismatch
from pe_remote.report import RunReport
from pe_remote.discovery import discover as discover_master
from pe_remote.regen import RegenOptions, backup_only, regen as run_regen
from pe_remote.render import render_facts
from pe_remote.restore import restore_backup
from pe_remote.verify import verify_master

FLAVOR_HELP = "skip detection and use this generation: pe37, pe2016, puppet6, pe2019"
BACKUP_DIR_HELP = "local folder for backups (default: the inventory's backup_dir, else ./backups)"


@task(auto_shortflags=False, help={**TARGET_HELP, "flavor": FLAVOR_HELP})
@exits_cleanly
def discover(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
             flavor=None):
    """Show what pe-remote finds on a master (read-only): certname, alt names, paths, services, cert."""
    target = target_from(c, host, inventory, key_file, known_hosts)
    with connected(target, accept_new_host_key) as remote:
        facts = discover_master(remote, flavor_override=flavor)
        print(render_facts(facts, target.label))


@task(auto_shortflags=False, help={**TARGET_HELP, "backup_dir": BACKUP_DIR_HELP, "flavor": FLAVOR_HELP})
@exits_cleanly
def backup(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
           backup_dir=None, flavor=None):
    """Back up the master's SSL directory and pull the tarball back, verified (changes nothing else)."""
    target = target_from(c, host, inventory, key_file, known_hosts)
    with connected(target, accept_new_host_key) as remote:
        backup_only(remote, backup_dir or target.backup_dir, Console(), flavor=flavor)


@task(auto_shortflags=False, help={
    **TARGET_HELP,
    "dns_alt_names": "comma-separated alt names for the new cert (default: the master's dns_alt_names); "
                     "dropping a name the current cert has needs confirmation or --yes",
    "yes": "do not ask before changing the master (for CI); the plan is still printed",
    "dry_run": "discover and print the exact remote commands in order; change nothing",
    "backup_dir": BACKUP_DIR_HELP,
    "flavor": FLAVOR_HELP,
    "verbose": "print every remote command as it runs",
    "force": "proceed although the master looks like a monolithic PE install (PuppetDB/console on it)",
    "rollback": "an earlier run on this master did not finish: roll it back instead of resuming it",
    "report": "write a JSON report of the run to this file, whatever the outcome (schema: README, Report)",
    "log_file": "log of the run (default: ~/.local/state/pe-remote/logs/<UTC time>-<host>-regen.log)",
})
@exits_cleanly
def regen(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
          dns_alt_names=None, yes=False, dry_run=False, backup_dir=None, flavor=None, verbose=False,
          force=False, rollback=False, report=None, log_file=None):
    """Regenerate the master's SSL cert: back up, stop services, clean, generate, start, verify.

    Prints the plan first and asks before the first change unless --yes. Any failure after the
    first change is rolled back from the run's backup. If an earlier run was cut off (lost
    connection), this resumes it, or rolls it back with --rollback; no second backup is taken.
    """
    target = target_from(c, host, inventory, key_file, known_hosts)
    options = RegenOptions(alt_names=alt_names_from(dns_alt_names, target), dry_run=dry_run,
                           backup_dir=backup_dir or target.backup_dir, flavor=flavor, force=force,
                           rollback=rollback)
    console = Console(verbose=verbose, assume_yes=yes,
                      log_path=log_file or run_log_path(target, "regen"))
    record = RunReport(target.label)
    try:
        with connected(target, accept_new_host_key, console) as remote:
            run_regen(remote, options, console, record)
    except Exception as exc:
        record.error = record.error or str(exc)
        record.exit_code = record.exit_code or getattr(exc, "exit_code", 1)
        raise
    finally:
        console.info(f"Log: {console.log_path}")
        console.close()
        if report:
            record.write(report)


@task(auto_shortflags=False, help={
    **TARGET_HELP,
    "tarball": "the local backup (.tar.gz taken by backup or regen) to put back",
    "sha256": "expected sha256 of the tarball (default: the .sha256 file written beside it)",
    "yes": "do not ask before stopping the services",
    "flavor": FLAVOR_HELP,
})
@exits_cleanly
def restore(c, tarball, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
            sha256=None, yes=False, flavor=None):
    """Put a local SSL backup back on a master (checksum verified first; services stopped and started)."""
    from pathlib import Path

    target = target_from(c, host, inventory, key_file, known_hosts)
    with connected(target, accept_new_host_key) as remote:
        restore_backup(remote, Path(tarball).expanduser(), Console(assume_yes=yes), sha256=sha256, flavor=flavor)


@task(auto_shortflags=False, help={
    **TARGET_HELP,
    "dns_alt_names": "alt names the cert must carry besides the certname (default: the master's dns_alt_names)",
    "flavor": FLAVOR_HELP,
})
@exits_cleanly
def verify(c, host=None, inventory=None, key_file=None, known_hosts=None, accept_new_host_key=False,
           dns_alt_names=None, flavor=None):
    """Check a master's cert and services (read-only); exit non-zero naming every mismatch.

    Checks: issuer is the CA, SANs = certname + alt names, not expired, key matches the cert,
    port 8140 presents the cert on disk, every Puppet service of the master is running.
    """
    target = target_from(c, host, inventory, key_file, known_hosts)
    with connected(target, accept_new_host_key) as remote:
        facts = discover_master(remote, flavor_override=flavor)
        result, problems = verify_master(remote, facts, alt_names_from(dns_alt_names, target))
    print(f"{target.label}: {facts.certname} serial {result.cert.serial}, issuer {result.cert.issuer}, "
          f"SANs {', '.join(sorted(result.cert.sans))}, expires {result.cert.not_after}")
    if problems:
        raise Mismatch(f"{target.label} fails verification: " + "; ".join(problems))
    print(f"{target.label}: OK (issuer, SANs, expiry, key, 8140, services)")


ns = Collection(discover, backup, regen, restore, verify)
