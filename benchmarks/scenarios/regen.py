"""regen: per round, a bare stop-then-start (the same `puppet resource service` commands regen
runs, in PE 3.7's documented order, in ONE ssh command, then the same wait for
8140 serving the cert on disk; its window timed on the master), the same with the broker and MCollective
stopped in the background (information), then a library `regen` (connect + regen): downtime =
`result.execution.downtime`, backup time = the time spent in `take_backup`, overhead = wall
time - downtime - backup time, remote commands = `result.commands_run`.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time

from pe_remote.connection import connect
from pe_remote.console import Console
from pe_remote.discovery import discover
from pe_remote.events import Timings
from pe_remote.plan import server_ready_check, service_command
from pe_remote.regen import RegenOptions, regen
from pe_remote.testing.master import StagingMaster

from benchmarks.harness import Bench, clean_remote_backups, ratio_target, say, ssh_argv, target_of


def _restart_step(key: str) -> bool:
    """A plan step a bare restart also does (stop, start, wait for the server)."""
    return key.startswith(("stop:", "start:")) or key == "wait-server"


def bare_restart(master: StagingMaster, overlap: bool = False, stops: dict[str, float] | None = None) -> float:
    """Stop-then-start with regen's own service commands, in one ssh command; the window timed on the master.

    Without `overlap`: every service in the table's order, one after the other, as an operator
    restarts them by hand (PE 3.7's documented stop and start lists). With `overlap`: the services
    with their own credentials stop in the background while the server restarts, as regen
    overlaps them with its cert work (the fastest restart of the same services with the same
    commands). `stops`, when given, gets how long each service's stop command took in the window.
    """
    with connect(target_of(master)) as remote:
        facts = discover(remote)
    flavor = facts.flavor
    running = set(facts.running_services)
    side = [n for n in flavor.services if n in running and n in flavor.own_credentials] if overlap else []
    stopping = [n for n in flavor.services if n in running and n not in side]
    starts = [n for n in flavor.start_order if n in running and n not in side]
    server_at = starts.index(facts.server_service)
    quiet = " >/dev/null 2>&1 || exit 1"
    background = ("( " + " && ".join(service_command(facts, n, "stopped") + " >/dev/null 2>&1" for n in side)
                  + " ) & side=$!") if side else "side="
    script = "\n".join([
        "t0=$(date +%s.%N)",
        *(service_command(facts, n, "stopped") + quiet + f'\necho "stopped {n} $(date +%s.%N)"' for n in stopping),
        background,
        *(service_command(facts, n, "running") + quiet for n in starts[:server_at + 1]),
        f"( {server_ready_check(facts)} ) || exit 1",
        "t1=$(date +%s.%N)",
        'echo "window $t0 $t1"',
        '[ -z "$side" ] || wait "$side" || exit 1',
        *(service_command(facts, n, "running") + quiet for n in flavor.start_order if n in side),
        *(service_command(facts, n, "running") + quiet for n in starts[server_at + 1:]),
    ])
    proc = subprocess.run(ssh_argv(master, script), capture_output=True, text=True)
    found = re.search(r"^window (\S+) (\S+)$", proc.stdout, re.M)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"bare restart failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    if stops is not None:
        before = float(found[1])
        for name, at in re.findall(r"^stopped (\S+) (\S+)$", proc.stdout, re.M):
            stops[name], before = float(at) - before, float(at)
    return float(found[2]) - float(found[1])


def run(bench: Bench, master: StagingMaster) -> None:
    target = target_of(master)
    ratio = bench.figure("downtime ratio: regen / bare stop-start", "x", target="<= 1.10",
                         passes=ratio_target(1.10))
    regen_down = bench.figure("  regen downtime (first stop -> 8140 serves the new cert)", "s")
    bare_down = bench.figure("  bare stop-then-start, same commands in the same order, one ssh", "s")
    extra_fig = bench.figure("  in regen's window: clean, remove catalog, generate", "s")
    same_fig = bench.figure("  in regen's window: the rest (stops, server start, wait)", "s")
    strict = bench.figure("downtime ratio: regen / bare restart overlapped like regen", "x")
    strict_down = bench.figure("  bare stop-then-start, broker and MCollective stopped alongside", "s")
    overhead = bench.figure("tool overhead: regen wall - downtime - backup", "s", target="<= 5 s",
                            passes=lambda v: v <= 5.0)
    wall_fig = bench.figure("  regen wall time (connect + regen)", "s")
    backup_fig = bench.figure("  of which backup (take_backup)", "s")
    discovery_fig = bench.figure("  of which discovery", "s")
    after_fig = bench.figure("  of which service starts after the window", "s")
    rest_fig = bench.figure("  of which the rest (connect, plan, journal, verify, round trips)", "s")
    commands = bench.figure("remote commands per regen", "")
    # The first restart of a freshly booted master's JVM is slower than the later ones: not measured.
    say(f"warm-up restart (not measured): {bare_restart(master):.2f}s")
    for i in range(bench.regen_rounds):
        # Alternate which of the pair goes first, so neither always follows the other's agent run.
        if i % 2 == 0:
            bare = bare_restart(master)
            overlapped = bare_restart(master, overlap=True)
        folder = bench.folder(f"regen-{i}")
        timed = Timings()  # the run's own events: discovery-*, backup-*, window-closed
        started = time.monotonic()
        with connect(target) as remote:
            result = regen(remote, RegenOptions(backup_dir=str(folder)),
                           Console(assume_yes=True, out=io.StringIO()), listeners=(timed,))
        wall = time.monotonic() - started
        if i % 2 == 1:
            overlapped = bare_restart(master, overlap=True)
            bare = bare_restart(master)
        if result.outcome != "ok" or result.old_serial == result.new_serial:
            raise RuntimeError(f"regen did not regenerate the cert: {result.outcome}, serial "
                               f"{result.old_serial} -> {result.new_serial}")
        downtime = result.execution.downtime
        if "backup" not in timed.seconds:
            raise RuntimeError("regen reported no backup-started/backup-finished events")
        spent_backup = timed.seconds["backup"]
        # Wall time from the server answering to the last start (those starts overlap).
        after = max((r.ended for r in result.execution.records if r.started >= result.execution.downtime_ended),
                    default=result.execution.downtime_ended) - result.execution.downtime_ended
        execution = result.execution
        in_window = [r for r in execution.records
                     if r.started >= execution.downtime_started and r.ended <= execution.downtime_ended]
        cert_work = sum(r.ended - r.started for r in in_window if not _restart_step(r.key))
        extra_fig.samples.append(cert_work)
        same_fig.samples.append(downtime - cert_work)
        bare_down.samples.append(bare)
        strict_down.samples.append(overlapped)
        strict.samples.append(downtime / overlapped)
        regen_down.samples.append(downtime)
        ratio.samples.append(downtime / bare)
        wall_fig.samples.append(wall)
        backup_fig.samples.append(spent_backup)
        discovery_fig.samples.append(timed.seconds.get("discovery", 0.0))
        after_fig.samples.append(after)
        overhead.samples.append(wall - downtime - spent_backup)
        rest_fig.samples.append(wall - downtime - spent_backup - timed.seconds.get("discovery", 0.0) - after)
        commands.samples.append(result.commands_run)
        say(f"regen round {i + 1} ({bench.others()}): bare window {bare:.2f}s (overlapped {overlapped:.2f}s), "
            f"regen downtime {downtime:.2f}s "
            f"(x{downtime / bare:.3f}), wall {wall:.2f}s, backup {spent_backup:.2f}s, "
            f"overhead {wall - downtime - spent_backup:.2f}s, {result.commands_run} remote commands, "
            f"serial {result.old_serial} -> {result.new_serial}")
        shutil.rmtree(folder, ignore_errors=True)
        clean_remote_backups(master)
    ratio.note = (f"{len(in_window)} steps in regen's window, one remote command each; the bare restart runs "
                  f"the same service commands in PE 3.7's documented order, one after the other, in one ssh "
                  f"command. regen's window holds the cert work the procedure must do while the server is "
                  f"stopped (clean, remove the catalog, generate); it stops the broker and MCollective (their "
                  f"own copies of the credentials) alongside that work instead of before it. puppetserver's "
                  f"own start varies by a few seconds with the machine's load")
    strict.note = ("information: against the fastest restart of the same services with the same commands "
                   "(broker and MCollective stopped in the background, the server restarted at once), "
                   "regen's extra is its cert work alone")
    steps = len(result.plan.steps)
    commands.note = (f"{steps} plan steps, one remote command each, plus discovery, the streamed backup, "
                     f"the journal's start, verification and the journal's end")
    overhead.note = ("wall time from before connecting to regen's return; 'service starts after the window' "
                     "are the agent and helper services regen starts once puppetserver answers (a bare "
                     "restart starts them too, outside its window)")
