"""How the procedure differs between Puppet generations: one table of data.

Commands are argv templates; `{puppet}`, `{puppetserver}`, `{certname}` and
`{alt_names}` are filled in (and shell-quoted) by the plan. Nothing else in the
library asks which generation it is talking to: it reads these fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavor:
    name: str
    title: str
    # Services in the order they are stopped; they are started in `start_order`.
    services: tuple[str, ...]
    start_order: tuple[str, ...]
    # The services that may serve 8140, by preference: the first that exists on the host is the
    # server (an open-source Puppet 4/5 master runs Puppet Server, or the Ruby `puppet master`
    # under the name its packages gave it). The procedure waits for it to answer after the start.
    server_services: tuple[str, ...]
    clean: tuple[str, ...]
    generate: tuple[str, ...]
    # Puppet 6+ cleans through the running CA service; older generations clean files offline.
    clean_while_running: bool
    # `puppetserver ca clean` leaves the host's own copies behind: delete them after the stop.
    delete_leftover_files: bool
    # `puppetserver ca generate` takes `IP:a.b.c.d`; `puppet cert generate` makes every alt name DNS:.
    ip_alt_names: bool = False
    # Verification ends with an agent run (--noop) on the master against itself.
    agent_check: bool = False
    # How such an agent run waits for one the agent service may have under way (Puppet 6+'s flags;
    # Puppet 5 has none and refuses unknown ones).
    agent_lock_flags: tuple[str, ...] = ()
    # Services that never read the SSL folders (they use copies of the master's credentials that
    # Puppet runs make for them): their stops may overlap the cert work and their starts the agent's,
    # which keeps them out of the downtime window. Each group still goes in the table's order.
    own_credentials: tuple[str, ...] = ()
    # On a monolithic install (PE up to 2018.1) PuppetDB and the console share the master's cert:
    # the master-only procedure would half-do the job, so these markers make pe-remote refuse.
    monolithic_services: tuple[str, ...] = ()
    monolithic_dirs: tuple[str, ...] = ()
    # Folders where a service keeps COPIES of the master's cert and keys, which the generation's own
    # procedure refreshes after `generate` (PE 2016.4-2018.1: orchestration-services, with the key
    # also as PKCS#8 DER `.pk8`). Only folders that exist on the host are refreshed; they are backed up.
    credential_copies: tuple["CredentialCopy", ...] = ()
    # The running CA's clean endpoint (Puppet Server 6.14+; the CLI is the fallback where it answers
    # otherwise): one call revokes and deletes, without `puppetserver ca clean`'s 30-second wait.
    clean_endpoint: bool = False
    # regen's reload path: the server keeps serving while the new cert is made (generate beside the
    # running CA, `--force`, with the CA's files frozen to root), then reads it on a reload (Puppet
    # Server's SIGHUP restarts its services inside the running JVM). Taken only where the running
    # master's unit also says CanReload=yes (MasterFacts.server_reloads), and not with --restart.
    reloads_in_place: bool = False
    generate_online: tuple[str, ...] = ()
    # The agent: a client of the server, never serving anything. Its stop runs at the same time as the
    # server's (the cert work needs both stopped, neither needs the other stopped first), so it adds
    # nothing to the downtime window; it still starts last, once the server answers.
    agent_services: tuple[str, ...] = ("puppet",)

@dataclass(frozen=True)
class CredentialCopy:
    """A service's own copies of the master's credentials: <certname>.{cert,public_key,private_key}.pem."""

    folder: str
    owner: str
    pk8: bool = False  # also <certname>.private_key.pk8 (PKCS#8, DER, unencrypted)


# The two ways of cleaning and generating: PE 3.x-2018's `puppet cert` (offline, on the files) and
# Puppet 6+'s `puppetserver ca` (clean through the running CA; generate offline, signing as the CA).
PUPPET_CERT_CLEAN = ("{puppet}", "cert", "clean", "{certname}")
PUPPET_CERT_GENERATE = ("{puppet}", "cert", "generate", "{certname}", "--dns_alt_names={alt_names}")
CA_CLI_CLEAN = ("{puppetserver}", "ca", "clean", "--certname", "{certname}")
CA_CLI_GENERATE = ("{puppetserver}", "ca", "generate", "--certname", "{certname}",
                   "--subject-alt-names", "{alt_names}", "--ca-client")
# What every `puppet cert` generation shares: the master stopped for both, no leftovers to delete.
PUPPET_CERT_GENERATION = dict(clean=PUPPET_CERT_CLEAN, generate=PUPPET_CERT_GENERATE, clean_while_running=False,
                              delete_leftover_files=False)
# What every `puppetserver ca` generation shares.
CA_CLI_GENERATION = dict(clean=CA_CLI_CLEAN, generate=CA_CLI_GENERATE, clean_while_running=True,
                         delete_leftover_files=True, ip_alt_names=True, agent_check=True,
                         agent_lock_flags=("--waitforlock", "2", "--maxwaitforlock", "120"), clean_endpoint=True,
                         generate_online=CA_CLI_GENERATE + ("--force",))

PE37 = Flavor(
    name="pe37",
    title="Puppet Enterprise 3.7 (puppet cert)",
    services=("pe-puppet", "pe-puppetserver", "pe-activemq", "pe-mcollective"),
    # Server first, agent last: the agent's first run then finds the server up.
    start_order=("pe-puppetserver", "pe-activemq", "pe-mcollective", "pe-puppet"),
    server_services=("pe-puppetserver",),
    **PUPPET_CERT_GENERATION,
    # PE 3.x's broker keystore and MCollective's certs are copies under /etc/puppetlabs/{activemq,mcollective}.
    own_credentials=("pe-activemq", "pe-mcollective"),
    agent_services=("pe-puppet",),
    monolithic_services=("pe-puppetdb", "pe-console-services", "pe-httpd", "pe-postgresql"),
    monolithic_dirs=("/etc/puppetlabs/puppetdb/ssl", "/opt/puppet/share/puppet-dashboard/certs"),
)

PE2016 = Flavor(
    name="pe2016",
    title="Puppet Enterprise 2016.4-2018.1 (puppet cert)",
    services=("puppet", "pe-puppetserver", "pe-activemq", "mcollective", "pe-orchestration-services", "pxp-agent"),
    start_order=("pe-puppetserver", "pe-orchestration-services", "pe-activemq", "mcollective", "pxp-agent", "puppet"),
    server_services=("pe-puppetserver",),
    **PUPPET_CERT_GENERATION,
    monolithic_services=("pe-puppetdb", "pe-console-services", "pe-postgresql"),
    monolithic_dirs=("/etc/puppetlabs/puppetdb/ssl", "/opt/puppetlabs/server/data/console-services/certs"),
    # The master-only procedure of these releases copies the new credentials to the orchestrator.
    credential_copies=(CredentialCopy("/etc/puppetlabs/orchestration-services/ssl", "pe-orchestration-services",
                                      pk8=True),),
)

PUPPET5 = Flavor(
    name="puppet5",
    title="Open-source Puppet 4/5 (puppet cert)",
    # Puppet Server (upstream packages), or the Ruby master as Debian (puppet-master) or older
    # packages (puppetmaster) name it.
    services=("puppet", "puppetserver", "puppet-master", "puppetmaster"),
    start_order=("puppetserver", "puppet-master", "puppetmaster", "puppet"),
    server_services=("puppetserver", "puppet-master", "puppetmaster"),
    **PUPPET_CERT_GENERATION,
)

PUPPET6 = Flavor(
    name="puppet6",
    title="Open-source Puppet 6+ (puppetserver ca)",
    services=("puppet", "puppetserver"),
    start_order=("puppetserver", "puppet"),
    server_services=("puppetserver",),
    reloads_in_place=True,
    **CA_CLI_GENERATION,
)

PE2019 = Flavor(
    name="pe2019",
    title="Puppet Enterprise 2019+ (puppetserver ca)",
    services=("puppet", "pxp-agent", "pe-puppetserver", "pe-orchestration-services", "pe-console-services",
              "pe-nginx", "pe-puppetdb", "pe-postgresql"),
    start_order=("pe-postgresql", "pe-puppetdb", "pe-puppetserver", "pe-orchestration-services",
                 "pe-console-services", "pe-nginx", "pxp-agent", "puppet"),
    server_services=("pe-puppetserver",),
    **CA_CLI_GENERATION,
)

FLAVORS: dict[str, Flavor] = {f.name: f for f in (PE37, PE2016, PUPPET5, PUPPET6, PE2019)}

# Every service name any generation uses: discovery asks about all of them at once.
ALL_SERVICES: tuple[str, ...] = tuple(dict.fromkeys(
    s for f in FLAVORS.values() for s in (*f.services, *f.monolithic_services)))
# Every service that may serve 8140: discovery asks their units whether they can reload.
SERVER_SERVICES: tuple[str, ...] = tuple(dict.fromkeys(s for f in FLAVORS.values() for s in f.server_services))
MONOLITHIC_DIRS: tuple[str, ...] = tuple(dict.fromkeys(d for f in FLAVORS.values() for d in f.monolithic_dirs))
COPY_DIRS: tuple[str, ...] = tuple(dict.fromkeys(c.folder for f in FLAVORS.values() for c in f.credential_copies))

# Where each generation keeps its binaries; commands over SSH do not read
# /etc/profile.d, so they are looked up by absolute path.
PUPPET_PATHS = ("/opt/puppet/bin/puppet", "/opt/puppetlabs/bin/puppet", "/opt/puppetlabs/puppet/bin/puppet",
                "/usr/bin/puppet", "/usr/local/bin/puppet")
PUPPETSERVER_PATHS = ("/opt/puppetlabs/bin/puppetserver", "/opt/puppetlabs/server/bin/puppetserver",
                      "/usr/bin/puppetserver", "/usr/local/bin/puppetserver")
PE_VERSION_FILES = ("/opt/puppet/pe_version", "/opt/puppetlabs/server/pe_version")
# Where a packaging's puppet binary keeps Puppet's own version.rb (its `Puppet.version` reads a VERSION
# file beside it, else the PUPPETVERSION constant): discovery reads the version there instead of a
# `puppet --version` Ruby start. Any other binary, or a file that says nothing: `puppet --version`.
PUPPET_VERSION_RB = {
    "/usr/bin/puppet": "/usr/lib/ruby/vendor_ruby/puppet/version.rb",  # Debian, Ubuntu
    "/opt/puppetlabs/bin/puppet": "/opt/puppetlabs/puppet/lib/ruby/vendor_ruby/puppet/version.rb",  # AIO
    "/opt/puppetlabs/puppet/bin/puppet": "/opt/puppetlabs/puppet/lib/ruby/vendor_ruby/puppet/version.rb",
}
# Where the packagings keep the SSL folder, and a CA folder of its own (Puppet 7+; elsewhere the CA is
# the ssldir's `ca`): `backup` starts streaming these while discovery runs, and keeps the tarball only
# if discovery then names exactly these folders.
LIKELY_SSLDIRS = ("/etc/puppetlabs/puppet/ssl", "/var/lib/puppet/ssl", "/etc/puppet/ssl")
LIKELY_CADIRS = ("/etc/puppetlabs/puppetserver/ca", "/etc/puppet/puppetserver/ca", "/var/lib/puppetserver/ca")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.strip().split("."):
        digits = "".join(ch for ch in piece if ch in "0123456789")  # ASCII: str.isdigit takes "²"
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


class UnknownFlavor(ValueError):
    pass


def detect_flavor(puppet_version: str, pe_version: str | None) -> Flavor:
    """Pick the generation from the PE version marker, else from puppet's own version."""
    if pe_version:
        pe = _version_tuple(pe_version)
        if pe and pe[0] == 3:
            return PE37
        if pe and 2016 <= pe[0] <= 2018:
            return PE2016
        if pe and pe[0] >= 2019:
            return PE2019
        raise UnknownFlavor(f"Puppet Enterprise {pe_version.strip()} is not supported (3.x and 2016+ are)")
    major = _version_tuple(puppet_version)[:1]
    if major and major[0] >= 6:
        return PUPPET6
    if major and major[0] in (4, 5):
        return PUPPET5
    raise UnknownFlavor(
        f"open-source Puppet {puppet_version.strip() or '(unknown version)'} is not supported "
        "(Puppet 4 and later, or Puppet Enterprise 3.x and 2016+, are)"
    )


# Ruby with its OpenSSL library, which every generation's agent runs on (PE's own, or the system's):
# the CA's CRL is re-signed with it on the master, so the CA key never leaves the CA's folder.
RUBY_PATHS = ("/opt/puppetlabs/puppet/bin/ruby", "/opt/puppet/bin/ruby", "/usr/bin/ruby", "/usr/local/bin/ruby")
