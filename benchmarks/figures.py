"""Figures (samples, median, target, PASS/FAIL) and the machine they were measured on."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Figure:
    name: str
    unit: str  # "x" for a ratio, "s", "MB", "MB/s", ...
    samples: list[float] = field(default_factory=list)
    target: str = ""  # e.g. "<= 1.10"; empty: measured and reported, no target
    passes: Callable[[float], bool] | None = None
    note: str = ""
    error: str | None = None
    value: float | None = None  # set when the figure is not the median of its samples (a ratio of medians)

    @property
    def median(self) -> float | None:
        if self.value is not None:
            return self.value
        return statistics.median(self.samples) if self.samples else None

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.median is None:
            return "n/a"
        if self.passes is None:
            return "info"
        return "PASS" if self.passes(self.median) else "FAIL"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("s",):
        return f"{value:.2f} s"
    if unit in ("MB", "MB/s"):
        return f"{value:.0f} {unit}"
    if unit == "":
        return f"{value:g}"
    return f"{value:g} {unit}"


def render(figures: list[Figure]) -> str:
    rows = [("figure", "median", "target", "result", "runs")]
    for f in figures:
        runs = " ".join(fmt(s, f.unit).replace(" ", "") for s in f.samples) if f.samples else ""
        rows.append((f.name, fmt(f.median, f.unit), f.target or "-", f.verdict, runs))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    notes = [(f.name, f.error or f.note) for f in figures if f.error or f.note]
    if notes:
        lines.append("")
        lines.extend(f"* {name}: {text}" for name, text in notes)
    return "\n".join(lines)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def machine() -> str:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    avail_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                     if line.startswith("MemAvailable:")), 0)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    hypervisor = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                       if line.startswith("Hypervisor vendor:")), "")
    if hypervisor:
        model += f" ({hypervisor} guest: {nproc} vCPUs)"
    import fabric
    import paramiko
    docker_version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                    capture_output=True, text=True).stdout.strip() or "?"
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return (f"machine: nproc {nproc}; CPU {model}; memory {mem_kb / 1048576:.1f} GiB "
            f"({avail_kb / 1048576:.1f} GiB available); load average {load}\n"
            f"software: {platform.platform()}; Python {platform.python_version()}; paramiko {paramiko.__version__}; "
            f"fabric {fabric.__version__}; Docker {docker_version}; {ssh_version}")
