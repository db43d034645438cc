"""What the benchmark's scenarios share: the staging masters, ssh and CPU helpers, the backup checks, `Bench`."""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from pe_remote.backup import sha256_file
from pe_remote.inventory import Target, parse_target
from pe_remote.testing.master import CONTAINER_LABEL, ClientKey, StagingMaster, start_master

from benchmarks.bigca import AGENT_CERTS, fill_ca
from benchmarks.figures import Figure

REPO = Path(__file__).resolve().parents[1]
FLAVOR = "pe37"
MAX_MASTERS = 4
FLEET_SIZE = 4
REMOTE_BACKUPS = "/root/pe-remote-backups"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {message}", flush=True)


def ratio_target(limit: float):
    return lambda value: value <= limit


class Masters:
    """The staging masters this run started: at most MAX_MASTERS, all stopped by `stop_all`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.key = ClientKey.create(work / "key")
        self.running: list[StagingMaster] = []
        self.lock = threading.Lock()

    def start(self, count: int, flavor: str = FLAVOR, agent_certs: int = AGENT_CERTS) -> list[StagingMaster]:
        """`count` masters of `flavor`, their CA filled with `agent_certs` signed certs (0: as built)."""
        with self.lock:
            if len(self.running) + count > MAX_MASTERS:
                raise RuntimeError(f"refusing to run more than {MAX_MASTERS} masters at once")
        started: list[StagingMaster] = []
        errors: list[BaseException] = []

        def one() -> None:
            try:
                master = start_master(flavor, self.key, self.work / "known_hosts", timeout=600)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            with self.lock:
                self.running.append(master)
            try:
                if agent_certs:
                    stats = fill_ca(master, agent_certs)
                    say(f"master {master.target} ready; CA: {stats['signed']} signed certs, "
                        f"SSL folders {stats['bytes'] / 1e6:.0f} MB")
                else:
                    say(f"{flavor} master {master.target} ready")
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

    def stop(self, master: StagingMaster) -> None:
        with self.lock:
            self.running.remove(master)
        master.stop()

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
    """One run's shared state: its rounds, work folder and masters, the figures and tables it prints."""

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

    def others(self) -> str:
        """Staging masters of other runs (tests, CI) on this machine: they compete for the same cores."""
        mine = {m.container.get_wrapped_container().id for m in self.masters.running}
        proc = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label={CONTAINER_LABEL}"],
                              capture_output=True, text=True)
        theirs = [cid for cid in proc.stdout.split() if cid not in mine]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return f"load average {load}; {len(theirs)} staging master(s) of other runs on this machine"

    def _guarded(self, name: str, step, *args) -> None:
        """Run the scenario `step(self, *args)`; an exception becomes an ERROR figure named `name`."""
        try:
            step(self, *args)
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
