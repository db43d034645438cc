"""`python -m benchmarks`: every figure measured side by side in one run, on staging masters it starts.

Phase 1, one pe37 master whose CA holds 50,000 signed agent certs (benchmarks/bigca.py), in this
order: backup, ciphers, regen, fab (benchmarks/scenarios/backup.py, ciphers.py, regen.py, rss.py;
how each figure is measured is in its module's docstring). `--only` picks among them.

Then the backup again on a Puppet 7 master with as big a CA (backup7), and regen's reload path
(benchmarks/scenarios/reload.py), on a Puppet 7 and a Puppet 8 master of its own.

Phase 2, three more masters like the first (four in all): fleet (benchmarks/scenarios/fleet.py),
first with the masters sharing this machine's cores, then with every master held to the same
fixed CPU share.

Every master is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
from functools import partial
import shutil
import tempfile
import traceback
from pathlib import Path

from benchmarks.bigca import AGENT_CERTS
from benchmarks.figures import machine, render
from benchmarks.harness import FLAVOR, FLEET_SIZE, Bench, fleet_cpu_share, say
from benchmarks.scenarios import backup, ciphers, regen, reload, rss
from benchmarks.scenarios import fleet as fleet_scenario  # `fleet` is run()'s flag and its masters


def run(bench: Bench, fleet: bool = True, only: tuple[str, ...] = ()) -> int:
    """The scenarios in their order: phase 1 on one master (`only` picks among them), then the fleet on four."""
    first = None
    if not only or set(only) - {"reload", "backup7"}:
        say(f"starting a {FLAVOR} staging master with {AGENT_CERTS} agent certs in its CA ...")
        [first] = bench.masters.start(1)
    for name, step in (("backup", partial(backup.run, title="PE 3.7 layout")), ("ciphers", ciphers.run),
                       ("regen", regen.run), ("fab", rss.run)):
        if only and name not in only or first is None:
            continue
        say(f"--- {name} ({bench.others()})")
        bench._guarded(name, step, first)
    if not only or "backup7" in only:
        say(f"--- backup on a Puppet 7 master ({bench.others()})")
        bench._guarded("backup7", _backup_on_puppet7)
    if not only or "reload" in only:
        say(f"--- reload ({bench.others()})")
        bench._guarded("reload", reload.run)
    if fleet and first is not None:
        say(f"starting {FLEET_SIZE - 1} more masters for the fleet figure ...")
        try:
            others = bench.masters.start(FLEET_SIZE - 1)
        except Exception as exc:  # noqa: BLE001
            bench.figure("fleet ratio", "x", target="<= 1.5", error=f"could not start the masters: {exc}")
        else:
            fleet = [first, *others]
            say(f"--- fleet, masters sharing the cores ({bench.others()})")
            bench._guarded("fleet", fleet_scenario.run, fleet)
            share = fleet_cpu_share(len(fleet))
            say(f"--- fleet, each master held to {share:g} CPU ({bench.others()})")
            bench._guarded("fleet", fleet_scenario.run, fleet, share)
    return 0


def _backup_on_puppet7(bench: Bench) -> None:
    """The backup figure again on a Puppet 7 master with as big a CA (discovery runs two Ruby starts there,
    one on PE 3.7's layout)."""
    say(f"starting an oss7 master (Puppet 7) with {AGENT_CERTS} agent certs in its CA ...")
    [master] = bench.masters.start(1, flavor="oss7")
    try:
        backup.run(bench, master, title="Puppet 7")
    finally:
        bench.masters.stop(master)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every figure (default 3)")
    parser.add_argument("--regen-rounds", type=int, default=5,
                        help="repetitions of the regen / bare restart pair (default 5: puppetserver's start "
                             "varies by a few seconds, the downtime target is 10%%)")
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet figure (needs 4 masters)")
    parser.add_argument("--only", default="", help="comma-separated phases of the first master to run "
                        "(backup, ciphers, regen, fab, backup7, reload; default: all)")
    args = parser.parse_args(argv)
    print("pe-remote benchmarks")
    print(machine(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="pe-remote-bench-"))
    bench = Bench(max(1, args.rounds), work, args.regen_rounds)
    try:
        run(bench, fleet=not args.no_fleet, only=tuple(p for p in args.only.split(",") if p))
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:  # noqa: BLE001 - still print what was measured
        traceback.print_exc()
        bench.figure("run", "", error=f"{type(exc).__name__}: {exc}")
    finally:
        say(f"stopping {len(bench.masters.running)} master(s) ...")
        bench.masters.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for table in bench.tables:
        print(table)
        print()
    print(f"RESULTS: medians of {bench.rounds} runs each ({bench.regen_rounds} for the regen figures; every run "
          f"listed; a ratio is the median of per-round ratios)")
    print(render(bench.figures))
    failed = [f for f in bench.figures if f.verdict in ("FAIL", "ERROR")]
    return 1 if failed else 0
