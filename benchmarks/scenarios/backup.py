"""backup: per round, alternating which goes first, OpenSSH's `ssh root@master 'tar czf - <SSL folders>' >
file` against the whole `fab -H master backup` command as an operator runs it (the real executable from
this Python's bin: its own start, the SSH login, discovery, the streamed backup, both sides' checks);
then, for information, the library's stream alone (connect + `take_backup`, the master's facts known,
as regen takes it) and the former tar-to-file-then-SFTP pull. Ratios are per round (paired), then the
median of the rounds. Run on a master whose CA holds 50,000 signed agent certs.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pe_remote.backup as backup_module
from pe_remote.backup import backup_paths, make_remote_backup, pull_backup, sha256_file, take_backup
from pe_remote.connection import connect
from pe_remote.discovery import discover
from pe_remote.testing.master import StagingMaster

from benchmarks.bigca import AGENT_CERTS
from benchmarks.harness import REPO, Bench, check_backup, clean_remote_backups, ratio_target, say, ssh_argv, \
    target_of


def _ssh_tar(master: StagingMaster, command: str, out: Path) -> float:
    started = time.monotonic()
    with open(out, "wb") as fh:
        proc = subprocess.run(ssh_argv(master, command), stdout=fh, stderr=subprocess.PIPE)
    spent = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ssh tar failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return spent


def _fab_backup(master: StagingMaster, folder: Path) -> float:
    fab = Path(sys.executable).parent / "fab"
    command = [str(fab), "-H", master.target, "-i", str(master.key_path), "backup", "--known-hosts",
               str(master.known_hosts_path), "--backup-dir", str(folder)]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    spent = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"fab backup exited {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}")
    kept = list(folder.rglob("*-ssl.tar.gz"))
    if len(kept) != 1 or not kept[0].with_name(kept[0].name + ".sha256").is_file():
        raise RuntimeError(f"fab backup left {kept} in {folder}, not one tarball and its .sha256")
    return spent


def run(bench: Bench, master: StagingMaster, title: str = "") -> None:
    target = target_of(master)
    with connect(target) as remote:
        facts = discover(remote)
    members = " ".join(shlex.quote(p.lstrip("/")) for p in backup_paths(facts))
    ssh_command = f"tar czf - -C / {members}"
    on = f" ({title})" if title else ""
    ratio = bench.figure(f"backup ratio{on}: whole `fab -H master backup` / ssh tar czf", "x", target="<= 1.25",
                         passes=ratio_target(1.25))
    ssh_s = bench.figure("  ssh 'tar czf - <SSL folders>' > file (OpenSSH)", "s")
    fab_s = bench.figure("  fab -H master backup (start, login, discovery, stream, checks)", "s")
    stream_ratio = bench.figure("  library stream alone (connect + take_backup, facts known) / ssh", "x")
    sftp_ratio = bench.figure("  tar to a file, then SFTP (prefetch 1024) / ssh", "x")
    size = bench.figure("  tarball size", "MB")
    for i in range(bench.rounds):
        out = bench.work / "ssh.tgz"
        folder = bench.folder(f"fab-backup-{i}")
        if i % 2 == 0:
            ssh = _ssh_tar(master, ssh_command, out)
            whole = _fab_backup(master, folder)
        else:
            whole = _fab_backup(master, folder)
            ssh = _ssh_tar(master, ssh_command, out)
        ssh_bytes = out.stat().st_size
        out.unlink()

        folder = bench.folder(f"stream-{i}")
        started = time.monotonic()
        with connect(target) as remote:
            result = take_backup(remote, facts, folder)
        stream = time.monotonic() - started
        check_backup(master, result)
        size.samples.append(result.remote.size / 1e6)

        folder = bench.folder(f"sftp-{i}")
        started = time.monotonic()
        with connect(target) as remote:
            made = make_remote_backup(remote, facts)
            pulled = pull_backup(remote, made, folder)
        two_step = time.monotonic() - started
        assert sha256_file(pulled) == made.sha256

        ssh_s.samples.append(ssh)
        fab_s.samples.append(whole)
        ratio.samples.append(whole / ssh)
        stream_ratio.samples.append(stream / ssh)
        sftp_ratio.samples.append(two_step / ssh)
        say(f"backup{on} round {i + 1}: ssh {ssh:.2f}s ({ssh_bytes / 1e6:.1f} MB), fab backup {whole:.2f}s "
            f"(x{whole / ssh:.2f}), stream alone {stream:.2f}s, tar+SFTP({backup_module.PREFETCH_REQUESTS}) "
            f"{two_step:.2f}s")
        shutil.rmtree(bench.work / "backups", ignore_errors=True)
        clean_remote_backups(master)
    ratio.note = (f"{AGENT_CERTS} agent certs in the CA{on}; fab's time is the whole process (Python's start, "
                  "the SSH login, discovery, the backup, sha256 and size compared, 0600 file and .sha256 "
                  "sidecar written); ssh's is its own process")
