"""reload: regen's reload path against its restart path and a bare restart, on a Puppet 7 and a Puppet 8
master (Debian's puppetserver 7.9 and 8.7; their CAs as built: the figure is the server's window).

Per round, in an order that alternates, on the same master: a bare stop-then-start of the same services
(regen.bare_restart: the same service commands in one ssh command, the window timed on the master from
the first stop until 8140 serves the cert on disk), a library `regen` on the reload path (its window:
the reload until 8140 presents the new cert), and a `regen --restart` (its window: the first stop until
8140 presents the new cert). Each regen's downtime is its own `window-closed` event; its wall time runs
from before connecting to regen's return (discovery, backup, every step, verification).
"""

from __future__ import annotations

import io
import shutil
import time

from pe_remote.connection import connect
from pe_remote.console import Console
from pe_remote.events import Timings
from pe_remote.flavors import PUPPET6
from pe_remote.regen import RegenOptions, regen

from benchmarks.harness import Bench, clean_remote_backups, ratio_target, say, target_of
from benchmarks.scenarios.regen import bare_restart

GENERATIONS = (("oss7", "Puppet 7"), ("oss8", "Puppet 8"))


def _regen(master, bench: Bench, name: str, restart: bool):
    folder = bench.folder(name)
    started = time.monotonic()
    with connect(target_of(master)) as remote:
        result = regen(remote, RegenOptions(backup_dir=str(folder), restart=restart),
                       Console(assume_yes=True, out=io.StringIO()), listeners=(Timings(),))
    wall = time.monotonic() - started
    shutil.rmtree(folder, ignore_errors=True)
    clean_remote_backups(master)
    want = "restart" if restart else "reload"
    if result.outcome != "ok" or result.old_serial == result.new_serial or result.plan.path != want:
        raise RuntimeError(f"regen ({want}) did not regenerate on the {want} path: {result.outcome}, "
                           f"{result.plan.path}, serial {result.old_serial} -> {result.new_serial}")
    generate = sum(r.ended - r.started for r in result.execution.records if r.key == "generate")
    return result.execution.downtime, wall, generate


def run(bench: Bench) -> None:
    for flavor, title in GENERATIONS:
        say(f"starting a {flavor} master ({title}) ...")
        [master] = bench.masters.start(1, flavor=flavor, agent_certs=0)
        try:
            _measure(bench, master, title)
        finally:
            bench.masters.stop(master)


def _measure(bench: Bench, master, title: str) -> None:
    reload_ratio = bench.figure(f"{title}: downtime ratio, regen reload path / bare restart", "x",
                               target="<= 0.35", passes=ratio_target(0.35))
    restart_ratio = bench.figure(f"{title}: downtime ratio, regen --restart / bare restart", "x",
                                target="<= 1.0", passes=ratio_target(1.0))
    wall_ratio = bench.figure(f"{title}: regen wall (reload path, backup to verification) / restart-path "
                              "downtime", "x", **({"target": "<= 1.5", "passes": ratio_target(1.5)}
                                                  if title == "Puppet 7" else {}))
    reload_down = bench.figure(f"  {title}: regen downtime, reload path (reload -> 8140 serves the new cert)", "s")
    restart_down = bench.figure(f"  {title}: regen downtime, restart path (first stop -> the new cert)", "s")
    bare_down = bench.figure(f"  {title}: bare stop-then-start of the same services, one ssh", "s")
    reload_wall = bench.figure(f"  {title}: regen wall time, reload path", "s")
    restart_wall = bench.figure(f"  {title}: regen wall time, restart path", "s")
    # What the restart path's window holds that a bare restart's does not, and the reverse: its
    # generate (the CA offline), against the agent's stop (regen stops it alongside the server's).
    generate_fig = bench.figure(f"  {title}: restart path, generate in its window", "s")
    agent_stop_fig = bench.figure(f"  {title}: bare restart, the agent's stop in its window", "s")
    say(f"warm-up restart (not measured): {bare_restart(master):.2f}s")
    for i in range(bench.rounds):
        order = ("bare", "reload", "restart") if i % 2 == 0 else ("restart", "reload", "bare")
        got = {}
        for what in order:
            if what == "bare":
                stops: dict[str, float] = {}
                got[what] = (bare_restart(master, stops=stops), 0.0, 0.0)
            else:
                got[what] = _regen(master, bench, f"{what}-{i}", restart=what == "restart")
        bare = got["bare"][0]
        (reload, reload_t, _), (restart, restart_t, generate) = got["reload"], got["restart"]
        generate_fig.samples.append(generate)
        agent_stop_fig.samples.append(sum(stops.get(name, 0.0) for name in PUPPET6.agent_services))
        bare_down.samples.append(bare)
        reload_down.samples.append(reload)
        restart_down.samples.append(restart)
        reload_wall.samples.append(reload_t)
        restart_wall.samples.append(restart_t)
        reload_ratio.samples.append(reload / bare)
        restart_ratio.samples.append(restart / bare)
        wall_ratio.samples.append(reload_t / restart)
        say(f"{title} round {i + 1} ({bench.others()}): bare {bare:.2f}s, reload path {reload:.2f}s "
            f"(x{reload / bare:.2f}, wall {reload_t:.1f}s), restart path {restart:.2f}s (x{restart / bare:.2f}, "
            f"wall {restart_t:.1f}s)")
    reload_ratio.note = (f"{title}: the server keeps serving while the new cert is made (the CA's files frozen "
                         "to root), then reloads: its window is the reload alone")
    restart_ratio.note = (f"{title}: the documented order, generate with the CA offline: its window is the bare "
                          "restart's, less the agent's stop (which runs alongside the server's), plus generate "
                          "(a new RSA key each time: `puppetserver ca generate` refuses one already made)")
