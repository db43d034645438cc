"""Unit tests: what a master or a tarball says is input (issue: trust boundaries).

Each test below failed before its fix: zone ids passed as IP alt names, control characters reached
the terminal, `ForwardAgent yes` was honoured, implausible path settings were accepted, a missing
free-space answer passed preflight, `restore` extracted any member as root over `/`, a quote in a
tarball's name broke the put-back command with the services stopped.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from pe_remote.connection import new_connection
from pe_remote.discovery import parse_discovery, path_problem
from pe_remote.errors import DiscoveryError, InputError, InvalidName, Refused, RemoteCommandFailed, RolledBack
from pe_remote.inventory import Target
from pe_remote.names import is_ip_address, parse_alt_names, printable
from pe_remote.restore import check_members, put_back, put_back_command
from test_unit_discovery import OSS7, set_setting, sub

RECORDED = parse_discovery(OSS7)


# --- names and text from the master ------------------------------------------------------------

@pytest.mark.parametrize("value", ["fe80::1%eth0", "fe80::1%x", "10.0.0.1%1"])
def test_ipv6_zone_ids_are_not_alt_names(value):
    assert not is_ip_address(value)
    with pytest.raises(InvalidName):
        parse_alt_names(value)


def test_control_characters_are_made_visible():
    assert printable("host\x1b[2J\x07name\n\tok") == "host?[2J?name\n\tok"


# --- the SSH connection ------------------------------------------------------------------------

def test_agent_is_never_forwarded_even_if_ssh_config_says_so(tmp_path, monkeypatch):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host *\n    ForwardAgent yes\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    import fabric

    assert fabric.Connection("master.example.com").forward_agent is True  # what Fabric alone does
    target = Target(address="master.example.com", port=22, user="root")
    assert new_connection(target, {}).forward_agent is False


# --- path settings and sizes from the master ---------------------------------------------------

@pytest.mark.parametrize("value", ["/", "/etc", "/etc/", "/var/lib", "/root", "/usr/local", "ssl", "/a/../etc",
                                   "/var//lib/puppet", "/var/lib/puppet/./ssl", "/tmp/x y"])
def test_implausible_paths_are_refused(value):
    assert path_problem(value)


@pytest.mark.parametrize("value", ["/etc/puppetlabs/puppet/ssl", "/var/lib/puppet/ssl", "/etc/puppet/puppetserver/ca",
                                   "/opt/puppetlabs/puppet/cache/client_data", "/srv/puppet/ssl"])
def test_puppet_paths_pass(value):
    assert path_problem(value) is None


def test_an_ssldir_of_etc_is_refused_by_discovery():
    with pytest.raises(Refused, match="'/etc' is a system folder"):
        parse_discovery(set_setting(OSS7, "ssldir", "/etc"))


def test_a_hostcert_outside_the_ssldir_is_refused():
    with pytest.raises(Refused, match="not inside its ssldir"):
        parse_discovery(set_setting(OSS7, "hostcert", "/etc/puppet/elsewhere/master.pem"))


@pytest.mark.parametrize("line", ["free_kb=\n", "free_kb=n/a\n", ""])
def test_a_missing_free_space_answer_is_an_error_not_zero(line):
    recorded = next(n for n in OSS7.splitlines() if n.startswith("free_kb="))
    text = sub(OSS7, recorded + "\n", line)
    with pytest.raises(DiscoveryError, match="free space"):
        parse_discovery(text)


# --- restore: the tarball's members, and its name in the put-back command ----------------------

def _tarball(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """members: (name, data or None for a folder, type)"""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/shadow"
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


SSL = RECORDED.ssldir.lstrip("/")
CA = RECORDED.cadir.lstrip("/")


def test_a_backup_of_the_ssl_folders_passes(tmp_path):
    good = _tarball(tmp_path / "b.tar.gz", [(SSL, None, tarfile.DIRTYPE), (f"{SSL}/certs/x.pem", b"x", tarfile.REGTYPE),
                                             (CA, None, tarfile.DIRTYPE), (f"{CA}/ca_key.pem", b"k", tarfile.REGTYPE)])
    check_members(good, RECORDED)


@pytest.mark.parametrize("name, kind, says", [
    ("etc/cron.d/x", tarfile.REGTYPE, "outside"),
    ("root/.ssh/authorized_keys", tarfile.REGTYPE, "outside"),
    (f"{SSL}/../../../../etc/cron.d/x", tarfile.REGTYPE, "outside the SSL folders"),
    (f"/{SSL}/certs/x.pem", tarfile.REGTYPE, "outside the SSL folders"),
    (f"{SSL}/certs/link.pem", tarfile.SYMTYPE, "a link to '/etc/shadow' outside"),
    (f"{SSL}/certs/hard.pem", tarfile.LNKTYPE, "not a regular file"),
    (f"{SSL}/certs/dev", tarfile.CHRTYPE, "not a regular file"),
    (f"{SSL}-evil/x", tarfile.REGTYPE, "outside"),
])
def test_members_outside_the_ssl_folders_or_not_plain_are_refused(tmp_path, name, kind, says):
    bad = _tarball(tmp_path / "b.tar.gz", [(f"{SSL}/certs/x.pem", b"x", tarfile.REGTYPE),
                                            (name, b"" if kind == tarfile.REGTYPE else None, kind)])
    with pytest.raises(InputError, match=says):
        check_members(bad, RECORDED)


def test_debians_ca_link_inside_the_backup_passes_but_nothing_beneath_it(tmp_path):
    def link(name, target):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return info

    path = tmp_path / "b.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo(f"{SSL}/certs/x.pem"), io.BytesIO(b""))
        tar.addfile(tarfile.TarInfo(f"{CA}/ca_crt.pem"), io.BytesIO(b""))  # the CA folder itself is backed up too
        tar.addfile(link(f"{SSL}/ca", "/" + CA))  # Debian: /var/lib/puppet/ssl/ca -> /etc/puppet/puppetserver/ca
        tar.addfile(link(f"{SSL}/rel", "certs"))
    check_members(path, RECORDED)
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        tar.addfile(link(f"{SSL}/ca", "/" + CA))
        tar.addfile(tarfile.TarInfo(f"{SSL}/ca/evil.pem"), io.BytesIO(b""))
    with pytest.raises(InputError, match="beneath the link"):
        check_members(tmp_path / "c.tar.gz", RECORDED)


def test_a_quote_in_the_tarball_name_is_still_one_word():
    command = put_back_command(RECORDED, "/root/pe-remote-backups/restore-bob's-backup.tar.gz", "0" * 64, ".x")
    assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0
    assert "'\"'\"'" in command  # the quote is escaped, not ending the word


class _PutBackFails:
    def __init__(self):
        self.commands = []

    def run(self, command, *, check=True, timeout=None):
        self.commands.append(command)
        if "tar -xzpf" in command:  # the shell put the folders back itself (exit PUT_BACK_UNDONE)
            raise RemoteCommandFailed(command, 4, "tar: short read")
        return type("R", (), {"ok": True, "stdout": "", "stderr": "", "exit_status": 0})()


class _Quiet:
    def notice(self, *_):
        pass

    warn = notice


def test_a_failed_put_back_starts_the_services_again():
    remote = _PutBackFails()
    with pytest.raises(RolledBack, match="short read"):
        put_back(remote, RECORDED, "/root/x.tar.gz", "0" * 64, ["puppetserver", "puppet"], _Quiet())
    assert "ensure=stopped" in remote.commands[0]
    assert "tar -xzpf" in remote.commands[1]
    assert "puppetserver ensure=running" in remote.commands[2] and "puppet ensure=running" in remote.commands[2]


# --- a dead link is noticed, a hung command is given up ------------------------------------------

def test_a_link_that_stops_answering_is_closed_within_the_bound():
    import threading
    import time

    from pe_remote.connection import LinkWatchdog

    class SilentTransport:  # the peer vanished: requests are sent, no reply ever comes
        def __init__(self):
            self.closed = threading.Event()

        def is_active(self):
            return not self.closed.is_set()

        def global_request(self, kind, wait=True):
            self.closed.wait()

        def close(self):
            self.closed.set()

    transport = SilentTransport()
    watchdog = LinkWatchdog(transport, interval=0.05, dead_after=0.3)
    started = time.monotonic()
    watchdog.start()
    assert transport.closed.wait(3), "the watchdog never closed a silent link"
    assert watchdog.declared_dead and time.monotonic() - started < 2


def test_a_link_that_answers_is_left_open():
    import time

    from pe_remote.connection import LinkWatchdog

    class AnsweringTransport:
        closed = False

        def is_active(self):
            return not self.closed

        def global_request(self, kind, wait=True):
            return None  # OpenSSH's "request failed": an answer all the same

        def close(self):
            self.closed = True

    transport = AnsweringTransport()
    watchdog = LinkWatchdog(transport, interval=0.02, dead_after=0.2)
    watchdog.start()
    time.sleep(0.5)
    watchdog.stop()
    assert not transport.closed and not watchdog.declared_dead


def test_a_remote_command_past_its_time_is_given_up(monkeypatch):
    from invoke.exceptions import CommandTimedOut

    from pe_remote.connection import Remote
    from pe_remote.errors import RemoteCommandTimedOut
    from pe_remote.inventory import Target

    class HungConnection:
        transport = None

        def run(self, command, **kwargs):
            assert kwargs["timeout"] == 5
            raise CommandTimedOut(None, 5)

    with pytest.raises(RemoteCommandTimedOut, match="no end within 5s"):
        Remote(HungConnection(), Target(address="m.example.com")).run("sleep 60", timeout=5)


def test_ctrl_c_is_answered_at_once_and_a_second_says_what_happens():
    from pe_remote.executor import InterruptLatch

    said = []
    console = type("C", (), {"warn": lambda self, message: said.append(message)})()
    latch = InterruptLatch(console)
    latch.acknowledge(["Generate a new cert"])
    assert said == []  # nothing pressed yet
    latch._handler(2, None)
    latch.acknowledge(["Generate a new cert"])
    assert "'Generate a new cert' will finish first" in said[0] and "rolled back" in said[0]
    latch.acknowledge(["Generate a new cert"])
    assert len(said) == 1  # each press is answered once
    latch._handler(2, None)
    latch.acknowledge(["Generate a new cert"])
    assert "again" in said[1] and "does not stop a step half-way" in said[1]
