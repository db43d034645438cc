"""The CRL's commands: read the CA's CRL, CA cert and the host's CRL copy; re-sign the CA's CRLs in
place with their issuers' keys (same entries, CRL number + 1, a fresh nextUpdate); copy to the host CRL.

The re-signing runs in the master's Ruby (RUBY_PATHS) with its OpenSSL: the CA key is read there and
never travels. The new CRL is written beside the old one and moved over it with the old one's owner
and mode, so a reader sees the old CRL or the new one, never half of either.
"""

from __future__ import annotations

from pe_remote.commands.sections import file_encoded, mark
from pe_remote.commands.shell import join, q
from pe_remote.flavors import RUBY_PATHS

# ARGV: CRL file, CA bundle, days, output file, then the CA keys that may sign. EVERY CRL of the file
# (Puppet 6+ keeps the root CA's after the signing CA's, and it ends too) whose issuer's key is among
# the keys is re-signed by it; a CRL whose issuer's key is not there is kept byte for byte.
RESIGN_RUBY = r'''
require "openssl"
crl_path, ca_path, days, out_path, *key_paths = ARGV
blocks = File.read(crl_path).scan(/-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\n?/m)
abort "no CRL in #{crl_path}" if blocks.empty?
cas = File.read(ca_path).scan(/-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----/m).map { |c| OpenSSL::X509::Certificate.new(c) }
keys = key_paths.select { |k| File.exist?(k) }.map { |k| OpenSSL::PKey.read(File.read(k)) }
now = Time.now.utc
out = blocks.each_with_index.map do |block, i|
  crl = OpenSSL::X509::CRL.new(block)
  ca = cas.find { |c| c.subject.to_s == crl.issuer.to_s }
  abort "the CA bundle #{ca_path} holds no issuer of CRL #{i + 1} (#{crl.issuer})" unless ca
  abort "CRL #{i + 1} in #{crl_path} is not signed by #{ca.subject}" unless crl.verify(ca.public_key)
  key = keys.find { |k| ca.check_private_key(k) }
  abort "the signing CA's key is not among #{key_paths.join(", ")}" if key.nil? && i == 0
  next(block.end_with?("\n") ? block : block + "\n") unless key
  number = crl.extensions.find { |e| e.oid == "crlNumber" }
  n = number ? OpenSSL::ASN1.decode(OpenSSL::ASN1.decode(number.to_der).value.last.value).value.to_i : 0
  crl.extensions = crl.extensions.reject { |e| e.oid == "crlNumber" } +
                   [OpenSSL::X509::Extension.new("crlNumber", OpenSSL::ASN1::Integer.new(n + 1))]
  crl.last_update = now
  crl.next_update = now + Integer(days) * 86400
  digest = crl.signature_algorithm[/sha(512|384|256|224)/i] || "sha256"
  crl.sign(key, OpenSSL::Digest.new(digest.upcase))
  puts "#{crl.issuer}: crlNumber #{n} -> #{n + 1}, nextUpdate #{crl.next_update.utc}"
  crl.to_pem
end
File.open(out_path, "w", 0600) { |f| f.write(out.join) }
'''


def ruby_script(script: str, args: list[str]) -> str:
    """Shell that runs `script` with the first Ruby of RUBY_PATHS there is, `args` as its ARGV."""
    candidates = join(RUBY_PATHS)
    return (f"R=; for r in {candidates}; do if [ -x \"$r\" ]; then R=$r; break; fi; done; "
            f"[ -n \"$R\" ] || {{ echo 'no Ruby found (looked in {', '.join(RUBY_PATHS)})'; exit 1; }}; "
            f"\"$R\" -e {q(script)} " + join(args))


def rewrite_in_place(path: str, script: str, args_before: list[str], args_after: list[str] = ()) -> str:
    """Shell: `script` writes the new `path` beside it (its ARGV: args_before, the new file, args_after),
    which then takes the old one's owner and mode and replaces it in one rename."""
    new = path + ".pe-remote-new"
    return (f"{ruby_script(script, [*args_before, new, *args_after])} && "
            f"chown --reference={q(path)} {q(new)} && chmod --reference={q(path)} {q(new)} && mv {q(new)} {q(path)}")


def resign(crl: str, keys: list[str], ca_bundle: str, days: int) -> str:
    """Re-sign the CA's CRLs in place, each with its issuer's key among `keys` (see RESIGN_RUBY)."""
    return rewrite_in_place(crl, RESIGN_RUBY, [crl, ca_bundle, str(int(days))], list(keys))


def differs_from(path: str, sha256: str) -> str:
    """Exit 0 only if the file is there and is not the one of sha256 `sha256`."""
    return (f"[ -s {q(path)} ] && [ \"$(sha256sum < {q(path)} | cut -d' ' -f1)\" != {q(sha256)} ] "
            f"|| {{ echo {q(f'{path} is unchanged')}; exit 1; }}")


def copy_over(source: str, target: str) -> str:
    """Copy `source`'s bytes into `target`, keeping `target`'s owner and mode (a new file: `source`'s)."""
    return (f"if [ -e {q(target)} ]; then cat {q(source)} > {q(target)}; "
            f"else cp -p {q(source)} {q(target)}; fi")


def from_ca_endpoint(path: str, hostcert: str, hostkey: str) -> str:
    """Shell: what the CA endpoint `path` on 127.0.0.1:8140 hands an agent, base64. Asked with the
    master's own cert, as an agent asks (Puppet 5's auth.conf refuses the CRL to an anonymous client)."""
    url = f"https://127.0.0.1:8140/puppet-ca/v1/{path}?environment=production"
    return f"curl -sk --max-time 20 --cert {q(hostcert)} --key {q(hostkey)} {q(url)} | base64"


def crl_files(ca_crl: str, host_crl: str, ca_cert: str, server: str, hostcert: str, hostkey: str,
              root_key: str) -> str:
    """The CRL facts: the CA's CRL, the host's copy, the CA bundle (base64 each), the CRL the CA
    endpoint on 8140 serves, whether `server`'s unit can reload, and whether a root CA key is there."""
    return "\n".join([
        mark("root_key"), f"if [ -f {q(root_key)} ]; then echo present; else echo absent; fi",
        mark("ca_crl"), file_encoded(ca_crl), mark("host_crl"), file_encoded(host_crl),
        mark("ca_cert"), file_encoded(ca_cert),
        mark("served_crl"), from_ca_endpoint("certificate_revocation_list/ca", hostcert, hostkey),
        mark("can_reload"), f"systemctl show -p CanReload {q(server + '.service')} 2>/dev/null || true",
    ])
