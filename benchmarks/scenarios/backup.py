"""backup: per round, `ssh root@master 'tar czf - SSLDIR' > file` with the OpenSSH client,
then pe-remote's backup as `regen` takes it (connect + `take_backup`, the master's facts known),
then, for comparison, the two-step tar-to-file-then-SFTP pull with paramiko's prefetch bounded
at 64 (pe-remote before) and at 1024 requests, and the whole `backup` command (connect,
discovery, backup). The ratio is per round (paired), then the median of the rounds.
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import time

import pe_remote.backup as backup_module
from pe_remote.backup import backup_paths, make_remote_backup, pull_backup, sha256_file, take_backup
from pe_remote.connection import connect
from pe_remote.console import Console
from pe_remote.discovery import discover
from pe_remote.regen import backup_only
from pe_remote.testing.master import StagingMaster

from benchmarks.bigca import AGENT_CERTS
from benchmarks.harness import Bench, check_backup, clean_remote_backups, ratio_target, say, ssh_argv, target_of


def run(bench: Bench, master: StagingMaster) -> None:
    target = target_of(master)
    with connect(target) as remote:
        facts = discover(remote)
    members = " ".join(shlex.quote(p.lstrip("/")) for p in backup_paths(facts))
    ssh_command = f"tar czf - -C / {members}"
    ratio = bench.figure("backup ratio: pe-remote backup / ssh tar czf", "x", target="<= 1.25",
                         passes=ratio_target(1.25))
    ssh_s = bench.figure("  ssh 'tar czf - SSLDIR' > file (OpenSSH)", "s")
    stream_s = bench.figure("  pe-remote backup (stream; connect + take_backup)", "s")
    old_ratio = bench.figure("  before: tar to file, then SFTP, prefetch 64 / ssh", "x")
    sftp_ratio = bench.figure("  tar to file, then SFTP, prefetch 1024 / ssh", "x")
    task_ratio = bench.figure("  whole `backup` command (with discovery) / ssh", "x")
    size = bench.figure("  tarball size", "MB")
    for i in range(bench.rounds):
        out = bench.work / "ssh.tgz"
        started = time.monotonic()
        with open(out, "wb") as fh:
            proc = subprocess.run(ssh_argv(master, ssh_command), stdout=fh, stderr=subprocess.PIPE)
        ssh = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"ssh tar failed: {proc.stderr.decode(errors='replace')[-500:]}")
        ssh_bytes = out.stat().st_size
        out.unlink()

        folder = bench.folder(f"stream-{i}")
        started = time.monotonic()
        with connect(target) as remote:
            result = take_backup(remote, facts, folder)
        stream = time.monotonic() - started
        check_backup(master, result)
        size.samples.append(result.remote.size / 1e6)

        two_step = {}
        for requests in (64, backup_module.PREFETCH_REQUESTS):
            folder = bench.folder(f"sftp-{requests}-{i}")
            started = time.monotonic()
            with connect(target) as remote:
                made = make_remote_backup(remote, facts)
                pulled = pull_backup(remote, made, folder, prefetch_requests=requests)
            two_step[requests] = time.monotonic() - started
            assert sha256_file(pulled) == made.sha256

        folder = bench.folder(f"task-{i}")
        started = time.monotonic()
        with connect(target) as remote:
            backup_only(remote, str(folder), Console(out=io.StringIO()))
        task = time.monotonic() - started

        ssh_s.samples.append(ssh)
        stream_s.samples.append(stream)
        ratio.samples.append(stream / ssh)
        old_ratio.samples.append(two_step[64] / ssh)
        sftp_ratio.samples.append(two_step[backup_module.PREFETCH_REQUESTS] / ssh)
        task_ratio.samples.append(task / ssh)
        say(f"backup round {i + 1}: ssh {ssh:.2f}s ({ssh_bytes / 1e6:.1f} MB), stream {stream:.2f}s, "
            f"tar+SFTP(64) {two_step[64]:.2f}s, tar+SFTP({backup_module.PREFETCH_REQUESTS}) "
            f"{two_step[backup_module.PREFETCH_REQUESTS]:.2f}s, whole backup command {task:.2f}s")
        shutil.rmtree(bench.work / "backups", ignore_errors=True)
        clean_remote_backups(master)
    ratio.note = (f"{AGENT_CERTS} agent certs in the CA; pe-remote's time includes its SSH login, ssh's "
                  f"includes its own; the local copy is verified (sha256, 0600, .sha256 sidecar) after timing")
    task_ratio.note = ("information: also runs discovery (one puppet start on the master) that the ssh "
                       "one-liner skips because it is told the path")
