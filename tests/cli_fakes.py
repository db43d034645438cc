"""Fakes for running pe-remote's tasks in-process: a Remote that never touches a network, facts built
directly (not parsed from a remote script's output), and a driver for the real `pe-remote` program."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pe_remote.commands.certs import CertInfo
from pe_remote.discovery import MasterFacts, ServiceState
from pe_remote.flavors import FLAVORS

CERTNAME = "master.example.com"


def make_cert(serial: str = "1A", sans=("DNS:master.example.com", "DNS:puppet")) -> CertInfo:
    return CertInfo(serial=serial, subject=f"CN={CERTNAME}", issuer="CN=Puppet CA: master.example.com",
                    not_after="Nov 24 00:38:59 2041 GMT", sha256="AB:CD:EF", sans=frozenset(sans))


def make_facts(flavor: str = "puppet6", *, cert: CertInfo | None | bool = True, services=None,
               certname: str = CERTNAME, **changes) -> MasterFacts:
    chosen = FLAVORS[flavor]
    if services is None:
        services = tuple(ServiceState(name, True, True, "active") for name in chosen.services)
    values = dict(
        uid=0, hostname="master", init_system="systemd", puppet="/opt/puppetlabs/bin/puppet",
        puppet_version="7.23.0", pe_version=None, puppetserver="/opt/puppetlabs/bin/puppetserver",
        flavor=chosen, certname=certname, dns_alt_names=("puppet",), ssldir="/etc/puppetlabs/puppet/ssl",
        cadir="/etc/puppetlabs/puppetserver/ca", client_datadir="/opt/puppetlabs/puppet/cache/client_data",
        hostcert=f"/etc/puppetlabs/puppet/ssl/certs/{certname}.pem",
        hostprivkey=f"/etc/puppetlabs/puppet/ssl/private_keys/{certname}.pem", ca_key_present=True,
        services=services, cert=make_cert() if cert is True else (cert or None),
    )
    values.update(changes)
    return MasterFacts(**values)


class FakeRemote:
    """What the tasks hand the library: a target, an `on_command` hook, and close()."""

    def __init__(self, target) -> None:
        self.target = target
        self.closed = False
        self.on_command = None

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeConnect:
    """Stands in for pe_remote.connection.connect; `refuse` maps an address to the error to raise."""

    refuse: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    remotes: list = field(default_factory=list)
    accept_new: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, target, *, accept_new_host_key: bool = False):
        with self.lock:
            self.targets.append(target)
            self.accept_new.append(accept_new_host_key)
            if target.address in self.refuse:
                raise self.refuse[target.address]
            remote = FakeRemote(target)
            self.remotes.append(remote)
            return remote

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.targets]


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run_program(capsys, *argv: str) -> Ran:
    """Run the real `pe-remote` program in this process; the exit code it would end with, and its output."""
    from pe_remote.program import program

    capsys.readouterr()  # only this run's output
    code = 0
    try:
        program.run(["pe-remote", *argv], exit=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)
