"""The CA cert's commands: re-sign every cert of the CA bundle with a new validity, the same key,
serial, subject, issuer and extensions (as Puppet's ca_extend does for a single CA), and put the
bundle where the generation keeps it.

The re-signing runs in the master's Ruby with its OpenSSL: the CA keys (the signing CA's, and the
root CA's where Puppet 6+ keeps one beside it) are read there and never travel. Each cert is signed
by the key of its issuer: a self-signed root by its own key, the intermediate by the root's.
"""

from __future__ import annotations

from pe_remote.commands.crl import from_ca_endpoint, rewrite_in_place
from pe_remote.commands.sections import file_encoded, mark
from pe_remote.commands.shell import join, q

# ARGV: CA bundle, years, output file, key files... Every cert of the bundle is renewed; a cert whose
# issuer's key is not among the keys given stops the script before anything is written.
EXTEND_RUBY = r'''
require "openssl"
bundle_path, years, out_path, *key_paths = ARGV
certs = File.read(bundle_path).scan(/-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----/m)
  .map { |pem| OpenSSL::X509::Certificate.new(pem) }
abort "no cert in #{bundle_path}" if certs.empty?
keys = key_paths.select { |p| File.file?(p) }.map { |p| OpenSSL::PKey.read(File.read(p)) }
now = Time.now.utc
renewed = certs.map do |old|
  issuer = certs.find { |c| c.subject.to_der == old.issuer.to_der } or abort "the issuer of #{old.subject} is not in the bundle"
  key = keys.find { |k| issuer.check_private_key(k) } or abort "no key of #{issuer.subject} among #{key_paths.join(', ')}"
  cert = OpenSSL::X509::Certificate.new
  cert.version = old.version
  cert.serial = old.serial
  cert.subject = old.subject
  cert.issuer = old.issuer
  cert.public_key = old.public_key
  cert.not_before = now - 86400
  cert.not_after = now + Integer(years) * 365 * 86400
  cert.extensions = old.extensions
  digest = old.signature_algorithm[/sha(512|384|256|224)/i] || "sha256"
  cert.sign(key, OpenSSL::Digest.new(digest.upcase))
  abort "the renewed #{old.subject} does not verify" unless cert.verify(issuer.public_key)
  cert
end
File.open(out_path, "w", 0600) { |f| f.write(renewed.map(&:to_pem).join) }
renewed.each { |c| puts "#{c.subject}: serial #{c.serial}, notAfter #{c.not_after.utc}" }
'''


def extend(bundle: str, keys: list[str], years: int) -> str:
    """Renew every cert of the CA bundle in place (see the module docstring)."""
    return rewrite_in_place(bundle, EXTEND_RUBY, [bundle, str(int(years))], keys)


def agent_with_old_ca(puppet: str, lock_flags: tuple[str, ...], old_bundle_b64: str, scratch: str) -> str:
    """Shell: an agent run (--noop) on the master that trusts only the OLD CA bundle, as an agent that
    has not fetched the new one does; section `agent` holds its exit status, `agent_output` the end of
    what it said (base64)."""
    agent = join([puppet, "agent", "-t", "--noop", *lock_flags, "--localcacert"])
    return (f"T=$(mktemp {q(scratch + '/.old-ca.XXXXXX')}) || exit 1; O=$T.out; "
            f"printf '%s' {q(old_bundle_b64)} | base64 -d > \"$T\"; "
            f"{agent} \"$T\" >\"$O\" 2>&1 </dev/null; r=$?; {mark('agent')}; echo \"$r\"; "
            f"{mark('agent_output')}; tail -c 2000 \"$O\" | base64; rm -f \"$T\" \"$O\"")


def ca_files(bundle: str, host_bundle: str, hostcert: str, hostkey: str, root_key: str) -> str:
    """The CA facts: the CA bundle, the host's copy, the master's cert (base64 each), whether a root CA
    key is kept beside the CA's, and the CA cert the CA endpoint on 8140 serves."""
    return "\n".join([mark("ca_bundle"), file_encoded(bundle), mark("host_bundle"), file_encoded(host_bundle),
                      mark("hostcert"), file_encoded(hostcert), mark("root_key"),
                      f"if [ -f {q(root_key)} ]; then echo present; else echo absent; fi",
                      mark("served_ca"), from_ca_endpoint("certificate/ca", hostcert, hostkey)])
