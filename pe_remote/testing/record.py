"""Record discovery's output on fresh staging masters, for the unit tests (tests/data/recorded/).

    python -m pe_remote.testing.record [flavor ...]

Each master runs the discovery script as root (docker exec, not SSH: the output is the same) and is
removed again. Re-record whenever the discovery script's output changes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pe_remote.commands.discovery import discovery_script
from pe_remote.testing.master import ClientKey, start_master

FLAVORS = ("pe37", "pe2016", "puppet5", "oss7", "pe2019", "oss8")
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "recorded"


def record(flavor: str, folder: Path) -> str:
    master = start_master(flavor, ClientKey.create(folder), folder / "known_hosts")
    try:
        code, out = master.exec(discovery_script())
        if code != 0:
            raise SystemExit(f"discovery exited {code} on the {flavor} master: {out[-1000:]}")
        return out
    finally:
        master.stop()


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for flavor in argv or FLAVORS:
            text = record(flavor, Path(tmp))
            (OUT / f"{flavor}.txt").write_text(text)
            print(f"{flavor}: {len(text.splitlines())} lines -> {OUT / (flavor + '.txt')}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
