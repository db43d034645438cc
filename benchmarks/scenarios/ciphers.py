"""ciphers: a raw channel `cat` of the tarball under each cipher paramiko 5 offers that the
master accepts (information for the cipher choice).
"""

from __future__ import annotations

import time

import pe_remote.backup as backup_module
from pe_remote.connection import connect
from pe_remote.testing.master import StagingMaster

from benchmarks.harness import Bench, _CountingSink, say, target_of


def run(bench: Bench, master: StagingMaster) -> None:
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
                fig = bench.figure(f"  raw channel, {label}", "MB/s")
                for _ in range(bench.rounds):
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
