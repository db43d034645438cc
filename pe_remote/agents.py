"""`extend-ca --agents`: after the master's CA bundle is renewed, push it to named agents' cached copy
(`<ssldir>/certs/ca.pem`), the old file kept aside beside it, one result row per agent.

Per agent: its facts are read and validated; an agent already holding the bundle is left alone; an agent
whose own cert the new bundle does not verify belongs to another CA and is refused; otherwise the old
file is copied aside, the new one written over it, and its sha256 checked. A failure is that agent's row,
never an exception: the caller raises `AgentsNotUpdated` when any row failed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

from pe_remote.commands import agents as commands
from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import issued_by, pem_blocks, sha256_hex
from pe_remote.connection import connection_config, ssh_hostname
from pe_remote.discovery import path_problem
from pe_remote.errors import InputError, InvalidName, PeRemoteError
from pe_remote.fleet import DEFAULT_PARALLEL, run_parallel
from pe_remote.flavors import PUPPET_PATHS
from pe_remote.inventory import Target
from pe_remote.names import printable, validate_certname

UPDATED = "updated"
CURRENT = "already current"
FAILED = "failed"


@dataclass(frozen=True)
class AgentPush:
    """One agent's row."""

    host: str
    status: str  # updated, already current, failed
    aside: str = ""  # where the old ca.pem is kept ("": no copy is known to be there)
    error: str = ""  # one line, when failed

    @property
    def ok(self) -> bool:
        return self.status != FAILED


@dataclass(frozen=True)
class AgentFacts:
    uid: int | None
    puppet: str
    ssldir: str
    certname: str
    ca: bytes  # certs/ca.pem (b"": absent)
    cert: bytes  # the agent's own cert (b"": absent)


def parse_agent_facts(output: str) -> AgentFacts:
    found = protocol.split(output)

    def text(name: str) -> str:
        return protocol.decoded(found.get(name, [])).decode(errors="replace")

    puppet = "".join(found.get("puppet", [])).strip()
    return AgentFacts(protocol.number(found.get("uid", [])), puppet, text("ssldir"), text("certname"),
                      protocol.decoded(found.get("ca", [])), protocol.decoded(found.get("cert", [])))


def facts_problem(facts: AgentFacts) -> str | None:
    """Why the agent's answers are not fit to build a changing command from (None: they are)."""
    if facts.uid != 0:
        return f"logged in as uid {facts.uid}, not root: an agent's ssldir is changed as root"
    if not facts.puppet:
        return f"no puppet found (looked in {', '.join(PUPPET_PATHS)})"
    problem = path_problem(facts.ssldir)
    if problem:
        return f"the agent's ssldir {facts.ssldir!r} {problem}"
    try:
        validate_certname(facts.certname, source="the agent's certname")
    except InvalidName as exc:
        return str(exc)
    return None


def aside_path(ssldir: str, now: datetime) -> str:
    """Where the old ca.pem is kept: beside it, named by the UTC time of the push."""
    return f"{commands.ca_bundle_path(ssldir)}.pe-remote-{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def push_ca_bundle(targets: Iterable[Target], bundle: bytes, console, *, connect: Callable | None = None,
                   accept_new_host_key: bool = False, parallel: int = DEFAULT_PARALLEL,
                   now: datetime | None = None) -> list[AgentPush]:
    """Put `bundle` into every target's certs/ca.pem (see the module docstring); one row per target, in order."""
    if not pem_blocks(bundle):
        raise InputError("the new CA bundle holds no certificate: nothing to push to the agents")
    targets = list(targets)
    now = now or datetime.now(timezone.utc)
    console.notice(f"Pushing the new CA bundle to {len(targets)} agent{'' if len(targets) == 1 else 's'} ...")

    def per_agent(remote) -> AgentPush:
        row = _push_one(remote, bundle, now)
        console.info(f"{row.host}: {row.status}" + (f": {row.error}" if row.error else ""))
        return row

    # run_parallel, though this changes the agents: each agent's change is its own, small and checked, so
    # one agent failing says nothing about the next (unlike regen's waves); a failure is only its row.
    results = run_parallel(targets, per_agent, max_workers=parallel, connect=connect,
                           accept_new_host_key=accept_new_host_key)
    return [r.value if r.ok else AgentPush(r.label, FAILED, error=r.error or "failed") for r in results]


def _push_one(remote, bundle: bytes, now: datetime) -> AgentPush:
    label = remote.target.label
    facts = parse_agent_facts(remote.run(commands.agent_facts(), check=False).stdout)
    problem = facts_problem(facts)
    if problem:
        return AgentPush(label, FAILED, error=f"{problem}; nothing changed")
    ca = commands.ca_bundle_path(facts.ssldir)
    if facts.ca == bundle:
        return AgentPush(label, CURRENT)
    if not facts.ca:
        # No cached CA bundle: the agent fetches one on its next run; there is nothing to keep aside.
        return AgentPush(label, FAILED, error=f"{ca} is absent (the agent fetches the CA cert itself); nothing changed")
    if facts.cert and not issued_by(facts.cert, bundle):
        return AgentPush(label, FAILED, error=f"its cert {facts.certname} is not signed by this CA; nothing changed")
    aside = aside_path(facts.ssldir, now)
    old_sha, new_sha = sha256_hex(facts.ca), sha256_hex(bundle)
    try:
        found = protocol.split(remote.run(commands.replace_ca_bundle(facts.ssldir, base64.b64encode(bundle).decode(),
                                                                     aside), check=False).stdout)
    except PeRemoteError as exc:  # the connection lost mid-change: what is there now is unknown
        return AgentPush(label, FAILED, error=f"{exc}; check {ca}: the old one may be kept at {aside}")
    status = protocol.number(found.get("status", []))
    now_sha = "".join(found.get("sha256", [])).strip()
    kept = aside if "".join(found.get("aside_sha256", [])).strip() == old_sha else ""
    if status == 0 and now_sha == new_sha:
        return AgentPush(label, UPDATED, kept)
    said = protocol.decoded(found.get("output", [])).decode(errors="replace").strip().splitlines()
    why = printable(said[-1].strip())[:300] if said else f"exit {status}"
    if now_sha == old_sha:
        return AgentPush(label, FAILED, kept, f"replacing {ca} failed ({why}); it is unchanged")
    return AgentPush(label, FAILED, kept, f"{ca} has sha256 {now_sha or 'nothing'} after the write, not the new "
                                          f"bundle's ({why}): put the old one back from {aside}")


def render_pushes(rows: list[AgentPush]) -> str:
    """Plain-text table: host, result, where the old CA is kept, and why a row failed; then a total line."""
    lines = [("HOST", "RESULT", "OLD CA KEPT AT", "")]
    lines += [(r.host, r.status.upper() if r.status == FAILED else r.status, r.aside or "-", r.error) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    text = [f"{h:<{widths[0]}}  {s:<{widths[1]}}  {a:<{widths[2]}}  {' '.join(e.split())}".rstrip()
            for h, s, a, e in lines]
    counts = ", ".join(f"{sum(1 for r in rows if r.status == s)} {s}" for s in (UPDATED, CURRENT, FAILED))
    text.append(f"{len(rows)} agent{'' if len(rows) == 1 else 's'}: {counts}")
    return printable("\n".join(text))


def agent_targets(spec: str | None, resolve: Callable[[str], Target]) -> list[Target]:
    """`--agents a,b,root@host:port` -> one Target per agent (blanks dropped, duplicates removed)."""
    names = [name.strip() for name in (spec or "").split(",") if name.strip()]
    if not names:
        raise InputError(f"--agents {spec!r} names no agent: give an alias or [root@]host[:port], several as a,b,c")
    targets: dict[tuple[str, int], Target] = {}
    config = connection_config()  # the SSH config files, read once for every name
    for name in dict.fromkeys(names):
        target = resolve(name)
        # An alias and its address are one agent (an inventory's or the SSH config's): two pushes at once
        # to it would race on ca.pem.
        targets.setdefault((ssh_hostname(target.address, config), target.port), target)
    return list(targets.values())
