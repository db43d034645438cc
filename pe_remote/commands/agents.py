"""An agent's commands: read where it keeps its cached CA bundle (`<ssldir>/certs/ca.pem`) and its own
cert; put a new CA bundle there, the old file kept aside. `pe_remote.agents` decides when.

The facts script finds the agent's settings itself (Puppet by absolute path, as discovery does) and
sends every value it found base64-encoded: they are the agent's to say, so they are validated on the
workstation before any of them reaches a command that changes something.
"""

from __future__ import annotations

from pe_remote.commands import crl
from pe_remote.commands.facts import _cert_with_key
from pe_remote.commands.sections import encoded, mark
from pe_remote.commands.shell import join, q
from pe_remote.flavors import PUPPET_PATHS

CA_MODE = "0644"  # as Puppet keeps certs/ca.pem (its localcacert setting)

# ARGV: the new bundle (base64), the output file. Written by rewrite_in_place's Ruby, as the CA files
# are; `unpack("m")` and File.open's mode work from Ruby 1.9 (PE 3.7's agents) on.
WRITE_RUBY = r'''
data, out_path = ARGV
pem = data.unpack("m")[0]
abort "the new CA bundle holds no certificate" unless pem.include?("-----BEGIN CERTIFICATE-----")
File.open(out_path, "wb", 0644) { |f| f.write(pem) }
'''


def agent_facts() -> str:
    """Read-only: sections `uid`, `puppet` (the path found, empty: none), `ssldir` and `certname`
    (base64, from `puppet config print ... --section agent`), `ca` (certs/ca.pem) and `cert` (the agent's
    own certs/<certname>.pem), base64 each, empty when absent."""
    candidates = join(PUPPET_PATHS)
    return "\n".join([
        f"{mark('uid')}; id -u",
        f"P=; for p in {candidates}; do if [ -x \"$p\" ]; then P=$p; break; fi; done",
        f"{mark('puppet')}; echo \"$P\"",
        # Both settings in one Puppet start (the slow part); `name = value` lines, as discovery reads them.
        "CFG=; [ -z \"$P\" ] || CFG=$(\"$P\" config print certname ssldir --section agent 2>/dev/null)",
        "get() { printf '%s\\n' \"$CFG\" | sed -n \"s/^$1 = //p\" | head -n1; }",
        "SSL=$(get ssldir); CN=$(get certname); CA=$SSL/certs/ca.pem; HC=$SSL/certs/$CN.pem",
        mark("ssldir"), encoded("printf '%s' \"$SSL\""),
        mark("certname"), encoded("printf '%s' \"$CN\""),
        _cert_with_key("ca", '"$CA"', None),
        # A certname with a slash would read some other .pem: refused on the workstation anyway.
        "case \"$CN\" in ''|*/*) ;; *)",
        _cert_with_key("cert", '"$HC"', None),
        ";; esac",
    ])


def ca_bundle_path(ssldir: str) -> str:
    return f"{ssldir.rstrip('/')}/certs/ca.pem"


def replace_ca_bundle(ssldir: str, bundle_b64: str, aside: str) -> str:
    """Copy certs/ca.pem to `aside` (cp -p: mode and owner kept), write the new bundle beside ca.pem and
    rename it over (owner kept, mode 0644). Sections: `status` (the change's exit status), `output` (what
    it said, base64), `sha256` of the ca.pem now there and `aside_sha256` of the copy (empty: none).
    `ssldir` and `aside` must have been validated by the caller (pe_remote.agents)."""
    ca = ca_bundle_path(ssldir)
    # Braced: rewrite_in_place is a list (find Ruby; run it ...), which a failed copy must not start.
    change = (f"cp -p {q(ca)} {q(aside)} && {{ {crl.rewrite_in_place(ca, WRITE_RUBY, [bundle_b64])}\n}} "
              f"&& chmod {CA_MODE} {q(ca)}")
    return "\n".join([
        # $( ) keeps the change's exit status and its output apart; its output travels encoded.
        f"O=$( {{ {change}\n}} 2>&1 ); r=$?",
        f"{mark('status')}; echo \"$r\"",
        mark("output"), encoded("printf '%s\\n' \"$O\""),
        mark("sha256"), _sha256_of(ca),
        mark("aside_sha256"), _sha256_of(aside),
    ])


def _sha256_of(path: str) -> str:
    return f"[ ! -f {q(path)} ] || sha256sum < {q(path)} | cut -d' ' -f1"
