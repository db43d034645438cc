"""`make demo`: regen against a throwaway PE 3.7 staging master, with the real `fab`.

Starts a master, runs `fab -H root@127.0.0.1:PORT -i KEY regen --yes` with the
master's known_hosts line, prints the backup path and the old and new serial,
and removes the master again.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pe_remote.testing.master import ClientKey, start_master

SERIAL_CMD = "openssl x509 -in {cert} -noout -serial"


def main(flavor: str = "pe37") -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="pe-remote-demo-"))
    print(f"Starting a throwaway {flavor} staging master (the first run builds its image) ...", flush=True)
    started = time.monotonic()
    master = start_master(flavor, ClientKey.create(work / "key"), work)
    try:
        print(f"Master ready at {master.target} after {time.monotonic() - started:.0f}s", flush=True)
        cert = f"{master.flavor.ssldir}/certs/{master.certname}.pem"
        old = master.check(SERIAL_CMD.format(cert=cert)).strip()
        backups = Path(".demo/backups").resolve()
        fab = Path(sys.executable).with_name("fab")
        command = [str(fab), "-H", master.target, "-i", str(master.key_path), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(backups)]
        print("$ " + " ".join(command), flush=True)
        code = subprocess.call(command, cwd=Path(__file__).resolve().parents[2])
        new = master.check(SERIAL_CMD.format(cert=cert)).strip()
        tarballs = sorted(backups.rglob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
        print()
        print(f"fab exit code: {code}")
        print(f"backup:        {tarballs[-1] if tarballs else 'none'}")
        print(f"old cert:      {old}")
        print(f"new cert:      {new}")
        return code
    finally:
        master.stop()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
