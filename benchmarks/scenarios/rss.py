"""fab: `fab -H ... regen --yes` (the real executable from this Python's bin) under
`/usr/bin/time -v`: peak RSS.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from pe_remote.testing.master import StagingMaster

from benchmarks.harness import REPO, Bench, _peak_rss_kb, clean_remote_backups, say


def run(bench: Bench, master: StagingMaster) -> None:
    fab = Path(sys.executable).parent / "fab"
    rss = bench.figure("peak RSS of `fab ... regen --yes`", "MB")
    for i in range(bench.rounds):
        folder = bench.folder(f"fab-{i}")
        command = [str(fab), "-H", master.target, "-i", str(master.key_path), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(folder)]
        started = time.monotonic()
        kb, code, output = _peak_rss_kb(command, cwd=REPO)
        wall = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"fab regen exited {code}: {output[-800:]}")
        rss.samples.append(kb / 1024)
        say(f"fab regen round {i + 1}: exit {code}, peak RSS {kb / 1024:.1f} MB, {wall:.1f}s")
        shutil.rmtree(folder, ignore_errors=True)
        clean_remote_backups(master)
    rss.note = f"{fab} (maximum resident set size of the fab process, including a 78 MB streamed backup)"
