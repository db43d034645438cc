"""What the `fab`/`invoke` tasks share: turning their arguments into a Target,
and library errors into `invoke.Exit` with the error's own exit code.

Under `fab -H`, the task receives a fabric Connection: its host, user, port and
`-i` keys are the target (an inventory alias given to -H is looked up too).
Under `invoke`, the task receives a plain Context and the target comes from
`--host` or the inventory's default.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re

from invoke import Exit

from pe_remote.errors import InputError, PeRemoteError
from pe_remote.fleet import DEFAULT_PARALLEL
from pe_remote.journal import RUN_ID
from pe_remote.inventory import DEFAULT_INVENTORY, Target, load_inventory, resolve_target
from pe_remote.names import file_safe, parse_alt_names, printable

# help= texts shared by every task that takes the flag.
TARGET_HELP = {
    "host": "master(s) to work on: an alias from the inventory or [root@]host[:port]; several: a,b,c "
            "(invoke; with fab use -H)",
    "inventory": f"inventory file with named hosts (default {DEFAULT_INVENTORY}; env PE_REMOTE_INVENTORY)",
    "key_file": "private key that logs in as root (with fab, -i works too)",
    "known_hosts": "known_hosts file to check the master's host key against (default ~/.ssh/known_hosts)",
    "accept_new_host_key": "trust and save an unknown host key (like ssh's accept-new); a CHANGED key is still refused",
}


# Defaults a config file may set instead of a flag on every call: a `pe_remote:` section in
# pe-remote.yaml (the `pe-remote` program), fabric.yaml (`fab`) or invoke.yaml (`invoke`).
CONFIG_DEFAULTS = {"inventory": None, "key_file": None, "known_hosts": None}


def config_defaults(c) -> dict[str, str]:
    """The `pe_remote:` section of the Invoke/Fabric config, checked (a flag given wins over it)."""
    config = getattr(c, "config", None)
    section = config.get("pe_remote") if config is not None else None
    if not section:
        return {}
    found = {}
    for key in CONFIG_DEFAULTS:
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"config pe_remote.{key} is {value!r}: give a path as a string")
        found[key] = value
    return found


def target_from(c, host: str | None = None, inventory: str | None = None, key_file: str | None = None,
                known_hosts: str | None = None) -> Target:
    configured = config_defaults(c)
    inv = load_inventory(inventory or configured.get("inventory")
                         or os.environ.get("PE_REMOTE_INVENTORY", DEFAULT_INVENTORY))
    fab_host = getattr(c, "original_host", None)  # set only on a fabric Connection (fab -H)
    if fab_host:
        keys = _fab_key_files(c)
        # `-H` checked as --host is: an alias typo is an error, not a DNS lookup, and a port out of
        # range is refused rather than passed on.
        if fab_host in inv.hosts:
            target = inv.hosts[fab_host].with_overrides(key_files=keys or None)
        else:
            resolve_target(fab_host, inv)  # raises for what looks like an unknown alias
            if not 0 < int(c.port) < 65536:
                raise InputError(f"-H {fab_host}: port {c.port} is not a number from 1 to 65535")
            target = Target(address=c.host, port=int(c.port), user=c.user, key_files=keys)
    else:
        target = resolve_target(host, inv)
    return _overridden(target, configured, key_file, known_hosts)


def named_target(c, name: str, inventory: str | None = None, key_file: str | None = None,
                 known_hosts: str | None = None) -> Target:
    """A host named in a flag (`--agents a,b`): an alias or [user@]host[:port], as --host is, logging in
    with the same key (fab's -i included) and checked against the same known_hosts."""
    configured = config_defaults(c)
    inv = load_inventory(inventory or configured.get("inventory")
                         or os.environ.get("PE_REMOTE_INVENTORY", DEFAULT_INVENTORY))
    target = resolve_target(name, inv)
    keys = _fab_key_files(c) if getattr(c, "original_host", None) else ()
    return _overridden(target.with_overrides(key_files=keys or None), configured, key_file, known_hosts)


def _fab_key_files(c) -> tuple[str, ...]:
    given = c.connect_kwargs.get("key_filename") or ()
    return (given,) if isinstance(given, str) else tuple(given)


def _overridden(target: Target, configured: dict, key_file: str | None, known_hosts: str | None) -> Target:
    key_file = key_file or configured.get("key_file")
    known_hosts = known_hosts or configured.get("known_hosts")
    return target.with_overrides(key_files=(key_file,) if key_file else None, known_hosts=known_hosts)


def run_log_path(target: Target, task: str):
    """Each run's log: $XDG_STATE_HOME/pe-remote/logs (default ~/.local/state/pe-remote/logs)."""
    from datetime import datetime, timezone
    from pathlib import Path

    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(state) / "pe-remote" / "logs" / f"{stamp}-{file_safe(target.label)}-{task}.log"


def host_file(path: str, label: str, suffix: str) -> str:
    """FILE.json -> FILE-<host>.json (`suffix` where FILE has none), for one file per host."""
    from pathlib import Path

    given = Path(path)
    return str(given.with_name(f"{given.stem}-{file_safe(label)}{given.suffix or suffix}"))


def alt_names_from(value: str | None, target: Target) -> tuple[str, ...] | None:
    """--dns-alt-names beats the inventory's dns_alt_names; None keeps the master's."""
    if value is not None:
        return parse_alt_names(value, source="--dns-alt-names")
    return target.alt_names


def check_report_path(report: str | None) -> str | None:
    """--report FILE must be writable before anything happens (it is written whatever the outcome).
    Returns FILE with `~` expanded: the path every report is then written to."""
    if not report:
        return report
    from pathlib import Path

    path = Path(report).expanduser()
    folder = path.resolve().parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"--report {report}: cannot write there (a folder that exists and is writable is "
                         "needed); choose another file")
    return str(path)


def fab_hosts(c) -> tuple[str, ...]:
    """Every host of `fab -H a,b` (or `pe-remote -H a,b`): Fabric calls a task once per host with that host's
    Connection and tells no call about the others, so they are read from the -H flag of the Fabric program
    running this call (its Executor, up the call stack). () outside fab (`invoke`, or a direct call)."""
    if not getattr(c, "original_host", None):
        return ()
    import sys

    from invoke import Executor

    frame = sys._getframe(1)
    while frame is not None:
        executor = frame.f_locals.get("self")
        if isinstance(executor, Executor) and getattr(executor, "core", None):
            try:
                value = executor.core[0].args["hosts"].value  # a Lexicon: [] resolves -H to hosts, get() not
            except KeyError:
                return ()
            return tuple(name.strip() for name in value.split(",")) if isinstance(value, str) else ()
        frame = frame.f_back
    return ()


def per_host_file(c, path: str | None, targets: list[Target], suffix: str = ".json"):
    """Where each host's --report (or --log-file) goes: FILE itself for one host; FILE-<host>.json each when
    the run covers several (`--host a,b`, or `fab -H a,b`, which calls the task once per host). Returns
    label -> path."""
    several = len(targets) > 1 or len(fab_hosts(c)) > 1
    return lambda label: (host_file(path, label, suffix) if several else path)


def whole_number(value, flag: str, expected: str, *, low: int, high: int | None = None,
                 default: int | None = None) -> int:
    """A flag's whole number, from the command line's text (or an int from a direct call).

    Invoke converts a flag whose default is an int itself, and a value it cannot convert (`--wave two`)
    ends the program with a traceback; so such flags are declared as strings with default None and
    converted here: None is `default`, anything but a whole number from `low` to `high` is an InputError
    (exit 2) naming the flag and `expected` ("give ...")."""
    if value is None and default is not None:
        return default
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,9}\s*", value):
        number = int(value)
    if number is None or number < low or (high is not None and number > high):
        text = str(value).strip()
        shown = text if re.fullmatch(r"\S+", text) and value is not None else repr(value)
        raise InputError(f"{flag} {shown}: give {expected}")
    return number


def check_flavor(flavor: str | None) -> None:
    from pe_remote.flavors import FLAVORS

    if flavor is not None and flavor not in FLAVORS:
        raise InputError(f"--flavor {flavor!r} is not a generation pe-remote knows: {', '.join(FLAVORS)}")


def run_id_from(rollback, resume, abandon) -> str | None:
    """The unfinished run named by --rollback RUN_ID, --resume RUN_ID or --abandon RUN_ID (one at most)."""
    given = (("--rollback", rollback, "roll back (or --rollback alone: the recent one)"),
             ("--resume", resume, "resume"), ("--abandon", abandon, "close"))
    for flag, value, what in given:
        if isinstance(value, str) and not value.strip():  # `--resume ''` is not "no run id": it is a mistake
            raise InputError(f"{flag} needs the run id of the run to {what}")
    named = {flag: value for flag, value, _ in given if isinstance(value, str) and value}
    if len([v for v in (rollback, resume, abandon) if v]) > 1:
        raise InputError("give one of --rollback, --resume and --abandon")
    for flag, value in named.items():
        if not RUN_ID.match(value):
            raise InputError(f"{flag} {value!r} is not a run id (like 20261128T001500Z-master.example.com; "
                             "pe-remote prints it when it finds an unfinished run)")
    if abandon is not None and not named.get("--abandon"):
        raise InputError("--abandon needs the run id of the run to close")
    return next(iter(named.values()), None)


def exits_cleanly(task_body):
    """Library errors become a one-line message and the error's exit code; Ctrl-C exits 130."""

    @functools.wraps(task_body)
    def wrapper(*args, **kwargs):
        try:
            return task_body(*args, **kwargs)
        except PeRemoteError as exc:
            raise Exit(printable(f"pe-remote: {exc}"), exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("pe-remote: interrupted", 130) from None

    return wrapper


@contextlib.contextmanager
def connected(target: Target, accept_new_host_key: bool = False):
    from pe_remote.connection import connect

    remote = connect(target, accept_new_host_key=accept_new_host_key)
    try:
        yield remote
    finally:
        remote.close()


def targets_from(c, host: str | None = None, inventory: str | None = None, key_file: str | None = None,
                 known_hosts: str | None = None) -> list[Target]:
    """One target (fab -H gives one per task call), or several from `--host a,b,c`."""
    if getattr(c, "original_host", None) or host is None or "," not in host and host.strip():
        return [target_from(c, host, inventory, key_file, known_hosts)]
    names = [name.strip() for name in host.split(",") if name.strip()]
    if not names:
        raise InputError(f"--host {host!r} names no master: give an alias or [root@]host[:port], several as a,b,c")
    # The same host named twice (`a,a`) would run twice on it.
    return [target_from(c, name, inventory, key_file, known_hosts) for name in dict.fromkeys(names)]


def for_each_host(targets: list[Target], per_host, *, accept_new_host_key: bool = False,
                  parallel: int | str | None = DEFAULT_PARALLEL, changing: bool = False, wave: int | str | None = 1, title: str = "",
                  describe=str) -> list:
    """Run `per_host(remote)` on every target and return the values.

    One target: directly, errors propagate as they are. Several: read-only work runs
    `parallel` hosts at a time; changing work runs in waves of `wave` hosts and stops at the
    first failure. A per-host table is printed, and any failure raises FleetFailed.
    """
    from pe_remote.errors import FleetFailed, most_severe
    from pe_remote.fleet import FAILED, OK, render_table, run_in_waves, run_parallel

    parallel = whole_number(parallel, "--parallel", "a whole number of hosts, 1 or more", low=1, default=DEFAULT_PARALLEL)
    wave = whole_number(wave, "--wave", "a whole number of hosts, 1 or more", low=1, default=1)

    if len(targets) == 1:
        with connected(targets[0], accept_new_host_key) as remote:
            return [per_host(remote)]
    if changing:
        results = run_in_waves(targets, per_host, wave_size=wave, accept_new_host_key=accept_new_host_key)
    else:
        results = run_parallel(targets, per_host, max_workers=parallel, accept_new_host_key=accept_new_host_key)
    print(printable(render_table(results, describe=describe, title=title)))
    bad = [r for r in results if r.status != OK]
    if bad:
        # The most severe host's code (errors.EXIT_SEVERITY), not the first's: a host refused (4) must not
        # hide one cut off mid-run (8). A host skipped after a failure adds nothing; one that failed
        # without a code of its own (a bug) counts as 1.
        ended = [r for r in bad if r.status == FAILED or r.exit_code is not None]
        code = most_severe(r.exit_code if r.exit_code is not None else 1 for r in ended) if ended else 1
        worst = next((r for r in ended if most_severe([r.exit_code]) == code), bad[0])
        raise FleetFailed(f"{len(bad)} of {len(results)} hosts did not succeed; most severe: {worst.label} "
                          f"(exit {code}): {worst.error}", code)
    return [r.value for r in results]
