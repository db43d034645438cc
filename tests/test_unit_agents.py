"""Unit tests for `extend-ca --agents` (pe_remote/agents.py, pe_remote/commands/agents.py): the agent's
commands run in a local `sh` (Puppet and Ruby faked by small scripts), and the push on fake agents."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pe_remote import agents
from pe_remote.commands import agents as commands
from pe_remote.commands import crl as crl_commands
from pe_remote.commands import sections as protocol
from pe_remote.errors import AgentsNotUpdated, ConnectionFailed, InputError, PeRemoteError
from pe_remote.inventory import Target, parse_target
from fakes import FakeRemote, QuietConsole, Result, in_shell

NOW = datetime.datetime(2026, 12, 4, 15, 7, 57, tzinfo=datetime.timezone.utc)
STAMP = "20261204T150757Z"
SSLDIR = "/etc/puppetlabs/puppet/ssl"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key, issuer_cn: str, signer, days: int) -> bytes:
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer_cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


CA_KEY, OTHER_KEY, AGENT_KEY = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
OLD = _cert("Puppet CA: master.example", CA_KEY, "Puppet CA: master.example", CA_KEY, 10)
NEW = _cert("Puppet CA: master.example", CA_KEY, "Puppet CA: master.example", CA_KEY, 15 * 365)  # same key
AGENT_CERT = _cert("agent.example", AGENT_KEY, "Puppet CA: master.example", CA_KEY, 365)
FOREIGN_CERT = _cert("agent.example", AGENT_KEY, "Puppet CA: other.example", OTHER_KEY, 365)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


# --- the facts script, run in a local sh --------------------------------------------------------

@pytest.fixture
def fake_agent(tmp_path, monkeypatch):
    """An ssldir under tmp_path and a `puppet` that reports it (found by absolute path, as on an agent)."""
    ssldir = tmp_path / "ssl"
    (ssldir / "certs").mkdir(parents=True)

    def with_settings(certname: str, ssl: str = str(ssldir)):
        puppet = tmp_path / "puppet"
        # Like Puppet: several settings asked, one `name = value` line each.
        puppet.write_text(f"#!/bin/sh\necho 'certname = {certname}'\necho 'ssldir = {ssl}'\n")
        puppet.chmod(0o755)
        monkeypatch.setattr(commands, "PUPPET_PATHS", (str(tmp_path / "absent"), str(puppet)))
        return ssldir

    return with_settings


def test_the_facts_script_reports_the_agents_settings_and_files(fake_agent):
    ssldir = fake_agent("agent.example")
    (ssldir / "certs" / "ca.pem").write_bytes(OLD)
    (ssldir / "certs" / "agent.example.pem").write_bytes(AGENT_CERT)
    facts = agents.parse_agent_facts(in_shell(commands.agent_facts()).stdout)
    assert facts == agents.AgentFacts(os.getuid(), commands.PUPPET_PATHS[1], str(ssldir), "agent.example",
                                      OLD, AGENT_CERT)


def test_the_facts_script_without_files_or_puppet(fake_agent, monkeypatch):
    fake_agent("agent.example")
    facts = agents.parse_agent_facts(in_shell(commands.agent_facts()).stdout)
    assert (facts.ca, facts.cert) == (b"", b"")
    monkeypatch.setattr(commands, "PUPPET_PATHS", ("/nonexistent/puppet",))
    facts = agents.parse_agent_facts(in_shell(commands.agent_facts()).stdout)
    assert (facts.puppet, facts.ssldir, facts.certname) == ("", "", "")
    assert "no puppet found" in agents.facts_problem(facts)


def test_a_certname_with_a_slash_reads_no_other_file(fake_agent, tmp_path):
    (tmp_path / "secret.pem").write_text("not for the workstation")
    ssldir = fake_agent("../../secret")
    facts = agents.parse_agent_facts(in_shell(commands.agent_facts()).stdout)
    assert facts.certname == "../../secret" and facts.ssldir == str(ssldir)
    assert facts.cert == b""
    assert "not a valid certname" in agents.facts_problem(facts)


def test_what_an_agent_says_cannot_open_a_section():
    hostile = "/etc/x\n==> ca <==\n" + b64(NEW)
    output = "\n".join(["login banner", protocol.marker("uid"), "0", protocol.marker("puppet"), "/usr/bin/puppet",
                        protocol.marker("ssldir"), b64(hostile), protocol.marker("certname"), b64("agent.example"),
                        protocol.marker("ca"), b64(OLD)])
    facts = agents.parse_agent_facts(output)
    assert facts.ssldir == hostile and facts.ca == OLD and facts.cert == b""
    assert "is not a plain absolute path" in agents.facts_problem(facts)


@pytest.mark.parametrize("change, expected", [
    ({"uid": 1000}, "uid 1000, not root"),
    ({"uid": None}, "uid None, not root"),
    ({"ssldir": "/etc/puppet; rm -rf /"}, "is not a plain absolute path"),
    ({"ssldir": "/etc/../root"}, "is not a normalized path"),
    ({"ssldir": "/etc"}, "is a system folder"),
    ({"certname": "Agent.Example"}, "is not a valid certname"),
    ({"certname": ""}, "is not a valid certname"),
])
def test_facts_an_agent_is_not_changed_with(change, expected):
    good = agents.AgentFacts(0, "/usr/bin/puppet", SSLDIR, "agent.example", OLD, AGENT_CERT)
    assert agents.facts_problem(good) is None
    problem = agents.facts_problem(agents.AgentFacts(**{**good.__dict__, **change}))
    assert expected in problem


# --- the changing script, run in a local sh ---------------------------------------------------

@pytest.fixture
def fake_ruby(tmp_path, monkeypatch):
    """A `ruby` that does what WRITE_RUBY does (ARGV: -e SCRIPT, the bundle base64, the output file)."""
    ruby = tmp_path / "ruby"
    ruby.write_text('#!/bin/sh\nprintf "%s" "$3" | base64 -d > "$4"\n')
    ruby.chmod(0o755)
    monkeypatch.setattr(crl_commands, "RUBY_PATHS", (str(ruby),))


def test_the_change_keeps_the_old_file_aside_and_writes_the_new_one(tmp_path, fake_ruby):
    # A path no plain word survives unquoted: spaces, a quote, and shell that must never run.
    ssldir = tmp_path / "ssl dir's $(touch PWNED)"
    (ssldir / "certs").mkdir(parents=True)
    ca = ssldir / "certs" / "ca.pem"
    ca.write_bytes(OLD)
    ca.chmod(0o600)
    os.chown(ca, 0, 12345)
    aside = agents.aside_path(str(ssldir), NOW)
    found = protocol.split(in_shell(commands.replace_ca_bundle(str(ssldir), b64(NEW), aside)).stdout)
    assert protocol.number(found["status"]) == 0
    assert ca.read_bytes() == NEW and found["sha256"] == [sha(NEW)]
    assert (stat.S_IMODE(ca.stat().st_mode), ca.stat().st_gid) == (0o644, 12345)  # Puppet's mode, owner kept
    kept = ssldir / "certs" / f"ca.pem.pe-remote-{STAMP}"
    assert kept.read_bytes() == OLD and found["aside_sha256"] == [sha(OLD)]
    assert (stat.S_IMODE(kept.stat().st_mode), kept.stat().st_gid) == (0o600, 12345)  # cp -p
    assert not (ssldir / "certs" / "ca.pem.pe-remote-new").exists()
    assert not list(tmp_path.rglob("PWNED")) and not os.path.exists("PWNED")


def test_a_change_that_fails_says_why_and_leaves_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(crl_commands, "RUBY_PATHS", (str(tmp_path / "no-ruby"),))
    (tmp_path / "ssl" / "certs").mkdir(parents=True)
    (tmp_path / "ssl" / "certs" / "ca.pem").write_bytes(OLD)
    found = protocol.split(in_shell(commands.replace_ca_bundle(str(tmp_path / "ssl"), b64(NEW),
                                                               str(tmp_path / "aside"))).stdout)
    assert protocol.number(found["status"]) == 1
    assert "no Ruby found" in protocol.decoded(found["output"]).decode()
    assert found["sha256"] == [sha(OLD)] and found["aside_sha256"] == [sha(OLD)]


def test_no_copy_aside_no_change(tmp_path, fake_ruby):
    (tmp_path / "ssl" / "certs").mkdir(parents=True)
    ca = tmp_path / "ssl" / "certs" / "ca.pem"
    ca.write_bytes(OLD)
    found = protocol.split(in_shell(commands.replace_ca_bundle(str(tmp_path / "ssl"), b64(NEW),
                                                               str(tmp_path / "absent" / "aside"))).stdout)
    assert protocol.number(found["status"]) != 0 and "absent/aside" in protocol.decoded(found["output"]).decode()
    assert ca.read_bytes() == OLD and found["sha256"] == [sha(OLD)] and found["aside_sha256"] == []


def test_the_bundle_travels_base64():
    command = commands.replace_ca_bundle(SSLDIR, b64(NEW), agents.aside_path(SSLDIR, NOW))
    assert b64(NEW) in command
    assert not any(line in command for line in NEW.decode().splitlines()[1:-1])  # no line of the PEM itself


def test_the_aside_name():
    assert agents.aside_path(SSLDIR + "/", NOW) == f"{SSLDIR}/certs/ca.pem.pe-remote-{STAMP}"
    later = NOW.astimezone(datetime.timezone(datetime.timedelta(hours=2)))  # the same moment, elsewhere
    assert agents.aside_path(SSLDIR, later) == f"{SSLDIR}/certs/ca.pem.pe-remote-{STAMP}"


# --- the push, on fake agents ------------------------------------------------------------------

class Agent(FakeRemote):
    """One agent: answers the facts script (its first command) from its fields, and the change (its
    second) with the sections `change()` gives (by default: written, the old file kept); keeps every
    command it was sent."""

    def __init__(self, label: str, *, ca: bytes = OLD, cert: bytes = AGENT_CERT, ssldir: str = SSLDIR,
                 certname: str = "agent.example", uid: int = 0, change=None):
        super().__init__(self.answer, label=label)
        self.fields = {"uid": str(uid), "puppet": "/opt/puppetlabs/bin/puppet", "ssldir": b64(ssldir),
                       "certname": b64(certname), "ca": b64(ca), "cert": b64(cert)}
        self.old = ca
        self.change = change or (lambda: {"status": "0", "sha256": sha(NEW), "aside_sha256": sha(ca)})
        self.closed = False

    def answer(self, command, index, kwargs):
        if index == 0:
            return Result(_sections(self.fields))
        return Result(_sections(self.change()))

    def close(self):
        self.closed = True


def _sections(fields: dict[str, str]) -> str:
    return "\n".join(f"{protocol.marker(name)}\n{value}" for name, value in fields.items())


class Fleet:
    """`connect` for push_ca_bundle: hands out each target's Agent; `down` names unreachable hosts."""

    def __init__(self, *members: Agent, down: tuple[str, ...] = ()):
        self.agents = {a.target.label: a for a in members}
        self.down = down
        self.lock = threading.Lock()

    def targets(self) -> list[Target]:
        return [parse_target(label) for label in [*self.agents, *self.down]]

    def __call__(self, target: Target, *, accept_new_host_key: bool = False):
        assert accept_new_host_key is False  # an unknown agent's host key is refused, as a master's
        if target.address in self.down:
            raise ConnectionFailed(f"cannot connect to {target.label}: timed out")
        return self.agents[target.address]


def push(fleet: Fleet, bundle: bytes = NEW) -> tuple[list[agents.AgentPush], QuietConsole]:
    console = QuietConsole()
    return agents.push_ca_bundle(fleet.targets(), bundle, console, connect=fleet, now=NOW), console


ASIDE = f"{SSLDIR}/certs/ca.pem.pe-remote-{STAMP}"


def test_an_agent_with_the_old_bundle_is_updated():
    agent = Agent("a1.example")
    [row], console = push(Fleet(agent))
    assert row == agents.AgentPush("a1.example", agents.UPDATED, ASIDE)
    assert len(agent.commands) == 2 and agent.closed
    assert agent.commands[0] == commands.agent_facts()
    assert agent.commands[1] == commands.replace_ca_bundle(SSLDIR, b64(NEW), ASIDE)
    assert "Pushing the new CA bundle to 1 agent" in console.text("notice")
    assert "a1.example: updated" in console.text("info")


def test_an_agent_without_its_own_cert_is_updated():
    [row], _ = push(Fleet(Agent("a1.example", cert=b"")))
    assert row.status == agents.UPDATED and row.aside == ASIDE


def test_an_agent_holding_the_bundle_is_left_alone():
    agent = Agent("a1.example", ca=NEW)
    [row], _ = push(Fleet(agent))
    assert row == agents.AgentPush("a1.example", agents.CURRENT)
    assert len(agent.commands) == 1


def test_an_agent_of_another_ca_is_refused():
    agent = Agent("a1.example", cert=FOREIGN_CERT)
    [row], _ = push(Fleet(agent))
    assert row.status == agents.FAILED and row.aside == ""
    assert row.error == "its cert agent.example is not signed by this CA; nothing changed"
    assert len(agent.commands) == 1


def test_a_hostile_ssldir_is_refused_before_any_change():
    agent = Agent("a1.example", ssldir="/etc/puppet'; rm -rf / #")
    [row], _ = push(Fleet(agent))
    assert row.status == agents.FAILED and "is not a plain absolute path; nothing changed" in row.error
    assert agent.commands == [commands.agent_facts()]


def test_an_agent_without_a_cached_bundle_is_not_written():
    agent = Agent("a1.example", ca=b"")
    [row], _ = push(Fleet(agent))
    assert row.status == agents.FAILED and f"{SSLDIR}/certs/ca.pem is absent" in row.error
    assert len(agent.commands) == 1


def test_a_written_file_that_is_not_the_bundle_names_the_file_to_put_back():
    agent = Agent("a1.example", change=lambda: {"status": "0", "sha256": sha(b"half"),
                                                       "aside_sha256": sha(OLD)})
    [row], _ = push(Fleet(agent))
    assert row.status == agents.FAILED and row.aside == ASIDE
    assert f"has sha256 {sha(b'half')} after the write" in row.error
    assert row.error.endswith(f"put the old one back from {ASIDE}")


def test_a_failed_write_that_left_the_file_says_so():
    said = b64("mv: cannot move: Read-only file system\n")
    agent = Agent("a1.example", change=lambda: {"status": "1", "output": said, "sha256": sha(OLD),
                                                       "aside_sha256": sha(OLD)})
    [row], _ = push(Fleet(agent))
    assert row.status == agents.FAILED
    assert row.error == (f"replacing {SSLDIR}/certs/ca.pem failed (mv: cannot move: Read-only file system); "
                         "it is unchanged")


def test_a_connection_lost_during_the_change_names_the_aside():
    def lost():
        raise ConnectionFailed("lost the SSH connection to a1.example during a remote command")

    [row], _ = push(Fleet(Agent("a1.example", change=lost)))
    assert row.status == agents.FAILED and row.aside == ""  # unknown whether the copy was made
    assert "lost the SSH connection" in row.error and f"the old one may be kept at {ASIDE}" in row.error


def test_an_unreachable_agent_does_not_stop_the_others():
    fleet = Fleet(Agent("a1.example"), Agent("a2.example", ca=NEW), Agent("a3.example"), down=("a4.example",))
    rows, _ = push(fleet)
    assert [(r.host, r.status) for r in rows] == [("a1.example", agents.UPDATED), ("a2.example", agents.CURRENT),
                                                 ("a3.example", agents.UPDATED), ("a4.example", agents.FAILED)]
    assert rows[3].error == "cannot connect to a4.example: timed out" and rows[3].aside == ""
    assert [r.ok for r in rows] == [True, True, True, False]


def test_no_bundle_no_push():
    agent = Agent("a1.example")
    with pytest.raises(InputError, match="holds no certificate"):
        push(Fleet(agent), bundle=b"not a pem")
    assert agent.commands == []


# --- the table, the targets, the error -------------------------------------------------------

def test_the_table():
    table = agents.render_pushes([
        agents.AgentPush("a1.example", agents.UPDATED, ASIDE),
        agents.AgentPush("agent-two.example", agents.CURRENT),
        agents.AgentPush("a3", agents.FAILED, error="its cert a3 is not signed by this CA;\nnothing changed"),
    ]).splitlines()
    assert table[0].split() == ["HOST", "RESULT", "OLD", "CA", "KEPT", "AT"]
    assert table[1].split() == ["a1.example", "updated", ASIDE]
    assert table[2].split()[-1] == "-" and "already current" in table[2]
    assert table[3].split(None, 3) == ["a3", "FAILED", "-", "its cert a3 is not signed by this CA; nothing changed"]
    assert table[4] == "3 agents: 1 updated, 1 already current, 1 failed"
    # The columns line up: every row's result starts where the header's does.
    at = table[0].index("RESULT")
    assert all(line[at - 2:at] == "  " and line[at] != " " for line in table[1:4])


def test_agent_targets_from_the_flag():
    resolved = []

    def resolve(name):
        resolved.append(name)
        return Target("a1.example") if name == "a1" else parse_target(name)

    targets = agents.agent_targets(" a1, ,root@a2.example:2222,a1,a1.example,ops@a3.example,", resolve)
    assert [(t.address, t.port, t.user) for t in targets] == [("a1.example", 22, "root"), ("a2.example", 2222, "root"),
                                                             ("a3.example", 22, "ops")]
    assert resolved == ["a1", "root@a2.example:2222", "a1.example", "ops@a3.example"]  # `a1` asked once


def test_two_ssh_config_aliases_of_one_agent_are_one_agent(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host web1 web1-backup\n  HostName Web1.Example\n")
    targets = agents.agent_targets("web1,web1-backup,web1.example,web1.example:2222", parse_target)
    assert [(t.address, t.port) for t in targets] == [("web1", 22), ("web1.example", 2222)]


@pytest.mark.parametrize("spec", ["", " , ,", None])
def test_agent_targets_needs_an_agent(spec):
    with pytest.raises(InputError, match=r"names no agent: give an alias or \[root@\]host\[:port\], several as a,b,c"):
        agents.agent_targets(spec, parse_target)


def test_agent_targets_passes_a_bad_name_on():
    with pytest.raises(InputError, match="port"):
        agents.agent_targets("a1.example,a2.example:99999", parse_target)


def test_agents_not_updated_is_its_own_exit_code():
    error = AgentsNotUpdated("1 of 3 agents did not get the new CA bundle")
    assert isinstance(error, PeRemoteError) and error.exit_code == 10
    assert "did not reach every agent" in AgentsNotUpdated.__doc__
