"""`python -m benchmarks`: every figure measured side by side in one run, on staging masters it starts.

Phase 1, one pe37 master whose CA holds 50,000 signed agent certs (benchmarks/bigca.py):

- backup: per round, `ssh root@master 'tar czf - SSLDIR' > file` with the OpenSSH client,
  then pe-remote's backup as `regen` takes it (connect + `take_backup`, the master's facts known),
  then, for comparison, the two-step tar-to-file-then-SFTP pull with paramiko's prefetch bounded
  at 64 (pe-remote before) and at 1024 requests, and the whole `backup` command (connect,
  discovery, backup). The ratio is per round (paired), then the median of the rounds.
- ciphers: a raw channel `cat` of the tarball under each cipher paramiko 5 offers that the
  master accepts (information for the cipher choice).
- regen: per round, a bare stop-then-start (the same `puppet resource service` commands regen
  runs, in PE 3.7's documented order, in ONE ssh command, then the same wait for
  8140 serving the cert on disk; its window timed on the master), the same with the broker and MCollective
  stopped in the background (information), then a library `regen` (connect + regen): downtime =
  `result.execution.downtime`, backup time = the time spent in `take_backup`, overhead = wall
  time - downtime - backup time, remote commands = `result.commands_run`.
- fab: `fab -H ... regen --yes` (the real executable from this Python's bin) under
  `/usr/bin/time -v`: peak RSS.

Phase 2, three more masters like the first (four in all): per round, the `backup` command
(connect, discover, stream) through `pe_remote.fleet.run_parallel` on one master, then on the
four at once; first with the masters sharing this machine's cores (information: the CPU the
single backup used, in the master's cgroup and in this process, gives the lower bound the cores
put on the ratio), then with every master held to the same fixed CPU share in both runs
(`docker update --cpus`, one core left to pe-remote), as masters on machines of their own.

Every master is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import pe_remote.backup as backup_module
from pe_remote.backup import backup_paths, make_remote_backup, pull_backup, sha256_file, take_backup
from pe_remote.connection import connect
from pe_remote.console import Console
from pe_remote.discovery import discover
from pe_remote.events import Timings
from pe_remote.fleet import render_table, run_parallel
from pe_remote.inventory import Target, parse_target
from pe_remote.plan import server_ready_check, service_command
from pe_remote.regen import RegenOptions, backup_only, regen
from pe_remote.testing.master import CONTAINER_LABEL, ClientKey, StagingMaster, start_master

from benchmarks.bigca import AGENT_CERTS, fill_ca
from benchmarks.figures import Figure, machine, render

REPO = Path(__file__).resolve().parents[1]
FLAVOR = "pe37"
MAX_MASTERS = 4
FLEET_SIZE = 4
REMOTE_BACKUPS = "/root/pe-remote-backups"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {message}", flush=True)


def _restart_step(key: str) -> bool:
    """A plan step a bare restart also does (stop, start, wait for the server)."""
    return key.startswith(("stop:", "start:")) or key == "wait-server"


def ratio_target(limit: float):
    return lambda value: value <= limit


class Masters:
    """The staging masters this run started: at most MAX_MASTERS, all stopped by `stop_all`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.key = ClientKey.create(work / "key")
        self.running: list[StagingMaster] = []
        self.lock = threading.Lock()

    def start(self, count: int) -> list[StagingMaster]:
        with self.lock:
            if len(self.running) + count > MAX_MASTERS:
                raise RuntimeError(f"refusing to run more than {MAX_MASTERS} masters at once")
        started: list[StagingMaster] = []
        errors: list[BaseException] = []

        def one() -> None:
            try:
                master = start_master(FLAVOR, self.key, self.work / "known_hosts", timeout=600)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            with self.lock:
                self.running.append(master)
            try:
                stats = fill_ca(master, AGENT_CERTS)
                say(f"master {master.target} ready; CA: {stats['signed']} signed certs, "
                    f"SSL folders {stats['bytes'] / 1e6:.0f} MB")
                started.append(master)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"could not start {len(errors)} master(s): {errors[0]}") from errors[0]
        return started

    def stop_all(self) -> None:
        with self.lock:
            masters, self.running = self.running, []
        for master in masters:
            try:
                master.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                say(f"could not stop {master.target}: {exc}")


def target_of(master: StagingMaster) -> Target:
    return parse_target(master.target).with_overrides(key_files=(str(master.key_path),),
                                                      known_hosts=str(master.known_hosts_path))


def ssh_argv(master: StagingMaster, command: str) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={master.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-i", str(master.key_path), "-p", str(master.port), f"root@{master.host}", command]


def container_cpu_seconds(master: StagingMaster) -> float | None:
    """CPU time the master's container used so far (cgroup v1 cpuacct or v2 cpu.stat)."""
    cid = master.container.get_wrapped_container().id
    for path, scale, key in ((f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1e9, None),
                             (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1e6, "usage_usec"),
                             (f"/sys/fs/cgroup/docker/{cid}/cpu.stat", 1e6, "usage_usec")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if key is None:
            return int(text.strip()) / scale
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value) / scale
    return None


def fleet_cpu_share(masters: int) -> float:
    """CPU for each master in the fleet figure: one core is left to pe-remote, the rest shared out."""
    cores = len(os.sched_getaffinity(0))
    return round(max(0.1, (cores - 1) / masters), 2)


def set_cpu_share(master: StagingMaster, cpus: float) -> None:
    cid = master.container.get_wrapped_container().id
    subprocess.run(["docker", "update", "--cpus", f"{cpus:g}", cid], check=True, capture_output=True)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def clean_remote_backups(master: StagingMaster) -> None:
    """Outside every timing: the benchmark's tarballs would fill the container's disk (78 MB each)."""
    master.exec(f"find {REMOTE_BACKUPS} -name '*-ssl.tar.gz' -delete")


def check_backup(master: StagingMaster, result) -> None:
    """What the backup promises: same bytes here and there, 0600 both sides, the .sha256 sidecar."""
    local = result.local_path
    assert sha256_file(local) == result.sha256, "local copy's sha256 differs from the master's"
    assert local.stat().st_mode & 0o777 == 0o600, f"local copy mode {oct(local.stat().st_mode & 0o777)}"
    assert local.parent.stat().st_mode & 0o777 == 0o700, "local folder is not 0700"
    sidecar = local.with_name(local.name + ".sha256")
    assert sidecar.read_text() == f"{result.sha256}  {local.name}\n", "bad .sha256 sidecar"
    assert not list(local.parent.glob(".*partial")), "a partial download was left behind"
    out = master.check(f"stat -c %a {shlex.quote(result.remote.path)} {REMOTE_BACKUPS}; "
                       f"sha256sum {shlex.quote(result.remote.path)}").split()
    assert out[0] == "600" and out[1] == "700", f"master's copy/folder modes {out[:2]}"
    assert out[2] == result.sha256, "master's copy changed"


class Bench:
    def __init__(self, rounds: int, work: Path, regen_rounds: int | None = None) -> None:
        self.rounds = rounds
        self.regen_rounds = max(rounds, regen_rounds or rounds)
        self.work = work
        self.masters = Masters(work)
        self.figures: list[Figure] = []
        self.tables: list[str] = []

    def figure(self, *args, **kwargs) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        return fig

    def folder(self, name: str) -> Path:
        path = self.work / "backups" / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    # --- backup -----------------------------------------------------------------------------------

    def bench_backup(self, master: StagingMaster) -> None:
        target = target_of(master)
        with connect(target) as remote:
            facts = discover(remote)
        members = " ".join(shlex.quote(p.lstrip("/")) for p in backup_paths(facts))
        ssh_command = f"tar czf - -C / {members}"
        ratio = self.figure("backup ratio: pe-remote backup / ssh tar czf", "x", target="<= 1.25",
                            passes=ratio_target(1.25))
        ssh_s = self.figure("  ssh 'tar czf - SSLDIR' > file (OpenSSH)", "s")
        stream_s = self.figure("  pe-remote backup (stream; connect + take_backup)", "s")
        old_ratio = self.figure("  before: tar to file, then SFTP, prefetch 64 / ssh", "x")
        sftp_ratio = self.figure("  tar to file, then SFTP, prefetch 1024 / ssh", "x")
        task_ratio = self.figure("  whole `backup` command (with discovery) / ssh", "x")
        size = self.figure("  tarball size", "MB")
        for i in range(self.rounds):
            out = self.work / "ssh.tgz"
            started = time.monotonic()
            with open(out, "wb") as fh:
                proc = subprocess.run(ssh_argv(master, ssh_command), stdout=fh, stderr=subprocess.PIPE)
            ssh = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"ssh tar failed: {proc.stderr.decode(errors='replace')[-500:]}")
            ssh_bytes = out.stat().st_size
            out.unlink()

            folder = self.folder(f"stream-{i}")
            started = time.monotonic()
            with connect(target) as remote:
                result = take_backup(remote, facts, folder)
            stream = time.monotonic() - started
            check_backup(master, result)
            size.samples.append(result.remote.size / 1e6)

            two_step = {}
            for requests in (64, backup_module.PREFETCH_REQUESTS):
                folder = self.folder(f"sftp-{requests}-{i}")
                saved = backup_module.PREFETCH_REQUESTS
                backup_module.PREFETCH_REQUESTS = requests
                try:
                    started = time.monotonic()
                    with connect(target) as remote:
                        made = make_remote_backup(remote, facts)
                        pulled = pull_backup(remote, made, folder)
                    two_step[requests] = time.monotonic() - started
                finally:
                    backup_module.PREFETCH_REQUESTS = saved
                assert sha256_file(pulled) == made.sha256

            folder = self.folder(f"task-{i}")
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
            shutil.rmtree(self.work / "backups", ignore_errors=True)
            clean_remote_backups(master)
        ratio.note = (f"{AGENT_CERTS} agent certs in the CA; pe-remote's time includes its SSH login, ssh's "
                      f"includes its own; the local copy is verified (sha256, 0600, .sha256 sidecar) after timing")
        task_ratio.note = ("information: also runs discovery (one puppet start on the master) that the ssh "
                           "one-liner skips because it is told the path")

    # --- ciphers ----------------------------------------------------------------------------------

    def bench_ciphers(self, master: StagingMaster) -> None:
        tarball = "/root/pe-remote-bench-cipher.tgz"
        master.check(f"tar czf {tarball} -C / {master.flavor.ssldir.lstrip('/')}")
        size = int(master.check(f"stat -c %s {tarball}"))
        try:
            for cipher in ("aes128-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes256-ctr"):
                with connect(target_of(master)) as remote:
                    transport = remote.connection.transport
                    default = transport.remote_cipher
                    if cipher != default:
                        options = transport.get_security_options()
                        options.ciphers = (cipher,) + tuple(c for c in options.ciphers if c != cipher)
                        transport.renegotiate_keys()
                    if transport.remote_cipher != cipher:
                        say(f"cipher {cipher}: not negotiated (got {transport.remote_cipher})")
                        continue
                    label = f"{cipher}" + (f" + {transport.remote_mac}" if "gcm" not in cipher else "")
                    if cipher == default:
                        label += " (paramiko's default)"
                    fig = self.figure(f"  raw channel, {label}", "MB/s")
                    for _ in range(self.rounds):
                        sink = _CountingSink()
                        started = time.monotonic()
                        channel = transport.open_session(window_size=backup_module.STREAM_WINDOW)
                        channel.exec_command(f"cat {tarball}")
                        while data := channel.recv(backup_module.STREAM_CHUNK):
                            sink.write(data)
                        channel.recv_exit_status()
                        channel.close()
                        assert sink.size == size
                        fig.samples.append(size / 1e6 / (time.monotonic() - started))
                    say(f"cipher {label}: {', '.join(f'{s:.0f}' for s in fig.samples)} MB/s")
        finally:
            master.exec(f"rm -f {tarball}")

    # --- regen ------------------------------------------------------------------------------------

    def bare_restart(self, master: StagingMaster, overlap: bool = False) -> float:
        """Stop-then-start with regen's own service commands, in one ssh command; the window timed on the master.

        Without `overlap`: every service in the table's order, one after the other, as an operator
        restarts them by hand (PE 3.7's documented stop and start lists). With `overlap`: the services
        with their own credentials stop in the background while the server restarts, as regen
        overlaps them with its cert work (the fastest restart of the same services with the same
        commands).
        """
        with connect(target_of(master)) as remote:
            facts = discover(remote)
        flavor = facts.flavor
        running = set(facts.running_services)
        side = [n for n in flavor.services if n in running and n in flavor.own_credentials] if overlap else []
        stops = [n for n in flavor.services if n in running and n not in side]
        starts = [n for n in flavor.start_order if n in running and n not in side]
        server_at = starts.index(facts.server_service)
        quiet = " >/dev/null 2>&1 || exit 1"
        background = ("( " + " && ".join(service_command(facts, n, "stopped") + " >/dev/null 2>&1" for n in side)
                      + " ) & side=$!") if side else "side="
        script = "\n".join([
            "t0=$(date +%s.%N)",
            *(service_command(facts, n, "stopped") + quiet for n in stops),
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
        return float(found[2]) - float(found[1])

    def bench_regen(self, master: StagingMaster) -> None:
        target = target_of(master)
        ratio = self.figure("downtime ratio: regen / bare stop-start", "x", target="<= 1.10",
                            passes=ratio_target(1.10))
        regen_down = self.figure("  regen downtime (first stop -> 8140 serves the new cert)", "s")
        bare_down = self.figure("  bare stop-then-start, same commands in the same order, one ssh", "s")
        extra_fig = self.figure("  in regen's window: clean, remove catalog, generate", "s")
        same_fig = self.figure("  in regen's window: the rest (stops, server start, wait)", "s")
        strict = self.figure("downtime ratio: regen / bare restart overlapped like regen", "x")
        strict_down = self.figure("  bare stop-then-start, broker and MCollective stopped alongside", "s")
        overhead = self.figure("tool overhead: regen wall - downtime - backup", "s", target="<= 5 s",
                               passes=lambda v: v <= 5.0)
        wall_fig = self.figure("  regen wall time (connect + regen)", "s")
        backup_fig = self.figure("  of which backup (take_backup)", "s")
        discovery_fig = self.figure("  of which discovery", "s")
        after_fig = self.figure("  of which service starts after the window", "s")
        rest_fig = self.figure("  of which the rest (connect, plan, journal, verify, round trips)", "s")
        commands = self.figure("remote commands per regen", "")
        # The first restart of a freshly booted master's JVM is slower than the later ones: not measured.
        say(f"warm-up restart (not measured): {self.bare_restart(master):.2f}s")
        for i in range(self.regen_rounds):
            # Alternate which of the pair goes first, so neither always follows the other's agent run.
            if i % 2 == 0:
                bare = self.bare_restart(master)
                overlapped = self.bare_restart(master, overlap=True)
            folder = self.folder(f"regen-{i}")
            timed = Timings()  # the run's own events: discovery-*, backup-*, window-closed
            started = time.monotonic()
            with connect(target) as remote:
                result = regen(remote, RegenOptions(backup_dir=str(folder)),
                               Console(assume_yes=True, out=io.StringIO()), listeners=(timed,))
            wall = time.monotonic() - started
            if i % 2 == 1:
                overlapped = self.bare_restart(master, overlap=True)
                bare = self.bare_restart(master)
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
            say(f"regen round {i + 1} ({self.others()}): bare window {bare:.2f}s (overlapped {overlapped:.2f}s), "
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

    def bench_fab_rss(self, master: StagingMaster) -> None:
        fab = Path(sys.executable).parent / "fab"
        rss = self.figure("peak RSS of `fab ... regen --yes`", "MB")
        for i in range(self.rounds):
            folder = self.folder(f"fab-{i}")
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

    # --- fleet ------------------------------------------------------------------------------------

    def bench_fleet(self, masters: list[StagingMaster], cpus: float | None = None) -> None:
        """`backup` on one master, then on all at once; with `cpus`, every master is held to that CPU share."""
        targets = [target_of(m) for m in masters]
        cores = len(os.sched_getaffinity(0))
        if cpus:
            ratio = self.figure(f"fleet ratio: backup on {len(masters)} in parallel / on 1 "
                                f"(each master {cpus:g} CPU)", "x", target="<= 1.5", passes=ratio_target(1.5))
            for master in masters:
                set_cpu_share(master, cpus)
        else:
            ratio = self.figure(f"fleet ratio, the {len(masters)} masters sharing this machine's {cores} cores", "x")
        one_fig = self.figure("  backup command on 1 master (via fleet.run_parallel)", "s")
        all_fig = self.figure(f"  backup command on {len(masters)} masters, max_workers={len(masters)}", "s")
        here_fig = self.figure("  CPU of one backup command: pe-remote here", "s")
        there_fig = self.figure("  CPU of one backup command: the master (container)", "s")
        bound_fig = own_bound_fig = pair_fig = None
        if not cpus:
            bound_fig = self.figure(f"  lower bound on this machine: {len(masters)} x CPU of one / cores", "x")
            own_bound_fig = self.figure("  lower bound from pe-remote's own CPU (masters elsewhere)", "x")
            pair_fig = self.figure(f"  backup on {cores} masters in parallel (one per core) / on 1", "x") \
                if 1 < cores < len(masters) else None
        try:
            self._fleet_rounds(masters, targets, cores, ratio, one_fig, all_fig, here_fig, there_fig, bound_fig,
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

    def _fleet_rounds(self, masters, targets, cores, ratio, one_fig, all_fig, here_fig, there_fig, bound_fig,
                      own_bound_fig, pair_fig) -> None:
        last_table = ""
        for i in range(self.rounds):
            folder = self.folder(f"fleet-{i}")

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
        self.tables.append(last_table)
        if bound_fig is not None and bound_fig.samples:
            bound_fig.note = (f"the {len(masters)} masters are containers on this machine's {cores} cores: one backup "
                              f"command keeps about one core busy (gzip and discovery's puppet runs on the master, "
                              f"decryption here), so {len(masters)} at once cannot take less than {len(masters)} x "
                              f"its CPU time / {cores} cores, however well pe-remote overlaps them; with each "
                              f"master on its own machine only pe-remote's own CPU is shared (next line)")

    # --- all --------------------------------------------------------------------------------------

    def run(self, fleet: bool = True, only: tuple[str, ...] = ()) -> int:
        say(f"starting a {FLAVOR} staging master with {AGENT_CERTS} agent certs in its CA ...")
        [first] = self.masters.start(1)
        for name, step in (("backup", self.bench_backup), ("ciphers", self.bench_ciphers),
                           ("regen", self.bench_regen), ("fab", self.bench_fab_rss)):
            if only and name not in only:
                continue
            say(f"--- {name} ({self.others()})")
            self._guarded(name, step, first)
        if fleet:
            say(f"starting {FLEET_SIZE - 1} more masters for the fleet figure ...")
            try:
                others = self.masters.start(FLEET_SIZE - 1)
            except Exception as exc:  # noqa: BLE001
                self.figure("fleet ratio", "x", target="<= 1.5", error=f"could not start the masters: {exc}")
            else:
                fleet = [first, *others]
                say(f"--- fleet, masters sharing the cores ({self.others()})")
                self._guarded("fleet", self.bench_fleet, fleet)
                share = fleet_cpu_share(len(fleet))
                say(f"--- fleet, each master held to {share:g} CPU ({self.others()})")
                self._guarded("fleet", self.bench_fleet, fleet, share)
        return 0

    def others(self) -> str:
        """Staging masters of other runs (tests, CI) on this machine: they compete for the same cores."""
        mine = {m.container.get_wrapped_container().id for m in self.masters.running}
        proc = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label={CONTAINER_LABEL}"],
                              capture_output=True, text=True)
        theirs = [cid for cid in proc.stdout.split() if cid not in mine]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return f"load average {load}; {len(theirs)} staging master(s) of other runs on this machine"

    def _guarded(self, name: str, step, *args) -> None:
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - report it and measure the rest
            traceback.print_exc()
            self.figure(f"{name}", "", error=f"{type(exc).__name__}: {exc}")


class _CountingSink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)


def _peak_rss_kb(command: list[str], cwd: Path) -> tuple[int, int, str]:
    """Run `command`; (its peak RSS in KiB, its exit code, its output)."""
    if Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True, text=True)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if found:
            return int(found[1]), proc.returncode, proc.stdout + proc.stderr
    # No GNU time: a fresh Python parent whose only child is the command.
    probe = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, *command], cwd=cwd, capture_output=True, text=True)
    kb, code = proc.stderr.strip().splitlines()[-1].split()
    return int(kb), int(code), proc.stdout + proc.stderr


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every figure (default 3)")
    parser.add_argument("--regen-rounds", type=int, default=5,
                        help="repetitions of the regen / bare restart pair (default 5: puppetserver's start "
                             "varies by a few seconds, the downtime target is 10%%)")
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet figure (needs 4 masters)")
    parser.add_argument("--only", default="", help="comma-separated phases of the first master to run "
                        "(backup, ciphers, regen, fab; default: all)")
    args = parser.parse_args(argv)
    print("pe-remote benchmarks")
    print(machine(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="pe-remote-bench-"))
    bench = Bench(max(1, args.rounds), work, args.regen_rounds)
    try:
        bench.run(fleet=not args.no_fleet, only=tuple(p for p in args.only.split(",") if p))
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
