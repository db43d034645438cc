"""fleet (phase 2, three more masters like the first, four in all): per round, the `backup` command
(connect, discover, stream) through `pe_remote.fleet.run_parallel` on one master, then on the
four at once; first with the masters sharing this machine's cores (information: the CPU the
single backup used, in the master's cgroup and in this process, gives the lower bound the cores
put on the ratio), then with every master held to the same fixed CPU share in both runs
(`docker update --cpus`, one core left to pe-remote), as masters on machines of their own.
"""

from __future__ import annotations

import io
import os
import shutil
import time

from pe_remote.console import Console
from pe_remote.fleet import render_table, run_parallel
from pe_remote.regen import backup_only
from pe_remote.testing.master import StagingMaster

from benchmarks.harness import (Bench, clean_remote_backups, container_cpu_seconds, own_cpu_seconds, ratio_target,
                                say, set_cpu_share, target_of)


def run(bench: Bench, masters: list[StagingMaster], cpus: float | None = None) -> None:
    """`backup` on one master, then on all at once; with `cpus`, every master is held to that CPU share."""
    targets = [target_of(m) for m in masters]
    cores = len(os.sched_getaffinity(0))
    if cpus:
        ratio = bench.figure(f"fleet ratio: backup on {len(masters)} in parallel / on 1 "
                             f"(each master {cpus:g} CPU)", "x", target="<= 1.5", passes=ratio_target(1.5))
        for master in masters:
            set_cpu_share(master, cpus)
    else:
        ratio = bench.figure(f"fleet ratio, the {len(masters)} masters sharing this machine's {cores} cores", "x")
    one_fig = bench.figure("  backup command on 1 master (via fleet.run_parallel)", "s")
    all_fig = bench.figure(f"  backup command on {len(masters)} masters, max_workers={len(masters)}", "s")
    here_fig = bench.figure("  CPU of one backup command: pe-remote here", "s")
    there_fig = bench.figure("  CPU of one backup command: the master (container)", "s")
    bound_fig = own_bound_fig = pair_fig = None
    if not cpus:
        bound_fig = bench.figure(f"  lower bound on this machine: {len(masters)} x CPU of one / cores", "x")
        own_bound_fig = bench.figure("  lower bound from pe-remote's own CPU (masters elsewhere)", "x")
        pair_fig = bench.figure(f"  backup on {cores} masters in parallel (one per core) / on 1", "x") \
            if 1 < cores < len(masters) else None
    try:
        _fleet_rounds(bench, masters, targets, cores, ratio, one_fig, all_fig, here_fig, there_fig, bound_fig,
                      own_bound_fig, pair_fig)
    finally:
        if cpus:
            for master in masters:
                set_cpu_share(master, float(cores))  # the machine's whole: no limit
    if cpus:
        ratio.note = (f"models masters on machines of their own: each container is held to {cpus:g} CPU "
                      f"(docker update --cpus) in the 1-master and the {len(masters)}-master runs alike, so "
                      f"a lone master cannot borrow the cores the others use, and {len(masters)} x {cpus:g} "
                      f"leaves {cores - len(masters) * cpus:g} core(s) to pe-remote; what is measured is "
                      f"whether pe-remote overlaps the masters' work")


def _fleet_rounds(bench: Bench, masters, targets, cores, ratio, one_fig, all_fig, here_fig, there_fig, bound_fig,
                  own_bound_fig, pair_fig) -> None:
    last_table = ""
    for i in range(bench.rounds):
        folder = bench.folder(f"fleet-{i}")

        def fleet_backup(remote, _folder=folder):
            return backup_only(remote, str(_folder), Console(out=io.StringIO()))

        cpu_master = container_cpu_seconds(masters[0])
        cpu_self = own_cpu_seconds()
        started = time.monotonic()
        [one] = run_parallel(targets[:1], fleet_backup, max_workers=1)
        single = time.monotonic() - started
        cpu_here = own_cpu_seconds() - cpu_self
        cpu_there = (container_cpu_seconds(masters[0]) - cpu_master) if cpu_master is not None else None
        if not one.ok:
            raise RuntimeError(f"backup on one master failed: {one.error}")
        for m in masters:
            clean_remote_backups(m)
        started = time.monotonic()
        results = run_parallel(targets, fleet_backup, max_workers=len(targets))
        together = time.monotonic() - started
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"fleet backup failed on {failed[0].label}: {failed[0].error}")
        if pair_fig is not None:
            for m in masters:
                clean_remote_backups(m)
            started = time.monotonic()
            pair = run_parallel(targets[:cores], fleet_backup, max_workers=cores)
            pair_s = time.monotonic() - started
            if not all(r.ok for r in pair):
                raise RuntimeError(f"backup on {cores} masters failed: {[r.error for r in pair if not r.ok]}")
            pair_fig.samples.append(pair_s / single)
            say(f"fleet round {i + 1}: {cores} masters {pair_s:.2f}s (x{pair_s / single:.2f})")
        one_fig.samples.append(single)
        all_fig.samples.append(together)
        ratio.samples.append(together / single)
        here_fig.samples.append(cpu_here)
        if cpu_there is not None:
            there_fig.samples.append(cpu_there)
            if bound_fig is not None:
                bound_fig.samples.append(max(1.0, len(masters) * (cpu_here + cpu_there) / cores / single))
        if own_bound_fig is not None:
            own_bound_fig.samples.append(max(1.0, len(masters) * cpu_here / cores / single))
        say(f"fleet round {i + 1}: 1 master {single:.2f}s ({cpu_there or 0:.2f} CPU-s in the master, "
            f"{cpu_here:.2f} here), {len(masters)} masters "
            f"{together:.2f}s (x{together / single:.2f}); per host: "
            + ", ".join(f"{r.elapsed:.1f}s" for r in results))
        last_table = render_table(
            results, title=f"fleet round {i + 1}: `backup` on {len(masters)} masters in parallel",
            describe=lambda b: f"{b.remote.size / 1e6:.1f} MB, sha256 {b.sha256[:16]}..., {b.local_path.name}")
        shutil.rmtree(folder, ignore_errors=True)
        for m in masters:
            clean_remote_backups(m)
    bench.tables.append(last_table)
    if bound_fig is not None and bound_fig.samples:
        bound_fig.note = (f"the {len(masters)} masters are containers on this machine's {cores} cores: one backup "
                          f"command keeps about one core busy (gzip and discovery's puppet runs on the master, "
                          f"decryption here), so {len(masters)} at once cannot take less than {len(masters)} x "
                          f"its CPU time / {cores} cores, however well pe-remote overlaps them; with each "
                          f"master on its own machine only pe-remote's own CPU is shared (next line)")
