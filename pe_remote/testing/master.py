"""Throwaway Puppet masters in containers: start one, wait until it serves, check it.

A master is a container of one flavor's image with systemd as PID 1, sshd
published on 127.0.0.1 only, and root's authorized key bind-mounted from the
workstation. Every Puppet command on it is Puppet's own code from Debian's
packages (Puppet 5.5 on bullseye, 7 on bookworm, 8 on trixie).

Readiness is proven by checks, never by sleeping a fixed time: the SSH banner,
systemd finished booting, then what every master generation answers (Puppet 5.5's
`puppet master` has no status API): port 8140 completes a TLS handshake presenting
the very cert that is on disk (same SHA-256 fingerprint as the hostcert file), and
the CA endpoint answers an HTTP 200.
"""

from __future__ import annotations

import dataclasses
import os

# Ryuk's image cannot be pulled where there is no registry; set before testcontainers reads it. This
# module is imported only when a staging master is asked for.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import paramiko
from testcontainers.core.container import DockerContainer

from pe_remote.commands.shell import join
from pe_remote.testing.images import LAYERS, ensure_image

CERTNAME = "master.pe-remote.test"
ALT_NAMES = ("puppet", "puppet.pe-remote.test")
CONTAINER_LABEL = "pe-remote.staging-master"


@dataclass(frozen=True)
class FlavorLayout:
    """What a staging master of one flavor looks like, for tests to check it."""

    name: str
    services: tuple[str, ...]
    server_service: str
    agent_service: str
    puppet: str
    ssldir: str
    cadir: str
    catalog_dir: str
    # Settings section of the master's own settings (dns_alt_names, cadir): `master` up to
    # Puppet 5, `server` from Puppet 6 on.
    config_section: str = "master"
    # `puppet agent --waitforlock` exists from Puppet 6.16 on; older agents are retried while
    # another run (the agent daemon's first) holds the lock.
    agent_waitforlock: bool = True
    # Folders where other services keep COPIES of the master's credentials.
    credential_dirs: tuple[str, ...] = ()
    # The generation's own command that has its CA sign a new cert (key and cert into the ssldir).
    ca_generate: str = "{puppet} cert generate {certname}"

    def hostcert(self, certname: str) -> str:
        return f"{self.ssldir}/certs/{certname}.pem"


FLAVORS = {
    # PE 3.7 layout on Debian bullseye's Puppet 5.5 (`puppet master` as pe-puppetserver).
    "pe37": FlavorLayout(
        name="pe37",
        services=("pe-puppet", "pe-puppetserver", "pe-activemq", "pe-mcollective"),
        server_service="pe-puppetserver",
        agent_service="pe-puppet",
        puppet="/opt/puppet/bin/puppet",
        ssldir="/etc/puppetlabs/puppet/ssl",
        cadir="/etc/puppetlabs/puppet/ssl/ca",
        catalog_dir="/var/opt/lib/pe-puppet/client_data/catalog",
        agent_waitforlock=False,
    ),
    # PE 2016.4-2018.1 layout on Debian bullseye's Puppet 5.5.
    "pe2016": FlavorLayout(
        name="pe2016",
        services=("puppet", "pe-puppetserver", "pe-activemq", "mcollective", "pe-orchestration-services",
                  "pxp-agent"),
        server_service="pe-puppetserver",
        agent_service="puppet",
        puppet="/opt/puppetlabs/bin/puppet",
        ssldir="/etc/puppetlabs/puppet/ssl",
        cadir="/etc/puppetlabs/puppet/ssl/ca",
        catalog_dir="/opt/puppetlabs/puppet/cache/client_data/catalog",
        agent_waitforlock=False,
        credential_dirs=("/etc/puppetlabs/orchestration-services/ssl",),
    ),
    # Open-source Puppet 5.5 exactly as Debian bullseye lays it out.
    "puppet5": FlavorLayout(
        name="puppet5",
        services=("puppet", "puppet-master"),
        server_service="puppet-master",
        agent_service="puppet",
        puppet="/usr/bin/puppet",
        ssldir="/var/lib/puppet/ssl",
        cadir="/var/lib/puppet/ssl/ca",
        catalog_dir="/var/cache/puppet/client_data/catalog",
        agent_waitforlock=False,
    ),
    # Open-source Puppet 7 as Debian bookworm lays it out.
    "oss7": FlavorLayout(
        name="oss7",
        services=("puppet", "puppetserver"),
        server_service="puppetserver",
        agent_service="puppet",
        puppet="/usr/bin/puppet",
        ssldir="/var/lib/puppet/ssl",
        cadir="/etc/puppet/puppetserver/ca",
        catalog_dir="/var/cache/puppet/client_data/catalog",
        config_section="server",
        ca_generate="puppetserver ca generate --certname {certname}",
    ),
    # PE 2019+ (2021.7) layout on Debian bookworm's puppetserver 7 (Puppet Server as pe-puppetserver).
    "pe2019": FlavorLayout(
        name="pe2019",
        services=("puppet", "pxp-agent", "pe-puppetserver", "pe-orchestration-services", "pe-console-services",
                  "pe-nginx", "pe-puppetdb", "pe-postgresql"),
        server_service="pe-puppetserver",
        agent_service="puppet",
        puppet="/opt/puppetlabs/bin/puppet",
        ssldir="/etc/puppetlabs/puppet/ssl",
        cadir="/etc/puppetlabs/puppetserver/ca",
        catalog_dir="/opt/puppetlabs/puppet/cache/client_data/catalog",
        config_section="server",
        ca_generate="/opt/puppetlabs/bin/puppetserver ca generate --certname {certname}",
    ),
}
# Open-source Puppet 8 as Debian trixie lays it out: the same paths and services as Puppet 7.
FLAVORS["oss8"] = dataclasses.replace(FLAVORS["oss7"], name="oss8")


class MasterNotReady(RuntimeError):
    """A staging master did not become ready in time; carries its last log lines."""


@dataclass
class ClientKey:
    """The workstation's key pair that root's authorized_keys trusts."""

    private_path: Path
    authorized_keys_path: Path

    @property
    def deploy_authorized_keys_path(self) -> Path:
        # Docker keys bind mounts by host path: the second account needs its own file.
        return self.authorized_keys_path.with_name("authorized_keys-deploy")

    @classmethod
    def create(cls, folder: Path) -> "ClientKey":
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = paramiko.RSAKey.generate(3072)
        private = folder / "id_rsa"
        key.write_private_key_file(str(private))
        private.chmod(0o600)
        authorized = folder / "authorized_keys"
        authorized.write_text(f"{key.get_name()} {key.get_base64()} pe-remote-tests\n")
        authorized.chmod(0o600)
        made = cls(private, authorized)
        # sshd reads a user's authorized_keys as that user: this copy (owned by root) must be readable.
        made.deploy_authorized_keys_path.write_text(authorized.read_text())
        made.deploy_authorized_keys_path.chmod(0o644)
        return made


class _InContainer:
    """Commands run in the host's container as root (docker exec, not over SSH)."""

    container: DockerContainer

    def exec(self, cmd: str) -> tuple[int, str]:
        """Run a shell command in the container as root (docker exec), not over SSH."""
        result = self.container.get_wrapped_container().exec_run(["sh", "-c", cmd], demux=False)
        return result.exit_code, (result.output or b"").decode(errors="replace")

    def check(self, cmd: str) -> str:
        """Like exec, but a non-zero exit is an AssertionError naming the command."""
        code, out = self.exec(cmd)
        if code != 0:
            raise AssertionError(f"{cmd!r} exited {code} in the container: {out.strip()[-2000:]}")
        return out

    def stop(self) -> None:
        self.container.stop()


@dataclass
class StagingMaster(_InContainer):
    """A running throwaway master, as a test sees it."""

    flavor: FlavorLayout
    host: str
    port: int
    key_path: Path
    known_hosts_line: str
    known_hosts_path: Path
    certname: str
    alt_names: tuple[str, ...]
    container: DockerContainer = field(repr=False)

    @property
    def target(self) -> str:
        """`user@host:port` as `fab -H` takes it."""
        return f"root@{self.host}:{self.port}"

    def ssl_checksums(self) -> str:
        """sha256 of every file under the ssldir, cadir and credential copies, for before/after comparisons."""
        dirs = list(dict.fromkeys((self.flavor.ssldir, self.flavor.cadir, *self.flavor.credential_dirs)))
        return self.check(join(["find", "-L", *dirs, "-type", "f", "-print0"]) + " | sort -z | xargs -0 sha256sum")

    def agent_run(self, timeout: float = 180) -> tuple[int, str]:
        """`puppet agent -t` on the master against itself, waiting while another run holds the lock."""
        puppet = self.flavor.puppet
        if self.flavor.agent_waitforlock:
            return self.exec(f"{puppet} agent -t --waitforlock 2 --maxwaitforlock {int(timeout)}")
        deadline = time.monotonic() + timeout
        while True:  # Puppet 5.5 has no --waitforlock: a run that found the lock taken is retried
            code, out = self.exec(f"{puppet} agent -t")
            if code != 1 or "already in progress" not in out or time.monotonic() >= deadline:
                return code, out
            time.sleep(2)


def _systemd_container(image: str, client_key: ClientKey, hosts: dict[str, str] | None = None) -> DockerContainer:
    container = DockerContainer(image)
    container.ports["22/tcp"] = ("127.0.0.1", None)  # published on loopback only, any free port
    container.with_volume_mapping(str(client_key.authorized_keys_path), "/root/.ssh/authorized_keys", "ro")
    container.with_volume_mapping(str(client_key.deploy_authorized_keys_path), "/home/deploy/.ssh/authorized_keys", "ro")
    container.with_volume_mapping("/sys/fs/cgroup", "/sys/fs/cgroup", "ro")
    container.with_tmpfs_mount("/run")
    container.with_tmpfs_mount("/run/lock")
    container.with_kwargs(
        hostname="staging-node",  # deliberately not the certname
        # SYS_PTRACE: root on a real master sees every process's sockets (`ss -p`), as discovery needs.
        cap_add=["SYS_ADMIN", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        extra_hosts=hosts or {name: "127.0.0.1" for name in (CERTNAME, *ALT_NAMES)},
        labels={CONTAINER_LABEL: "1"},
        stop_signal="SIGRTMIN+3",
    )
    return container


def _published_port(container: DockerContainer, port: str = "22/tcp") -> int:
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return int(wrapped.attrs["NetworkSettings"]["Ports"][port][0]["HostPort"])


def wait_for_ssh_banner(host: str, port: int, deadline: float) -> None:
    """Docker's proxy accepts TCP before sshd listens: wait for the real banner."""
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(3)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
                last_error = "connection closed before the SSH banner"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"no SSH banner on {host}:{port}: {last_error}")


def _wait_until(master: StagingMaster, what: str, cmd: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if master.exec(cmd)[0] == 0:
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def _last_logs(master: StagingMaster) -> str:
    unit = master.flavor.server_service
    _, journal = master.exec(f"journalctl -u {unit} -n 30 --no-pager; systemctl --failed --no-pager")
    return journal[-4000:]


def serving_check(master: StagingMaster) -> str:
    """Shell check, exit 0 when 8140 serves the on-disk hostcert and the CA endpoint answers 200.

    Works for every generation: Puppet 5.5's `puppet master` (no status API) as well as
    Puppet Server 7/8. Puppet 5.5's CA endpoint wants an `environment` parameter (400 without
    it); Puppet Server ignores it.
    """
    hostcert = join([master.flavor.hostcert(master.certname)])
    return (
        f"disk=$(openssl x509 -in {hostcert} -noout -fingerprint -sha256 2>/dev/null) && [ -n \"$disk\" ] && "
        f"served=$(timeout 10 openssl s_client -connect 127.0.0.1:8140 -servername {master.certname} </dev/null "
        f"2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null) && [ \"$served\" = \"$disk\" ] && "
        "[ \"$(curl -sk --max-time 10 -o /dev/null -w '%{http_code}' "
        "'https://127.0.0.1:8140/puppet-ca/v1/certificate/ca?environment=production')\" = 200 ]"
    )


def wait_until_ready(master: StagingMaster, timeout: float = 300, server: bool = True) -> None:
    """SSH banner, systemd up, then (with server=True) 8140 serving the on-disk cert and the CA answering."""
    deadline = time.monotonic() + timeout
    try:
        wait_for_ssh_banner(master.host, master.port, deadline)
        # `is-system-running --wait` blocks until boot finished, and then says running/degraded.
        _wait_until(master, "systemd to finish booting",
                    "systemctl is-system-running --wait >/dev/null 2>&1; "
                    "systemctl is-system-running | grep -qE 'running|degraded'", deadline)
        if server:
            unit = master.flavor.server_service
            # A start that failed at boot (a loaded machine) is retried once, not waited on.
            _wait_until(master, f"{unit} to serve the on-disk hostcert on 8140 and answer the CA endpoint",
                        f"{serving_check(master)} && exit 0; "
                        f"if systemctl is-failed --quiet {unit} && [ ! -e /run/pe-remote-restarted ]; then "
                        f"touch /run/pe-remote-restarted; systemctl restart --no-block {unit}; fi; exit 1",
                        deadline)
    except TimeoutError as exc:
        raise MasterNotReady(f"{exc} (flavor {master.flavor.name}, after {timeout:.0f}s); "
                             f"last log lines:\n{_last_logs(master)}") from None


def prime_cached_catalog(master: StagingMaster) -> None:
    """One agent run on the master against itself, so the cached catalog exists."""
    code, out = master.agent_run()
    if code not in (0, 2):
        raise MasterNotReady(f"agent run on the {master.flavor.name} master exited {code}: {out[-2000:]}")


def _known_hosts_line(container: DockerContainer, port: int) -> str:
    host_key = container.get_wrapped_container().exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode()
    kind, key = host_key.split()[:2]
    return f"[127.0.0.1]:{port} {kind} {key}"


def start_master(flavor: str, client_key: ClientKey, known_hosts_dir: Path, *, server: bool = True,
                 timeout: float = 300) -> StagingMaster:
    """Start a fresh master of `flavor` and wait until it is ready."""
    layout = FLAVORS[flavor]
    image = ensure_image(docker.from_env(), flavor).tag
    container = _systemd_container(image, client_key)
    container.start()
    try:
        port = _published_port(container)
        known_line = _known_hosts_line(container, port)
        known_hosts_dir.mkdir(parents=True, exist_ok=True)
        known_path = known_hosts_dir / f"known_hosts-{container.get_wrapped_container().short_id}"
        known_path.write_text(known_line + "\n")
        master = StagingMaster(layout, "127.0.0.1", port, client_key.private_path, known_line, known_path,
                               CERTNAME, ALT_NAMES, container)
        wait_until_ready(master, timeout=timeout, server=server)
        if server:
            prime_cached_catalog(master)
        return master
    except BaseException:
        container.stop()
        raise


# --- an agent of a staging master ----------------------------------------------------------------

AGENT_CERTNAME = "agent.pe-remote.test"


@dataclass
class StagingAgent(_InContainer):
    """A Puppet agent host of a staging master: its generation's suite layer (sshd, systemd and the
    Debian suite's own puppet agent, no server), enrolled with a cert the master's CA signed."""

    host: str
    port: int
    known_hosts_line: str
    ssldir: str
    container: DockerContainer = field(repr=False)

    @property
    def target(self) -> str:
        return f"root@{self.host}:{self.port}"

    def agent_run(self) -> tuple[int, str]:
        """`puppet agent -t --noop` against the master (0 or 2: the run passed)."""
        return self.exec("puppet agent -t --noop 2>&1")


def start_agent(master: StagingMaster, client_key: ClientKey, timeout: float = 180) -> StagingAgent:
    """Start an agent host beside `master` (the master's names resolve to its container) and enrol it: a
    cert for AGENT_CERTNAME signed by the master's own CA command, with the master's CA bundle and CRL."""
    wrapped = master.container.get_wrapped_container()
    wrapped.reload()
    master_ip = wrapped.attrs["NetworkSettings"]["IPAddress"]
    image = ensure_image(docker.from_env(), LAYERS[master.flavor.name]).tag
    container = _systemd_container(image, client_key, hosts={name: master_ip for name in (CERTNAME, *ALT_NAMES)})
    container.start()
    try:
        port = _published_port(container)
        agent = StagingAgent("127.0.0.1", port, _known_hosts_line(container, port), "", container)
        deadline = time.monotonic() + timeout
        wait_for_ssh_banner(agent.host, port, deadline)
        _wait_until(agent, "systemd to finish booting on the agent",
                    "systemctl is-system-running --wait >/dev/null 2>&1; "
                    "systemctl is-system-running | grep -qE 'running|degraded'", deadline)
        agent.ssldir = agent.check("puppet config print ssldir --section agent").strip()
        _enrol(master, agent)
        return agent
    except BaseException:
        container.stop()
        raise


def _enrol(master: StagingMaster, agent: StagingAgent) -> None:
    layout, name = master.flavor, AGENT_CERTNAME
    master.check(layout.ca_generate.format(puppet=layout.puppet, certname=name) + " >/dev/null")
    files = {f"certs/{name}.pem": f"{layout.ssldir}/certs/{name}.pem",
             f"private_keys/{name}.pem": f"{layout.ssldir}/private_keys/{name}.pem",
             "certs/ca.pem": f"{layout.ssldir}/certs/ca.pem", "crl.pem": f"{layout.ssldir}/crl.pem"}
    agent.check(f"mkdir -p {join([agent.ssldir])}/certs {join([agent.ssldir])}/private_keys && "
                f"chmod 0750 {join([agent.ssldir])}/private_keys")
    for there, here in files.items():
        data = master.check(f"base64 -w0 {join([here])}").strip()
        agent.check(f"printf '%s' {join([data])} | base64 -d > {join([agent.ssldir + '/' + there])}")
    agent.check(f"chmod 0600 {join([agent.ssldir])}/private_keys/{name}.pem && "
                f"puppet config set certname {name} --section main && "
                f"puppet config set server {CERTNAME} --section main")
