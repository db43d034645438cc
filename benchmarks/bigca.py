"""A big CA on a staging master: 50,000 signed agent certs, made in a few seconds inside the container.

Why random bodies: what matters for the backup's speed is how many bytes tar
reads and how well gzip compresses them. A real agent cert is ~1,950-2,100
bytes of PEM (the staging master's own signed cert is 2,086), and its DER is
mostly a public key modulus and a signature: high-entropy bytes. Copying one
real cert with a few bytes changed would let gzip's 32 KiB window find whole
earlier certs and shrink the tarball unrealistically; making 50,000 real certs
with openssl needs 50,000 RSA key pairs (hours on 2 cores). So each cert here
is random bytes of a real DER length (1,400-1,560 bytes, so 1,950-2,170 bytes
of PEM) base64-encoded in PEM armor: the same size and at most slightly less
compressible than real certs (real ones share their issuer and extension
bytes), i.e. a tarball slightly bigger than a real CA's (78.5 MB for ~103 MB of
certs), which makes the pull harder, not easier. inventory.txt gets one line per
cert in Puppet's format (serial, not-before, not-after, /CN=...), and every
file is owned by puppet with mode 0640 like the CA's own.

The generator is Ruby because every Puppet master has it (puppet is Ruby);
one process writes all the files (~5 s for 50,000).
"""

from __future__ import annotations

import shlex

AGENT_CERTS = 50_000

GENERATOR = r'''
n = Integer(ARGV[0]); dir = ARGV[1]
signed = File.join(dir, "signed")
rng = Random.new(20240101)
inventory = File.open(File.join(dir, "inventory.txt"), "a")
t0 = Time.utc(2024, 1, 1).to_i
n.times do |i|
  name = format("agent-%05d.nodes.pe-remote.test", i)
  body = [rng.bytes(1400 + rng.rand(161))].pack("m0").scan(/.{1,64}/).join("\n")
  File.write(File.join(signed, name + ".pem"), "-----BEGIN CERTIFICATE-----\n#{body}\n-----END CERTIFICATE-----\n")
  nb = Time.at(t0 + rng.rand(60_000_000)).utc
  inventory.write(format("0x%04x %s %s /CN=%s\n", i + 1000, nb.strftime("%Y-%m-%dT%H:%M:%SUTC"),
                         (nb + 5 * 365 * 86400).strftime("%Y-%m-%dT%H:%M:%SUTC"), name))
end
inventory.close
'''


def fill_ca(master, count: int = AGENT_CERTS) -> dict:
    """Add `count` signed agent certs to the master's CA; returns what is there afterwards."""
    cadir = master.flavor.cadir
    script = "/root/pe-remote-bench-bigca.rb"
    q = shlex.quote
    master.check(f"cat > {script} <<'RUBY'\n{GENERATOR}\nRUBY")
    owner = master.check(f"stat -c %U:%G {q(cadir)}").strip()
    master.check(f"ruby {script} {count} {q(cadir)} && rm -f {script} && "
                 f"chown -R {q(owner)} {q(cadir)} && find {q(cadir)}/signed -type f -exec chmod 0640 {{}} +")
    dirs = " ".join(q(d) for d in dict.fromkeys((master.flavor.ssldir, cadir)))
    files, apparent = master.check(
        f"ls {q(cadir)}/signed | wc -l; du -sbc {dirs} | tail -n1 | cut -f1").split()
    return {"signed": int(files), "bytes": int(apparent)}
