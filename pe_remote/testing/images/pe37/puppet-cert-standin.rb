#!/usr/bin/ruby
# frozen_string_literal: true
#
# puppet-cert-standin.rb -- a TEST STAND-IN for Puppet 3's `puppet cert`.
#
# THIS IS NOT PUPPET'S CODE. It was written for the pe-remote test fixtures,
# which emulate a Puppet Enterprise 3.7 master on Debian's Puppet 7 /
# puppetserver 7. `puppet cert` was removed in Puppet 6, so the image's
# /opt/puppet/bin/puppet runs
#     ruby /opt/puppet/lib/puppet-cert-standin.rb <subcommand> [args]
# whenever the first argument is `cert`. This script does to the real CA files
# (the ones puppetserver uses) what Puppet 3.x's `puppet cert` did, using only
# Ruby's standard library:
#
#   clean <name>...      revoke (CRL entry, reason keyCompromise), then remove
#                        the name's cert, CSR and key files
#   generate <name>...   [--dns_alt_names a,b] key + CSR + signed cert
#   list [--all] [<name>...]
#   print <name>...
#
# Behaviour copied from Puppet 3.x (lib/puppet/application/cert.rb,
# ssl/certificate_authority.rb, certificate_factory.rb, certificate_request.rb,
# certificate_revocation_list.rb, inventory.rb and the ssl_file termini), with
# `puppet cert` running in `ca_location = :local` for clean/generate (the
# ssldir copies are the "cache" of the CA copies):
#   * names are downcased; every failure prints "Error: ..." on stderr and
#     exits 24, as Puppet 3's `puppet cert` did (23 if the CA can't be loaded);
#     only command-line misuse (unknown subcommand/option) exits 1;
#   * clean revokes first, for every name, and only then deletes files. The
#     serial comes from ssldir/certs/<name>.pem (if not expired), else
#     cadir/signed/<name>.pem, else from every inventory.txt line for
#     /CN=<name> (a name of the form 0x<hex> is a serial). If none is found:
#     "Error: Could not find a serial number for <name>", exit 24, nothing is
#     deleted -- Puppet 3.7 did this even when only a CSR existed (cleaning a
#     bare CSR only became possible in Puppet 5, PUP-1916);
#   * each revocation re-signs the CRL: lastUpdate now, nextUpdate now + 5
#     years, CRL number + 1, SHA256, and writes it to cadir/ca_crl.pem and
#     ssldir/crl.pem;
#   * clean removes, with Puppet 3's notices and in its order, cadir/signed,
#     ssldir/certs, cadir/requests, ssldir/certificate_requests and
#     ssldir/private_keys; ssldir/public_keys/<name>.pem goes silently with
#     the private key (Puppet 3's key terminus did that without a notice);
#   * generate refuses ("A Certificate already exists for <name>") if
#     ssldir/certs or cadir/signed has the cert; REUSES an existing
#     ssldir/private_keys/<name>.pem (Puppet 3 did: Host#generate_key only ran
#     "unless key"); refuses, after that, if a CSR already exists; otherwise
#     writes the CSR to cadir/requests and ssldir/certificate_requests, signs
#     it and removes both CSR copies (indirector destroy removed the cache copy
#     too);
#   * subjectAltName: the alt names plus the certname itself, sorted and
#     de-duplicated, as Puppet 3 built them. For the master's own certname,
#     `dns_alt_names` from puppet.conf is used when --dns_alt_names is not
#     given (Host#generate_certificate_request did that). Without alt names
#     there is no SAN extension;
#   * cert: version 3, serial from cadir/serial (written back +1 as "%04X"
#     like Puppet 3 and puppetserver), notBefore now - 24h, notAfter now + 5
#     years (Puppet 3's default ca_ttl), issuer = the signing CA cert,
#     extensions nsComment "Puppet Ruby/OpenSSL Internal Certificate",
#     [subjectAltName], keyUsage critical digitalSignature,keyEncipherment,
#     extendedKeyUsage critical serverAuth,clientAuth, basicConstraints
#     critical CA:FALSE, subjectKeyIdentifier hash, authorityKeyIdentifier
#     keyid; SHA256; one inventory.txt line "0x%04x <nb> <na> /CN=<name>".
#   * RSA key size is Puppet's `keylength` setting (4096 by default, the
#     Puppet 3 default too).
#
# Deliberate differences from Puppet 3 (this CA is puppetserver 7's):
#   * cadir/ca_crt.pem is a bundle (intermediate "Puppet CA: ..." first, then
#     the root) and cadir/ca_crl.pem holds two CRLs (intermediate's first, then
#     root's). Puppet 3 read only the first PEM block and would have written
#     the CRL file back without the root's CRL. This script signs with the
#     certificate in ca_crt.pem that matches ca_key.pem, updates the CRL
#     issued by it, and keeps every other block of ca_crl.pem byte for byte;
#     ssldir/crl.pem gets the whole bundle (Puppet 7 agents and puppetserver
#     check the CRLs of the whole chain).
#   * `list` verifies signed certs against the whole CA bundle and all its
#     CRLs (Puppet 3: CRL_CHECK | CRL_CHECK_ALL with one CRL).
#   * an alt name that is an IPv4/IPv6 address becomes IP:<addr>, not
#     DNS:<addr> as in Puppet 3 (which then refused non-DNS SANs when signing).
#   * names must match \A[a-z0-9._-]+\z after downcasing (Puppet 3 accepted
#     any printable ASCII but "/"); alt names must be host names or IPs.
#   * a serial that is already on the CRL is not added a second time.
#   * files are written atomically (temp file in the same directory, chmod,
#     chown, rename). A replaced file keeps its owner and mode; a new file gets
#     mode 0640 and the owner/group of its directory; a missing directory is
#     created 0750 with the owner/group of its parent.
#   * only clean, generate, list and print exist (no sign, revoke, verify,
#     fingerprint, reinventory); autosign and csr_attributes.yaml are ignored.
#
# Paths: ssldir and cadir (plus certname, dns_alt_names, keylength) come from
# one run of `/usr/bin/puppet config print ... --section master`. For tests,
# PUPPET_STANDIN_SSLDIR and PUPPET_STANDIN_CADIR override the two directories
# (if both are set, a failing `puppet config print` is not fatal).

require 'openssl'
require 'optparse'
require 'fileutils'
require 'time'
require 'ipaddr'
require 'open3'

module PuppetCertStandin
  PUPPET = '/usr/bin/puppet'
  EXIT_USAGE = 1     # Puppet::Application exited 1 on bad command-line options
  EXIT_CA_INIT = 23  # `puppet cert` when the CA could not be set up
  EXIT_ERROR = 24    # `puppet cert` on any error while applying the subcommand

  CA_TTL = 5 * 365 * 24 * 60 * 60    # Puppet 3's default ca_ttl: 5 years
  CRL_TTL = 5 * 365 * 24 * 60 * 60   # Puppet 3 kept its CRL valid 5 years
  BACKDATE = 24 * 60 * 60            # Puppet 3 made certs valid "as of yesterday"
  NS_COMMENT = 'Puppet Ruby/OpenSSL Internal Certificate'
  REASON_KEY_COMPROMISE = 1          # OpenSSL::OCSP::REVOKED_STATUS_KEYCOMPROMISE
  VALID_NAME = /\A[a-z0-9._-]+\z/
  HOST_LABEL = /\A[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\z/i
  INVENTORY_TIME = '%Y-%m-%dT%H:%M:%S%Z'
  CERT_RE = /-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\r?\n?/m
  CRL_RE = /-----BEGIN X509 CRL-----.*?-----END X509 CRL-----\r?\n?/m

  USAGE = <<~TEXT
    Usage: puppet cert <subcommand> [options] <name> [<name> ...]
    (test stand-in for Puppet 3's `puppet cert`, see #{__FILE__})

      clean <name>...                         revoke and remove certs, CSRs, keys
      generate <name>... [--dns_alt_names a,b] create key, CSR and signed cert
      list [--all] [<name>...]                list requests (and signed/revoked)
      print <name>...                         print the signed cert as text

    Options: --all/-a, --dns_alt_names LIST (or --dns-alt-names), --digest ALG,
             --[no-]allow-dns-alt-names, --verbose/-v, --debug/-d (accepted, no effect)
  TEXT

  class Error < StandardError
    attr_reader :status

    def initialize(msg, status = EXIT_ERROR)
      super(msg)
      @status = status
    end
  end

  class UsageError < StandardError; end

  def self.notice(msg)
    $stdout.puts "Notice: #{msg}"
  end

  # ---------------------------------------------------------------- files --

  module FileOps
    module_function

    def fsync_dir(dir)
      File.open(dir, File::RDONLY) { |d| d.fsync }
    rescue SystemCallError
      nil
    end

    # Create dir (and missing parents) 0750, owned like its parent directory.
    def ensure_dir(dir)
      return if File.directory?(dir)

      parent = File.dirname(dir)
      ensure_dir(parent) unless parent == dir
      begin
        Dir.mkdir(dir, 0o750)
      rescue Errno::EEXIST
        return
      end
      File.chmod(0o750, dir)
      pst = File.stat(parent)
      chown(pst.uid, pst.gid, dir)
      fsync_dir(parent)
    end

    def chown(uid, gid, path)
      File.chown(uid, gid, path)
    rescue Errno::EPERM
      nil # not root: leave the file to the invoking user
    end

    # Write data to path atomically: temp file in the same directory, fsync,
    # chmod, chown, rename. A replaced file keeps its owner and mode; a new
    # one gets `mode` and the owner/group of the directory.
    def atomic_write(path, data, mode: 0o640)
      dir = File.dirname(path)
      ensure_dir(dir)
      old = begin
        File.stat(path)
      rescue Errno::ENOENT
        nil
      end
      dst = File.stat(dir)
      uid = old ? old.uid : dst.uid
      gid = old ? old.gid : dst.gid
      perm = old ? (old.mode & 0o7777) : mode
      tmp = File.join(dir, ".#{File.basename(path)}.standin-#{Process.pid}.tmp")
      begin
        File.open(tmp, File::WRONLY | File::CREAT | File::EXCL, 0o600) do |f|
          f.write(data)
          f.flush
          f.fsync
        end
        chown(uid, gid, tmp)
        File.chmod(perm, tmp)
        File.rename(tmp, path)
      rescue StandardError
        begin
          File.unlink(tmp)
        rescue SystemCallError
          nil
        end
        raise
      end
      fsync_dir(dir)
    end

    def read(path)
      File.read(path)
    rescue Errno::ENOENT
      nil
    end
  end

  # --------------------------------------------------------------- config --

  class Config
    attr_reader :ssldir, :cadir, :certname, :dns_alt_names, :keylength

    def initialize
      env_ssl = nonempty(ENV['PUPPET_STANDIN_SSLDIR'])
      env_ca = nonempty(ENV['PUPPET_STANDIN_CADIR'])
      settings = puppet_settings(fatal: !(env_ssl && env_ca))
      @ssldir = env_ssl || settings['ssldir']
      @cadir = env_ca || settings['cadir']
      @certname = nonempty(settings['certname'])&.downcase
      @dns_alt_names = nonempty(settings['dns_alt_names'])
      kl = settings['keylength'].to_s
      @keylength = kl.match?(/\A\d+\z/) ? kl.to_i : 4096
      raise Error.new('could not determine ssldir/cadir from puppet config', EXIT_CA_INIT) unless @ssldir && @cadir
    end

    def nonempty(value)
      value.nil? || value.strip.empty? ? nil : value.strip
    end

    # One run of `puppet config print`; with several settings it prints
    # "name = value" lines.
    def puppet_settings(fatal:)
      out, err, status = Open3.capture3(PUPPET, 'config', 'print',
                                        'ssldir', 'cadir', 'certname', 'dns_alt_names', 'keylength',
                                        '--section', 'master')
      unless status.success?
        raise Error.new("`#{PUPPET} config print` failed: #{err.strip}", EXIT_CA_INIT) if fatal

        return {}
      end
      out.each_line.with_object({}) do |line, h|
        h[Regexp.last_match(1)] = Regexp.last_match(2) if line =~ /\A\s*([a-z_]+)\s*=\s*(.*?)\s*\z/
      end
    rescue SystemCallError => e
      raise Error.new("could not run #{PUPPET}: #{e.message}", EXIT_CA_INIT) if fatal

      {}
    end

    def cert(name) = File.join(ssldir, 'certs', "#{name}.pem")
    def key(name) = File.join(ssldir, 'private_keys', "#{name}.pem")
    def pubkey(name) = File.join(ssldir, 'public_keys', "#{name}.pem")
    def csr(name) = File.join(ssldir, 'certificate_requests', "#{name}.pem")
    def hostcrl = File.join(ssldir, 'crl.pem')
    def signed(name) = File.join(cadir, 'signed', "#{name}.pem")
    def ca_csr(name) = File.join(cadir, 'requests', "#{name}.pem")
    def signeddir = File.join(cadir, 'signed')
    def csrdir = File.join(cadir, 'requests')
    def cacert = File.join(cadir, 'ca_crt.pem')
    def cakey = File.join(cadir, 'ca_key.pem')
    def cacrl = File.join(cadir, 'ca_crl.pem')
    def serial_file = File.join(cadir, 'serial')
    def inventory = File.join(cadir, 'inventory.txt')
  end

  # ------------------------------------------------------------------- CA --

  class CA
    attr_reader :config

    def initialize(config)
      @config = config
      text = FileOps.read(config.cacert) or
        raise Error.new("CA certificate #{config.cacert} not found (the stand-in does not create a CA)", EXIT_CA_INIT)
      @ca_certs = text.scan(CERT_RE).map { |pem| OpenSSL::X509::Certificate.new(pem) }
      raise Error.new("no certificate in #{config.cacert}", EXIT_CA_INIT) if @ca_certs.empty?
    rescue OpenSSL::OpenSSLError => e
      raise Error.new("could not read #{config.cacert}: #{e.message}", EXIT_CA_INIT)
    end

    attr_reader :ca_certs

    def key
      @key ||= begin
        pem = FileOps.read(config.cakey) or raise Error.new("CA key #{config.cakey} not found", EXIT_CA_INIT)
        OpenSSL::PKey.read(pem)
      rescue OpenSSL::OpenSSLError => e
        raise Error.new("could not read #{config.cakey}: #{e.message}", EXIT_CA_INIT)
      end
    end

    # The certificate that signs: the one in ca_crt.pem matching ca_key.pem
    # (puppetserver's bundle has the signing intermediate first).
    def cert
      @cert ||= @ca_certs.find { |c| c.check_private_key(key) } or
        raise Error.new("no certificate in #{config.cacert} matches #{config.cakey}", EXIT_CA_INIT)
    end

    def with_lock
      File.open(config.cadir, File::RDONLY) do |d|
        d.flock(File::LOCK_EX)
        yield
      end
    end

    # ------------------------------------------------------------ serial --

    def next_serial
      text = FileOps.read(config.serial_file).to_s.strip
      serial = text.empty? ? 0 : text.to_i(16)
      serial = 1 if serial.zero?
      FileOps.atomic_write(config.serial_file, format('%04X', serial + 1))
      serial
    end

    def inventory_add(cert)
      line = format("0x%04x %s %s %s\n", cert.serial.to_i,
                    cert.not_before.utc.strftime(INVENTORY_TIME),
                    cert.not_after.utc.strftime(INVENTORY_TIME), cert.subject.to_s)
      old = FileOps.read(config.inventory).to_s
      old += "\n" unless old.empty? || old.end_with?("\n")
      FileOps.atomic_write(config.inventory, old + line)
    end

    def inventory_serials(name)
      text = FileOps.read(config.inventory) or return []
      re = %r{^(\S+).+/CN=#{Regexp.escape(name)}$}
      text.each_line.filter_map do |line|
        m = re.match(line.chomp) or next
        Integer(m[1])
      rescue ArgumentError
        nil
      end
    end

    # --------------------------------------------------------------- CRL --

    # Returns [text, index of the CRL block issued by the signing cert, crl].
    def load_crl
      text = FileOps.read(config.cacrl)
      blocks = text ? text.scan(CRL_RE) : []
      blocks.each_with_index do |pem, i|
        crl = OpenSSL::X509::CRL.new(pem)
        return [text, i, crl] if crl.issuer.cmp(cert.subject).zero?
      end
      return [text, 0, OpenSSL::X509::CRL.new(blocks[0])] unless blocks.empty?

      [text, nil, new_crl]
    rescue OpenSSL::OpenSSLError => e
      raise Error, "could not read #{config.cacrl}: #{e.message}"
    end

    def new_crl
      crl = OpenSSL::X509::CRL.new
      crl.version = 1
      crl.issuer = cert.subject
      ef = OpenSSL::X509::ExtensionFactory.new
      ef.issuer_certificate = cert
      ef.crl = crl
      crl.add_extension(ef.create_extension('authorityKeyIdentifier', 'keyid:always', false))
      crl
    end

    def crl_number(crl)
      ext = crl.extensions.find { |e| e.oid == 'crlNumber' } or return nil
      OpenSSL::ASN1.decode(ext.value_der).value.to_i
    end

    # Puppet::SSL::CertificateRevocationList#revoke, one serial at a time.
    def revoke(serial)
      PuppetCertStandin.notice "Revoked certificate with serial #{serial}"
      text, idx, crl = load_crl
      time = Time.now
      unless crl.revoked.any? { |r| r.serial.to_i == serial }
        revoked = OpenSSL::X509::Revoked.new
        revoked.serial = OpenSSL::BN.new(serial)
        revoked.time = time
        revoked.add_extension(OpenSSL::X509::Extension.new('CRLReason',
                                                           OpenSSL::ASN1::Enumerated(REASON_KEY_COMPROMISE)))
        crl.add_revoked(revoked)
      end
      number = crl_number(crl)
      exts = crl.extensions.reject { |e| e.oid == 'crlNumber' }
      exts << OpenSSL::X509::Extension.new('crlNumber', OpenSSL::ASN1::Integer(number ? number + 1 : 0))
      crl.extensions = exts
      crl.last_update = time
      crl.next_update = time + CRL_TTL
      crl.sign(key, OpenSSL::Digest.new('SHA256'))
      FileOps.atomic_write(config.cacrl, splice_crl(text, idx, crl.to_pem))
      FileOps.atomic_write(config.hostcrl, FileOps.read(config.cacrl))
    end

    # Replace block idx of the CRL file, keeping everything else verbatim.
    def splice_crl(text, idx, pem)
      return pem if text.nil? || idx.nil?

      n = -1
      text.gsub(CRL_RE) do |block|
        n += 1
        next block unless n == idx

        block.end_with?("\n") ? pem : pem.chomp
      end
    end

    # ------------------------------------------------------------ verify --

    def store
      @store ||= begin
        s = OpenSSL::X509::Store.new
        @ca_certs.each { |c| s.add_cert(c) }
        text = FileOps.read(config.cacrl).to_s
        text.scan(CRL_RE).each { |pem| s.add_crl(OpenSSL::X509::CRL.new(pem)) }
        s.flags = OpenSSL::X509::V_FLAG_CRL_CHECK | OpenSSL::X509::V_FLAG_CRL_CHECK_ALL unless text.empty?
        s.purpose = OpenSSL::X509::PURPOSE_SSL_CLIENT
        s
      end
    end

    # nil if fine, else OpenSSL's error string ("certificate revoked", ...)
    def verify_error(cert)
      ctx = OpenSSL::X509::StoreContext.new(store, cert)
      ctx.verify ? nil : ctx.error_string
    end
  end

  # ---------------------------------------------------------- subcommands --

  class Command
    def initialize(config, options)
      @config = config
      @options = options
      @ca = CA.new(config)
    end

    def self.load_pem(path, klass)
      pem = FileOps.read(path) or return nil
      klass.new(pem)
    rescue OpenSSL::OpenSSLError => e
      raise Error, "could not read #{path}: #{e.message}"
    end

    def load_pem(path, klass) = self.class.load_pem(path, klass)

    def remove(type, name, path)
      return false unless File.exist?(path) || File.symlink?(path)

      PuppetCertStandin.notice "Removing file #{type} #{name} at '#{path}'"
      begin
        File.unlink(path)
      rescue SystemCallError => e
        raise Error, "Could not remove #{name}: #{e.message}"
      end
      true
    end

    # ------------------------------------------------------------- clean --

    def clean(names)
      raise Error, 'You must provide hosts or --all when using destroy' if names.empty?
      raise Error, 'Refusing to destroy all certs, provide an explicit list of certs to destroy' if @options[:all]

      @ca.with_lock do
        # Puppet 3: first revoke every name, then destroy every name.
        names.each do |name|
          serials_for(name).each { |serial| @ca.revoke(serial) }
        end
        names.each { |name| destroy(name) }
      end
    end

    def serials_for(name)
      now = Time.now
      cached = load_pem(@config.cert(name), OpenSSL::X509::Certificate)
      cert = cached if cached && cached.not_after > now
      cert ||= load_pem(@config.signed(name), OpenSSL::X509::Certificate)
      serials = if cert
                  [cert.serial.to_i]
                elsif name =~ /\A0x[0-9a-f]+\z/
                  [name.hex]
                else
                  @ca.inventory_serials(name)
                end
      raise Error, "Could not find a serial number for #{name}" if serials.empty?

      serials
    end

    # Puppet 3's certificate_status destroy: Certificate, CertificateRequest,
    # Key; each via the CA terminus first, then the ssldir "cache".
    def destroy(name)
      remove('Puppet::SSL::Certificate', name, @config.signed(name))
      remove('Puppet::SSL::Certificate', name, @config.cert(name))
      remove('Puppet::SSL::CertificateRequest', name, @config.ca_csr(name))
      remove('Puppet::SSL::CertificateRequest', name, @config.csr(name))
      remove('Puppet::SSL::Key', name, @config.key(name))
      pub = @config.pubkey(name)
      begin
        File.unlink(pub) if File.exist?(pub)
      rescue SystemCallError => e
        raise Error, "Could not remove #{name}: #{e.message}"
      end
    end

    # ---------------------------------------------------------- generate --

    def generate(names)
      raise Error, 'You must provide hosts or --all when using generate' if names.empty?
      raise Error, 'It makes no sense to generate all hosts; you must specify a list' if @options[:all]

      alt_cli = @options[:dns_alt_names]
      parse_alt_names(alt_cli) if alt_cli # validate before touching anything
      @ca.key # fail early (exit 23) if the CA key is unusable
      @ca.cert
      @ca.with_lock do
        names.each { |name| generate_one(name, alt_cli) }
      end
    end

    def parse_alt_names(list)
      list.split(/\s*,\s*/).map(&:strip).reject(&:empty?).map do |n|
        kind = if ip_address?(n)
                 'IP'
               elsif hostname?(n)
                 'DNS'
               else
                 raise Error, "Invalid alt name #{n.inspect}: not a host name or an IP address"
               end
        [kind, n]
      end
    end

    def ip_address?(str)
      return false unless str.match?(/\A[0-9.]+\z/) || str.include?(':')

      IPAddr.new(str)
      true
    rescue IPAddr::Error, ArgumentError
      false
    end

    def hostname?(str)
      s = str.chomp('.')
      !s.empty? && s.length <= 253 && s.split('.', -1).all? { |l| l.length <= 63 && l.match?(HOST_LABEL) }
    end

    def generate_one(name, alt_cli)
      if File.exist?(@config.cert(name)) || File.exist?(@config.signed(name))
        raise Error, "A Certificate already exists for #{name}"
      end

      # Host#generate_certificate_request: for our own certname the configured
      # dns_alt_names apply when none were given on the command line.
      alt = alt_cli
      alt ||= @config.dns_alt_names if name == @config.certname

      key = load_key(name) || create_key(name)

      if File.exist?(@config.ca_csr(name)) || File.exist?(@config.csr(name))
        raise Error, "#{name} already has a requested certificate; ignoring certificate request"
      end

      csr = build_csr(name, key, alt)
      FileOps.atomic_write(@config.ca_csr(name), csr.to_pem)
      PuppetCertStandin.notice "#{name} has a waiting certificate request"
      FileOps.atomic_write(@config.csr(name), csr.to_pem)

      sign(name, csr)
    end

    def load_key(name)
      pem = FileOps.read(@config.key(name)) or return nil
      OpenSSL::PKey.read(pem)
    rescue OpenSSL::OpenSSLError => e
      raise Error, "Could not read private key #{@config.key(name)}: #{e.message}"
    end

    def create_key(name)
      key = OpenSSL::PKey::RSA.generate(@config.keylength)
      FileOps.atomic_write(@config.key(name), key.to_pem, mode: 0o640)
      FileOps.atomic_write(@config.pubkey(name), key.public_key.to_pem, mode: 0o640)
      key
    end

    def build_csr(name, key, alt)
      csr = OpenSSL::X509::Request.new
      csr.version = 0
      csr.subject = OpenSSL::X509::Name.new([['CN', name]])
      csr.public_key = key
      if alt
        names = (parse_alt_names(alt) + [['DNS', name]]).sort_by { |_k, n| n }.uniq { |_k, n| n }
        ext = OpenSSL::X509::ExtensionFactory.new.create_extension(
          'subjectAltName', names.map { |k, n| "#{k}:#{n}" }.join(', '), false
        )
        ext_req = OpenSSL::ASN1::Set([OpenSSL::ASN1::Sequence([OpenSSL::ASN1.decode(ext.to_der)])])
        csr.add_attribute(OpenSSL::X509::Attribute.new('extReq', ext_req))
      end
      csr.sign(key, OpenSSL::Digest.new('SHA256'))
      raise Error, "CSR sign verification failed for #{name}" unless csr.verify(csr.public_key)

      csr
    end

    def request_extensions(csr)
      attr = csr.attributes.find { |a| %w[extReq msExtReq].include?(a.oid) } or return []
      set = attr.value
      seq = set.value.first or return []
      seq.value.map { |e| OpenSSL::X509::Extension.new(e.to_der) }
    end

    # Puppet::SSL::CertificateAuthority#sign + CertificateFactory.build(:server)
    def sign(name, csr)
      ca_cert = @ca.cert
      cert = OpenSSL::X509::Certificate.new
      cert.version = 2
      cert.subject = csr.subject
      cert.issuer = ca_cert.subject
      cert.public_key = csr.public_key
      cert.serial = OpenSSL::BN.new(@ca.next_serial)
      now = Time.now
      cert.not_before = now - BACKDATE
      cert.not_after = now + CA_TTL

      ef = OpenSSL::X509::ExtensionFactory.new
      ef.subject_certificate = cert
      ef.issuer_certificate = ca_cert
      san = request_extensions(csr).find { |e| e.oid == 'subjectAltName' }
      exts = [ef.create_extension('nsComment', NS_COMMENT, false)]
      exts << OpenSSL::X509::Extension.new('subjectAltName', san.value_der, false) if san
      exts << ef.create_extension('keyUsage', 'digitalSignature, keyEncipherment', true)
      exts << ef.create_extension('extendedKeyUsage', 'serverAuth, clientAuth', true)
      exts << ef.create_extension('basicConstraints', 'CA:FALSE', true)
      exts << ef.create_extension('subjectKeyIdentifier', 'hash', false)
      exts << ef.create_extension('authorityKeyIdentifier', 'keyid,issuer', false)
      cert.extensions = exts
      cert.sign(@ca.key, OpenSSL::Digest.new('SHA256'))

      PuppetCertStandin.notice "Signed certificate request for #{name}"
      @ca.inventory_add(cert)
      FileOps.atomic_write(@config.signed(name), cert.to_pem)
      FileOps.atomic_write(@config.cert(name), cert.to_pem)
      remove('Puppet::SSL::CertificateRequest', name, @config.ca_csr(name))
      remove('Puppet::SSL::CertificateRequest', name, @config.csr(name))
      cert
    end

    # -------------------------------------------------------------- list --

    def pem_names(dir)
      Dir.glob(File.join(dir, '*.pem')).map { |p| File.basename(p, '.pem') }.sort
    end

    def fingerprint(obj)
      alg = @options[:digest]
      hex = OpenSSL::Digest.new(alg).hexdigest(obj.to_der)
      "(#{alg.upcase}) #{hex.scan(/../).join(':').upcase}"
    rescue RuntimeError, OpenSSL::Digest::DigestError => e
      raise Error, "Invalid digest #{alg.inspect}: #{e.message}"
    end

    def cert_alt_names(cert)
      ext = cert.extensions.find { |e| e.oid == 'subjectAltName' } or return []
      ext.value.split(/\s*,\s*/)
    end

    def csr_alt_names(csr)
      request_extensions(csr).select { |e| e.oid == 'subjectAltName' }
                             .flat_map { |e| e.value.split(/\s*,\s*/) }.sort.uniq
    end

    def list(names)
      requests = pem_names(@config.csrdir)
      hosts = if !names.empty? then names
              elsif @options[:all] then pem_names(@config.signeddir) + requests
              else requests
              end
      return if hosts.empty?

      entries = hosts.uniq.sort.map do |host|
        if requests.include?(host)
          csr = load_pem(@config.ca_csr(host), OpenSSL::X509::Request)
          [host, :request, csr, nil]
        else
          cert = load_pem(@config.signed(host), OpenSSL::X509::Certificate) or
            raise Error, "Could not find a certificate for #{host}"
          err = @ca.verify_error(cert)
          [host, err ? :invalid : :signed, cert, err]
        end
      end
      width = entries.map { |h, *| h.length }.max + 2
      lines = entries.map do |host, type, obj, err|
        alt = case type
              when :signed then cert_alt_names(obj)
              when :request then csr_alt_names(obj)
              else []
              end
        alt -= [host] # as in Puppet 3, this never matches "DNS:<host>"
        glyph = { signed: '+', request: ' ', invalid: '-' }[type]
        alt_str = "(alt names: #{alt.map(&:inspect).join(', ')})" unless alt.empty?
        [glyph, host.inspect.ljust(width), fingerprint(obj), alt_str, err && "(#{err})"].compact.join(' ')
      end
      puts lines.sort.join("\n")
    end

    # ------------------------------------------------------------- print --

    def print(names)
      names = pem_names(@config.signeddir) if @options[:all]
      raise Error, 'You must provide hosts or --all when using print' if names.empty?

      names.each do |host|
        cert = load_pem(@config.signed(host), OpenSSL::X509::Certificate) or
          raise Error, "Could not find certificate for #{host}"
        puts cert.to_text
      end
    end
  end

  # ------------------------------------------------------------------ main --

  SUBCOMMANDS = { 'clean' => :clean, 'destroy' => :clean, 'generate' => :generate,
                  'list' => :list, 'print' => :print }.freeze

  def self.parse(argv)
    options = { digest: 'SHA256' }
    sub = nil
    parser = OptionParser.new do |o|
      o.banner = USAGE
      o.on('-a', '--all') { options[:all] = true }
      o.on('--dns_alt_names LIST', '--dns-alt-names LIST') { |v| options[:dns_alt_names] = v }
      o.on('--digest ALG') { |v| options[:digest] = v }
      o.on('--[no-]allow-dns-alt-names') { |_v| nil }
      o.on('--[no-]allow_dns_alt_names') { |_v| nil }
      o.on('-v', '--verbose') { nil }
      o.on('-d', '--debug') { nil }
      o.on('-c', '--clean') { sub = 'clean' }
      o.on('-g', '--generate') { sub = 'generate' }
      o.on('-l', '--list') { sub = 'list' }
      o.on('-p', '--print') { sub = 'print' }
      o.on('-h', '--help') do
        $stdout.puts USAGE
        exit 0
      end
    end
    args = parser.parse(argv)
    sub ||= args.shift
    raise UsageError, 'no subcommand given' if sub.nil?
    raise UsageError, "unknown or unsupported subcommand #{sub.inspect}" unless SUBCOMMANDS.key?(sub)

    [SUBCOMMANDS[sub], args.map(&:downcase), options]
  rescue OptionParser::ParseError => e
    raise UsageError, "Could not parse application options: #{e.message}"
  end

  def self.main(argv)
    $stdout.sync = true
    sub, names, options = parse(argv)
    names.each do |n|
      next if n.match?(VALID_NAME) && n != 'ca'

      raise Error, "Certname #{n.inspect} must consist of lowercase letters, digits, '.', '_' and '-' " \
                   '(the stand-in also rejects the special name "ca")'
    end
    Command.new(Config.new, options).public_send(sub, names)
    0
  rescue UsageError => e
    warn "Error: #{e.message}"
    warn USAGE
    EXIT_USAGE
  rescue Error => e
    warn "Error: #{e.message}"
    e.status
  rescue OpenSSL::OpenSSLError, SystemCallError, IOError => e
    warn "Error: #{e.message}"
    EXIT_ERROR
  end
end

exit PuppetCertStandin.main(ARGV) if $PROGRAM_NAME == __FILE__
