"""Unit tests for regen's reload path (Puppet Server 6+ whose unit can reload): the plan it builds and
every fallback to the stop/start path, the journal that rebuilds the same path on a resume or a rollback,
discovery's `reloadable` section, where the executor opens the downtime window, and the two shell
builders the path brings (`with_ca_frozen`, run for real on a CA-like folder; `ca_endpoint_clean`, run
against a fake curl)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from fakes import FakeRemote, QuietConsole, Result
from pe_remote import executor
from pe_remote.commands import steps as sh
from pe_remote.discovery import parse_discovery
from pe_remote.events import Events
from pe_remote.flavors import PE37, PE2016, PE2019, PUPPET5, PUPPET6, SERVER_SERVICES
from pe_remote.journal import Journal, parse_journal
from pe_remote.plan import SERVER_READY_TIMEOUT, build_plan, fill, server_ready_check
from pe_remote.regen import RegenJob
from pe_remote.render import render_plan
from test_unit_discovery import OSS7
from test_unit_executor_console import Clock
from test_unit_flavors_plan import ALT, RECORDED, facts_for, keys, step
from test_unit_journal_parse import BACKUP, PATH, RUN_ID

SERVER = "puppetserver"
RELOADABLE = dataclasses.replace(RECORDED, reloadable=(SERVER,))
RELOAD_KEYS = ["stop:puppet", "clean", "delete-leftovers", "remove-catalog", "generate", f"reload:{SERVER}",
               "wait-server", "start:puppet"]


def reload_plan(facts=RELOADABLE, **options):
    return build_plan(facts, ALT, **options)


# --- 1. the reload plan on the recorded Puppet 7 master --------------------------------------------

def test_the_recorded_master_takes_the_reload_path_when_its_unit_can_reload():
    assert RECORDED.flavor is PUPPET6 and RECORDED.reloadable == ()  # the recording predates the section
    assert not RECORDED.server_reloads and RELOADABLE.server_reloads
    plan = reload_plan()
    assert plan.path == "reload"
    assert keys(plan) == RELOAD_KEYS


def test_the_reload_path_never_stops_or_starts_the_server():
    plan = reload_plan()
    assert not [k for k in keys(plan) if k in (f"stop:{SERVER}", f"start:{SERVER}")]
    # Not even hidden inside another step's command (a stop/start of the server by `puppet resource`).
    for s in plan.steps:
        assert f"service {SERVER} ensure=" not in s.command, s.key
    # Only the agent is stopped, before the cert work, and started again after the server serves.
    assert keys(plan).index("stop:puppet") < keys(plan).index("clean")
    assert keys(plan).index("start:puppet") > keys(plan).index("wait-server")
    assert step(plan, "stop:puppet").superseded_by == ("start:puppet",)


def test_generate_runs_beside_the_running_ca_frozen_and_forced():
    plan = reload_plan()
    generate = step(plan, "generate").command
    online = fill(PUPPET6.generate_online, RELOADABLE, ALT)
    assert generate == sh.with_ca_frozen(RELOADABLE.cadir, online)
    assert "--force" in shlex.split(online) and shlex.split(online)[:3] == ["/usr/bin/puppetserver", "ca", "generate"]
    # The restart path's generate (offline, the server stopped) is neither frozen nor forced.
    offline = step(reload_plan(restart=True), "generate").command
    assert "--force" not in shlex.split(offline) and "chown" not in offline
    # The CA's folder itself is among what is frozen.
    assert f"CAD={shlex.quote(RELOADABLE.cadir)};" in generate


def test_the_clean_goes_through_the_running_ca_and_its_crl_decides():
    clean = step(reload_plan(), "clean")
    assert "/puppet-ca/v1/clean" in clean.command
    assert clean.check == sh.serial_revoked(RELOADABLE.cadir + "/ca_crl.pem", RELOADABLE.cert.serial)


def test_the_reload_is_queued_and_opens_the_window():
    plan = reload_plan()
    reload = step(plan, f"reload:{SERVER}")
    assert shlex.split(reload.command) == ["systemctl", "reload", "--no-block", f"{SERVER}.service"]
    assert reload.opens_window and not reload.server_ready
    assert [s.key for s in plan.steps if s.opens_window] == [reload.key]


def test_wait_server_is_the_server_ready_step_right_after_the_reload():
    plan = reload_plan(server_timeout=77)
    assert [s.key for s in plan.steps if s.server_ready] == ["wait-server"]
    wait = step(plan, "wait-server")
    assert keys(plan).index("wait-server") == keys(plan).index(f"reload:{SERVER}") + 1
    assert wait.command == server_ready_check(RELOADABLE, 77) and wait.timeout == 77 + 60
    assert step(plan, "start:puppet").command == sh.service_command(RELOADABLE, "puppet", "running", timeout=77)


def test_the_reload_plan_is_a_valid_chain():
    needs = reload_plan().needs()  # raises if a step needs a later or unknown step
    assert list(needs) == RELOAD_KEYS
    assert [needs[k] for k in RELOAD_KEYS] == [()] + [(k,) for k in RELOAD_KEYS[:-1]]


def test_without_the_agent_running_the_reload_plan_has_no_service_steps():
    facts = facts_for(PUPPET6, active=(SERVER,), inactive=("puppet",), reloadable=(SERVER,))
    plan = reload_plan(facts)
    assert plan.path == "reload" and plan.stopped_services == ("puppet",)
    assert keys(plan) == [k for k in RELOAD_KEYS if k not in ("stop:puppet", "start:puppet")]
    plan.needs()


# --- 2. every fallback to the restart path, and why ---------------------------------------------

def _no_reload_step(plan) -> None:
    assert plan.path == "restart"
    assert not [s for s in plan.steps if s.opens_window or s.key.startswith("reload:")]
    assert "--force" not in step(plan, "generate").command


def test_restart_forces_the_stop_start_plan():
    plan = reload_plan(restart=True)
    _no_reload_step(plan)
    assert plan.path_why == "--restart"
    # Exactly the plan of a master whose unit cannot reload: the generation's documented procedure.
    assert plan.steps == build_plan(RECORDED, ALT).steps
    assert f"stop:{SERVER}" in keys(plan) and f"start:{SERVER}" in keys(plan)


def test_a_unit_that_cannot_reload_falls_back():
    plan = build_plan(RECORDED, ALT)
    _no_reload_step(plan)
    assert plan.path_why == f"the {SERVER} unit cannot reload (no ExecReload)"


def test_another_generations_server_in_reloadable_does_not_count():
    plan = build_plan(dataclasses.replace(RECORDED, reloadable=("pe-puppetserver",)), ALT)
    _no_reload_step(plan)
    assert plan.path_why == f"the {SERVER} unit cannot reload (no ExecReload)"


def test_a_server_that_is_not_running_falls_back():
    facts = facts_for(PUPPET6, active=("puppet",), inactive=(SERVER,), reloadable=(SERVER,))
    assert not facts.server_reloads
    plan = build_plan(facts, ALT)
    _no_reload_step(plan)
    assert plan.path_why == f"{SERVER} is not running"
    assert "wait-server" not in keys(plan) and f"start:{SERVER}" not in keys(plan)


@pytest.mark.parametrize("flavor", [PE37, PE2016, PUPPET5, PE2019], ids=lambda f: f.name)
def test_generations_that_read_a_new_cert_only_on_a_start_fall_back(flavor):
    facts = facts_for(flavor, reloadable=SERVER_SERVICES)  # even with every server unit able to reload
    assert not facts.server_reloads
    plan = build_plan(facts, ALT)
    _no_reload_step(plan)
    assert plan.path_why == f"{flavor.title} reads a new cert only on a start"
    assert plan.steps == build_plan(facts_for(flavor), ALT).steps


def test_ca_files_that_cannot_be_frozen_fall_back_at_plan_time():
    # A group-writable serial: the running CA's group could still write it, so no freeze is possible;
    # the plan takes the stop/start path instead of failing at the freeze after the backup.
    plan = reload_plan(dataclasses.replace(RELOADABLE, ca_unfreezable=("serial",)))
    _no_reload_step(plan)
    assert plan.steps == build_plan(RECORDED, ALT).steps
    assert plan.path_why.startswith("the CA's serial is writable by group or others")
    assert f"`chmod go-w` them (a link: put its file in its place) in {RECORDED.cadir}" in plan.path_why
    two = reload_plan(dataclasses.replace(RELOADABLE, ca_unfreezable=("serial", "signed")))
    assert two.path == "restart" and two.path_why.startswith("the CA's serial, signed are writable")
    forced = reload_plan(dataclasses.replace(RELOADABLE, ca_unfreezable=("serial",)), restart=True)
    assert forced.path_why == "--restart"


# --- 3. the journal rebuilds the path the run took ----------------------------------------------

def _journal_text(facts, job=None, **head_changes) -> str:
    head = json.loads(Journal(RUN_ID, facts, ALT, BACKUP, "/local/b.tar.gz",
                              **({} if job is None else {"job": job})).header())
    for key, value in head_changes.items():
        head["facts"][key] = value
    return json.dumps(head) + "\n"


def _rebuilt(text: str):
    journal = parse_journal(PATH, text)
    return journal, RegenJob(FakeRemote(), Events()).plan(journal)


@pytest.mark.parametrize("restart, path", [(False, "reload"), (True, "restart")])
def test_the_journal_rebuilds_the_same_path(restart, path):
    ran = reload_plan(restart=restart)
    journal, rebuilt = _rebuilt(_journal_text(RELOADABLE, {"restart": restart}))
    assert journal.facts.reloadable == (SERVER,) and journal.job == {"restart": restart}
    assert rebuilt.path == ran.path == path
    assert rebuilt.steps == ran.steps


def test_restart_must_be_recorded_as_true_to_count():
    _, rebuilt = _rebuilt(_journal_text(RELOADABLE, {"restart": "yes"}))
    assert rebuilt.path == "reload"


def test_a_journal_of_an_older_pe_remote_resumes_on_the_restart_path():
    # No `reloadable` in its facts and no job: that version only knew the stop/start procedure.
    head = json.loads(_journal_text(RELOADABLE))
    del head["facts"]["reloadable"]
    del head["job"]
    journal, rebuilt = _rebuilt(json.dumps(head) + "\n")
    assert journal.facts.reloadable == () and rebuilt.path == "restart"
    assert rebuilt.steps == build_plan(RECORDED, ALT).steps


def test_unknown_names_in_the_journals_reloadable_are_dropped():
    text = _journal_text(RECORDED, {"restart": False},
                         reloadable=["$(reboot)", "sshd", SERVER, "puppetserver.service", "pe-puppetserver"])
    journal, rebuilt = _rebuilt(text)
    assert journal.facts.reloadable == (SERVER, "pe-puppetserver")
    assert rebuilt.path == "reload"
    only_unknown = _journal_text(RECORDED, {"restart": False}, reloadable=["sshd", "puppetserver "])
    assert _rebuilt(only_unknown)[1].path == "restart"


def test_the_journal_keeps_what_could_not_be_frozen_and_drops_unknown_names():
    facts = dataclasses.replace(RELOADABLE, ca_unfreezable=("serial",))
    journal, rebuilt = _rebuilt(_journal_text(facts, {"restart": False}))
    assert journal.facts.ca_unfreezable == ("serial",) and rebuilt.path == "restart"
    hostile = _journal_text(RELOADABLE, {"restart": False}, ca_unfreezable=["../../etc/passwd", "$(reboot)"])
    journal, rebuilt = _rebuilt(hostile)
    assert journal.facts.ca_unfreezable == () and rebuilt.path == "reload"


# --- 4. discovery's reloadable section ----------------------------------------------------------

def _with_reloadable(*lines: str) -> str:
    assert "==> reloadable <==" not in OSS7
    return OSS7.rstrip("\n") + "\n==> reloadable <==\n" + "".join(line + "\n" for line in lines)


def test_a_known_server_unit_that_can_reload_is_kept():
    facts = parse_discovery(_with_reloadable(SERVER))
    assert facts.reloadable == (SERVER,) and facts.server_reloads
    assert build_plan(facts, ALT).path == "reload"


def test_unknown_or_hostile_names_in_the_reloadable_section_are_dropped():
    facts = parse_discovery(_with_reloadable("sshd", "$(touch /tmp/PWNED)", f"{SERVER}; reboot",
                                             f"{SERVER}.service", "", f"  {SERVER}  ", "pe-puppetserver"))
    assert facts.reloadable == (SERVER, "pe-puppetserver")
    only_hostile = parse_discovery(_with_reloadable("sshd", f"{SERVER};reboot"))
    assert only_hostile.reloadable == () and not only_hostile.server_reloads


def test_no_reloadable_section_means_nothing_reloads():
    facts = parse_discovery(OSS7)  # no systemd (the section is empty) or an older discovery script
    assert facts.reloadable == () and build_plan(facts, ALT).path == "restart"


def test_discovery_names_the_ca_files_that_cannot_be_frozen_and_drops_anything_else():
    text = _with_reloadable(SERVER) + "==> unfreezable <==\nserial\n../serial\n$(reboot)\n  ca_crl.pem \n"
    facts = parse_discovery(text)
    assert facts.ca_unfreezable == ("serial", "ca_crl.pem")
    assert facts.server_reloads and build_plan(facts, ALT).path == "restart"
    assert parse_discovery(_with_reloadable(SERVER)).ca_unfreezable == ()


def test_discovery_says_when_a_freeze_of_the_ca_files_was_cut_off_and_no_journal_records_it():
    facts = parse_discovery(_with_reloadable(SERVER) + "==> ca_freeze <==\nleft\n")
    assert facts.ca_freeze_left and not parse_discovery(_with_reloadable(SERVER)).ca_freeze_left
    assert not parse_discovery(_with_reloadable(SERVER) + "==> ca_freeze <==\nleft over\n").ca_freeze_left
    journal, _ = _rebuilt(_journal_text(facts, {"restart": False}))
    assert "ca_freeze_left" not in journal.header() and not journal.facts.ca_freeze_left


# --- 5. the executor opens the window at the reload, not at the agent's stop --------------------

DONE = "==> rc <==\n0\n==> check <==\n0\n"  # what a step that ran and passed its check prints
TICKS = dict(zip(RELOAD_KEYS, (1, 2, 4, 8, 16, 32, 64, 128)))


def test_the_window_opens_at_the_reload_step(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(executor.time, "monotonic", clock.monotonic)
    plan = reload_plan()
    scripts = {executor.step_script(s, None): s.key for s in plan.steps}
    ran: list[str] = []

    def respond(command, index, kwargs):
        key = scripts[command]  # the plan's own step, unchanged
        ran.append(key)
        clock.now += TICKS[key]
        return Result(DONE)

    seen: list[tuple[str, str | None]] = []
    events = Events(lambda e: seen.append((e.name, e.data.get("key"))))
    run = executor.execute(FakeRemote(respond), plan, QuietConsole(), events=events)
    assert ran == RELOAD_KEYS
    started = [key for name, key in seen if name == "step-started"]
    assert started == RELOAD_KEYS
    opened = [i for i, (name, _) in enumerate(seen) if name == "window-opened"]
    assert len(opened) == 1
    assert seen[opened[0] - 1] == ("step-started", f"reload:{SERVER}")
    # The agent's stop and the whole cert work are before the window: it lasts the reload and the wait.
    assert run.downtime_started == 1000 + 1 + 2 + 4 + 8 + 16
    assert run.downtime == TICKS[f"reload:{SERVER}"] + TICKS["wait-server"]
    assert ("window-closed", None) in seen


def test_the_restart_path_still_opens_the_window_at_its_first_stop(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(executor.time, "monotonic", clock.monotonic)
    plan = reload_plan(restart=True)
    run = executor.execute(FakeRemote(lambda *a: Result(DONE)), plan,
                           QuietConsole(), events=Events())
    assert keys(plan)[1].startswith("stop:") and not any(s.opens_window for s in plan.steps)
    assert run.downtime_started == 1000.0  # the clock did not move: opened at a step's start, not None


# --- 6. with_ca_frozen, for real on a CA-like folder ---------------------------------------------

NOBODY = "65534:65534"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")


def _ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    (ca / "signed").mkdir(parents=True)
    (ca / "requests").mkdir()
    for name in ("serial", "inventory.txt", "ca_crl.pem"):
        (ca / name).write_text(name + "\n")
    (ca / "signed" / "other.pem").write_text("x\n")  # a file inside: not frozen, not touched
    subprocess.run(["chown", "-R", NOBODY, str(ca)], check=True)
    subprocess.run(["chmod", "-R", "go-w", str(ca)], check=True)
    return ca


def _owner(path: Path) -> str:
    st = os.lstat(path)
    return f"{st.st_uid}:{st.st_gid}"


def _frozen_paths(ca: Path) -> list[Path]:
    return [ca, ca / "signed", ca / "requests", ca / "serial", ca / "inventory.txt", ca / "ca_crl.pem"]


def _state(tmp_path: Path) -> str:
    """Where a freeze saves the owners it gives back (the master's is under /root/pe-remote-backups)."""
    return str(tmp_path / "ca-freeze.owners")


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def _recorder(ca: Path, out: Path, status: int) -> str:
    """A command (one process, as the plan's generate is) that records the owners it sees, then exits."""
    inner = f'stat -c %u:%g "$1/serial" "$1/signed" "$1/requests" "$1" > "$2"; exit {status}'
    return shlex.join(["sh", "-c", inner, "sh", str(ca), str(out)])


@root_only
def test_a_failing_command_runs_frozen_and_every_owner_comes_back(tmp_path):
    ca = _ca(tmp_path)
    out = tmp_path / "seen"
    proc = _run(sh.with_ca_frozen(str(ca), _recorder(ca, out, 3), state=_state(tmp_path)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    # While the command ran, all of it belonged to root, its group kept (the CA service still reads it).
    assert out.read_text().split() == ["0:65534"] * 4
    assert {p.name: _owner(p) for p in _frozen_paths(ca)} == {p.name: NOBODY for p in _frozen_paths(ca)}
    assert _owner(ca / "signed" / "other.pem") == NOBODY


@root_only
def test_a_succeeding_command_exits_0_and_every_owner_comes_back(tmp_path):
    ca = _ca(tmp_path)
    out = tmp_path / "seen"
    proc = _run(sh.with_ca_frozen(str(ca), _recorder(ca, out, 0), state=_state(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text().split() == ["0:65534"] * 4
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_a_group_writable_path_is_not_frozen_and_the_command_never_runs(tmp_path):
    ca = _ca(tmp_path)
    os.chmod(ca / "serial", 0o664)  # the CA's group could still write it: a freeze would prove nothing
    marker = tmp_path / "ran"
    proc = _run(sh.with_ca_frozen(str(ca), f"touch {shlex.quote(str(marker))}", state=_state(tmp_path)))
    assert proc.returncode == 1 and "writable by its group or by anyone" in proc.stdout, proc.stdout
    assert not marker.exists()
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_each_path_gets_its_own_owner_back(tmp_path):
    ca = _ca(tmp_path)
    owners = {ca: "0:0", ca / "signed": "101:102", ca / "requests": "201:202", ca / "serial": "301:302",
              ca / "inventory.txt": "401:402", ca / "ca_crl.pem": NOBODY}
    for path, owner in owners.items():
        os.chown(path, *map(int, owner.split(":")))
    proc = _run(sh.with_ca_frozen(str(ca), "true", state=_state(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {str(p): _owner(p) for p in owners} == {str(p): o for p, o in owners.items()}


@root_only
def test_files_the_ca_does_not_have_are_skipped(tmp_path):
    ca = _ca(tmp_path)  # no infra_crl.pem, infra_inventory.txt, infra_serials
    proc = _run(sh.with_ca_frozen(str(ca), _recorder(ca, tmp_path / "seen", 0), state=_state(tmp_path)))
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    for name in ("infra_crl.pem", "infra_inventory.txt", "infra_serials"):
        assert not os.path.lexists(ca / name)
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


def test_no_ca_folder_means_the_command_never_runs(tmp_path):
    marker = tmp_path / "ran"
    missing = str(tmp_path / "missing")
    proc = _run(sh.with_ca_frozen(missing, f"touch {shlex.quote(str(marker))}", state=_state(tmp_path)))
    assert proc.returncode == 1 and "no CA folder to freeze" in proc.stdout
    assert not marker.exists()


@root_only
def test_a_command_that_exits_the_shell_still_thaws(tmp_path):
    ca = _ca(tmp_path)
    proc = _run(sh.with_ca_frozen(str(ca), "false; exit 3", state=_state(tmp_path)))
    assert proc.returncode == 3
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_a_finished_freeze_leaves_no_saved_owners(tmp_path):
    ca = _ca(tmp_path)
    for command in ("true", "false; exit 3"):
        _run(sh.with_ca_frozen(str(ca), command, state=_state(tmp_path)))
        assert not os.path.lexists(_state(tmp_path)) and not os.path.lexists(_state(tmp_path) + ".new")


def _cut_off_freeze(tmp_path: Path, ca: Path) -> None:
    """A freeze whose shell is killed while `generate` runs (a reboot, a kill -9): no thaw."""
    proc = _run(sh.with_ca_frozen(str(ca), 'kill -9 $$; sleep 5', state=_state(tmp_path)))
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert all(_owner(p).startswith("0:") for p in _frozen_paths(ca))  # left frozen
    assert os.stat(ca).st_mode & 0o1000  # sticky: frozen


@root_only
def test_a_cut_off_freeze_is_given_back_from_its_saved_owners(tmp_path):
    ca = _ca(tmp_path)
    os.chmod(ca, 0o750)
    _cut_off_freeze(tmp_path, ca)
    assert _run(sh.saved_freeze_exists(_state(tmp_path))).returncode == 0
    proc = _run(sh.thaw_saved_freeze(_state(tmp_path)))
    assert proc.returncode == 0 and "gave the CA files back the owners" in proc.stdout, proc.stdout + proc.stderr
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))
    assert oct(os.stat(ca).st_mode & 0o7777) == "0o750"
    assert _run(sh.saved_freeze_exists(_state(tmp_path))).returncode == 1
    again = _run(sh.thaw_saved_freeze(_state(tmp_path)))  # nothing saved: nothing done, nothing said
    assert again.returncode == 0 and again.stdout == "" and all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_the_next_freeze_after_a_cut_off_one_gives_back_the_first_owners_not_roots(tmp_path):
    # Before: the resumed generate's freeze read root as the owner to give back, and the CA could
    # never write its serial, inventory, CRL or signed/ again.
    ca = _ca(tmp_path)
    _cut_off_freeze(tmp_path, ca)
    out = tmp_path / "seen"
    proc = _run(sh.with_ca_frozen(str(ca), _recorder(ca, out, 0), state=_state(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gave the CA files back the owners saved" in proc.stdout
    assert out.read_text().split() == ["0:65534"] * 4  # frozen again while it ran
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))
    assert not os.path.lexists(_state(tmp_path))


DAMAGED = [
    # a bad line in a file otherwise whole
    *[f"mode=755 /tmp\n{line}\nend\n" for line in ("mode=7x5 /x", "mode= /x", "root /x", "1:1;rm /x", "", "1: /x",
                                                    "end")],
    "",  # written, never synced: empty after a power loss
    "mode=755 /tmp\n0:0 /tmp\n",  # cut short: no end line
    "mode=755 /tmp\n0:0 /tm",
    "0:0 /tmp\nend\n",  # no mode line first
    "mode=755 /tmp\nend\n0:0 /tmp\n",
]


@pytest.mark.parametrize("text", DAMAGED)
def test_damaged_saved_owners_are_refused_kept_and_nothing_is_given_back(tmp_path, text):
    state = tmp_path / "ca-freeze.owners"
    state.write_text(text)
    # A path a whole line of it names: nothing may be given back from a damaged file.
    target = tmp_path / "target"
    target.write_text("")
    os.chmod(target, 0o640)
    state.write_text(text.replace("/tmp", str(target)))
    marker = tmp_path / "ran"
    proc = _run(sh.thaw_saved_freeze(str(state)))
    assert proc.returncode == 1 and "is damaged" in proc.stdout, proc.stdout + proc.stderr
    assert state.exists() and oct(os.stat(target).st_mode & 0o777) == "0o640"
    ca = tmp_path / "ca"
    ca.mkdir()
    frozen = _run(sh.with_ca_frozen(str(ca), f"touch {shlex.quote(str(marker))}", state=str(state)))
    assert frozen.returncode == 1 and "could not give back the owners of a freeze that was cut off" in frozen.stdout
    assert not marker.exists() and state.read_text() == text.replace("/tmp", str(target))


@root_only
def test_a_saved_path_gone_since_is_passed_over(tmp_path):
    # Otherwise the thaw would fail on it every time, and no generate could run again.
    ca = _ca(tmp_path)
    _cut_off_freeze(tmp_path, ca)
    (ca / "inventory.txt").unlink()
    proc = _run(sh.thaw_saved_freeze(_state(tmp_path)))
    assert proc.returncode == 0 and "gave the CA files back" in proc.stdout, proc.stdout + proc.stderr
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca) if p.name != "inventory.txt")
    assert not os.path.exists(_state(tmp_path))


def _saved(ca: Path, *owner_lines: str, ino: str = "1:1") -> str:
    return "".join(f"{line}\n" for line in (f"mode=755 {ca}", f"ino={ino} {ca}", *owner_lines, "end"))


@root_only
@pytest.mark.parametrize("lines, why", [
    (("mode=4777 {ca}/serial",), "more than one mode= line"),  # never applied to a file
    (("0:0 {ca}/serial\x00",), "a NUL byte"),
    (("0:0 serial",), "line 4"),  # a relative path
    (("0:0 {ca}/../etc",), "is not the CA folder or a file it freezes"),
    (("0:0 /etc/shadow",), "is not the CA folder or a file it freezes"),
    (("0:12345678901 {ca}/serial",), "line 4"),  # no uid or gid has eleven digits
    (("0:0 {ca}/serial", "ino=1:1 {ca}"), "more than one ino= line"),
    (("end", "0:0 {ca}/serial"), "more than one end line"),
])
def test_a_saved_file_not_exactly_as_a_freeze_writes_it_is_refused_whole(tmp_path, lines, why):
    ca = _ca(tmp_path)
    state = tmp_path / "ca-freeze.owners"
    state.write_text(_saved(ca, f"0:0 {ca}/signed", *(line.format(ca=ca) for line in lines)))
    proc = _run(sh.thaw_saved_freeze(str(state)))
    assert proc.returncode == 1 and "is damaged" in proc.stdout and why in proc.stdout, proc.stdout + proc.stderr
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca)) and state.exists()  # nothing given back


@root_only
def test_a_thaw_waits_for_a_freeze_still_running_and_never_thaws_under_its_generate(tmp_path):
    # A generate cut off from its connection goes on with the files frozen: a thaw meanwhile (a new run
    # with its journal moved aside) would give them back under it. It waits for the freeze's lock.
    ca = _ca(tmp_path)
    out = tmp_path / "seen"
    freeze = subprocess.Popen(["sh", "-c", sh.with_ca_frozen(str(ca), f"sleep 2; {_recorder(ca, out, 0)}",
                                                          state=_state(tmp_path))])
    try:
        for _ in range(100):
            if os.path.exists(_state(tmp_path)) and _owner(ca / "serial").startswith("0:"):
                break
            time.sleep(0.05)
        thaw = _run(sh.thaw_saved_freeze(_state(tmp_path)))
    finally:
        assert freeze.wait(timeout=30) == 0
    assert out.read_text().split() == ["0:65534"] * 4  # frozen for the whole generate
    assert thaw.returncode == 0 and thaw.stdout == "", thaw.stdout + thaw.stderr  # nothing left to give back
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_a_ca_file_that_is_a_link_is_never_frozen_and_its_target_never_given_away(tmp_path):
    # Root's chown would follow it: the thaw would give the link's target (/etc/shadow, say) to the CA's
    # user. Discovery sends such a master down the restart path; the freeze refuses it again.
    ca = _ca(tmp_path)
    target = tmp_path / "shadow"
    target.write_text("secret\n")
    (ca / "serial").unlink()
    (ca / "serial").symlink_to(target)
    os.lchown(ca / "serial", 65534, 65534)
    marker = tmp_path / "ran"
    proc = _run(sh.with_ca_frozen(str(ca), f"touch {shlex.quote(str(marker))}", state=_state(tmp_path)))
    assert proc.returncode == 1 and "serial is a symbolic link" in proc.stdout, proc.stdout + proc.stderr
    assert not marker.exists() and _owner(target) == "0:0" and _owner(ca / "serial") == NOBODY
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca) if p.name != "serial")


@root_only
def test_a_thaw_from_the_saved_file_never_follows_a_link_put_in_a_files_place(tmp_path):
    ca = _ca(tmp_path)
    _cut_off_freeze(tmp_path, ca)
    target = tmp_path / "shadow"
    target.write_text("secret\n")
    # Frozen files cannot be replaced by the CA's user (sticky, root's folder): root's own hand did it
    # here, as a stand-in for a swap made before the freeze took hold.
    (ca / "serial").unlink()
    (ca / "serial").symlink_to(target)
    proc = _run(sh.thaw_saved_freeze(_state(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _owner(target) == "0:0" and _owner(ca / "serial") == NOBODY  # the link itself, not its target
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca))


@root_only
def test_a_thaw_from_the_saved_file_gives_nothing_to_a_folder_put_in_the_cas_place(tmp_path):
    ca = _ca(tmp_path)
    _cut_off_freeze(tmp_path, ca)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o700)
    ca.rename(tmp_path / "moved")
    ca.symlink_to(elsewhere)
    proc = _run(sh.thaw_saved_freeze(_state(tmp_path)))
    assert proc.returncode == 1 and "is not the CA folder that was frozen" in proc.stdout, proc.stdout + proc.stderr
    assert _owner(elsewhere) == "0:0" and oct(os.stat(elsewhere).st_mode & 0o7777) == "0o700"
    assert os.path.exists(_state(tmp_path))


@root_only
def test_a_ca_folder_reached_through_a_link_is_frozen_and_given_back_where_it_is(tmp_path):
    ca = _ca(tmp_path)
    link = tmp_path / "ca-link"
    link.symlink_to(ca)
    out = tmp_path / "seen"
    state = _state(tmp_path)
    command = f"{_recorder(ca, out, 0)} && cp {shlex.quote(state)} {shlex.quote(str(tmp_path / 'saved'))}"
    proc = _run(sh.with_ca_frozen(str(link), command, state=state))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text().split() == ["0:65534"] * 4
    assert all(_owner(p) == NOBODY for p in _frozen_paths(ca)) and _owner(link) == "0:0"
    assert f"mode=755 {ca}" in (tmp_path / "saved").read_text().splitlines()


@root_only
def test_the_saved_owners_are_written_whole_before_the_freeze(tmp_path):
    ca = _ca(tmp_path)
    seen = tmp_path / "seen"
    command = shlex.join(["cp", _state(tmp_path), str(seen)])
    assert _run(sh.with_ca_frozen(str(ca), command, state=_state(tmp_path))).returncode == 0
    lines = seen.read_text().splitlines()
    assert lines[0] == f"mode=755 {ca}" and lines[1].startswith("ino=") and lines[1].endswith(f" {ca}")
    assert lines[-1] == "end" and len(lines) == 3 + len(_frozen_paths(ca))
    assert f"{NOBODY} {ca / 'serial'}" in lines


def test_the_saved_owners_live_in_the_root_only_state_folder():
    assert sh.CA_FREEZE_STATE.startswith(sh.REMOTE_STATE_DIR + "/")
    assert sh.CA_FREEZE_STATE in sh.with_ca_frozen("/x/ca", "true")


@pytest.mark.parametrize("mode, link, writable", [
    (0o644, False, False), (0o664, False, True), (0o646, False, True), (0o755, False, False),
    (0o664, True, True), (0o644, True, True), (None, False, False), (None, True, True)])
def test_cannot_be_frozen_is_the_test_discovery_and_the_freeze_share(tmp_path, mode, link, writable):
    target = tmp_path / "serial"
    if mode is not None:
        target.write_text("1\n")
        os.chmod(target, mode)
    path = target
    if link:  # a link is never frozen: root's chown would follow it (its target's mode does not count)
        path = tmp_path / "link"
        path.symlink_to(target)
    proc = _run(f"if {sh.cannot_be_frozen(shlex.quote(str(path)))}; then echo yes; else echo no; fi")
    assert proc.stdout.strip() == ("yes" if writable else "no"), proc.stdout + proc.stderr
    assert sh.cannot_be_frozen('"$2"') in sh.with_ca_frozen("/x", "true")


# --- 7. ca_endpoint_clean against a fake curl ------------------------------------------------------

HOSTILE = "x'y$(touch PWNED1)`touch PWNED2`;touch PWNED3 \"z\n"


def _fake_curl(tmp_path: Path, code: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$ARGV_FILE\"\nprintf %s \"$FAKE_CODE\"\n")
    curl.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGV_FILE": str(tmp_path / "argv"),
            "FAKE_CODE": code}


def _clean(tmp_path: Path, certname: str, code: str, fallback: str = "echo FALLBACK"):
    env = _fake_curl(tmp_path, code)
    command = sh.ca_endpoint_clean(certname, "/ssl/certs/m.pem", "/ssl/private_keys/m.pem", "/ssl/certs/ca.pem",
                                   fallback)
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    return proc, argv


def test_a_hostile_certname_reaches_curl_as_data_only(tmp_path):
    proc, argv = _clean(tmp_path, HOSTILE, "200")
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob("PWNED*"))
    assert argv[argv.index("--resolve") + 1] == f"{HOSTILE}:8140:127.0.0.1"
    assert argv[-1] == f"https://{HOSTILE}:8140/puppet-ca/v1/clean"
    assert json.loads(argv[argv.index("--data") + 1]) == {"certnames": [HOSTILE]}
    assert argv[argv.index("-X") + 1] == "PUT"
    assert [argv[argv.index(flag) + 1] for flag in ("--cacert", "--cert", "--key")] == \
        ["/ssl/certs/ca.pem", "/ssl/certs/m.pem", "/ssl/private_keys/m.pem"]


def test_the_certname_is_one_quoted_word_in_the_command():
    command = sh.ca_endpoint_clean(HOSTILE, "/c", "/k", "/ca", "true")
    # The command substitution holds curl's argv, every value a quoted word: shlex reads each back whole.
    assert command.startswith("code=$(curl ")
    inner = command[len("code=$("):command.index("); if [")]
    assert shlex.split(inner) == [
        "curl", "-s", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}",
        "--resolve", f"{HOSTILE}:8140:127.0.0.1", "--cacert", "/ca", "--cert", "/c", "--key", "/k", "-X", "PUT",
        "-H", "Content-Type: application/json", "--data", json.dumps({"certnames": [HOSTILE]}),
        f"https://{HOSTILE}:8140/puppet-ca/v1/clean"]


@pytest.mark.parametrize("code, falls_back", [("200", False), ("404", True), ("403", True), ("000", True),
                                              ("2000", True)])
def test_the_cli_runs_only_when_the_endpoint_did_not_answer_200(tmp_path, code, falls_back):
    proc, _ = _clean(tmp_path, RECORDED.certname, code)
    assert proc.returncode == 0
    assert ("FALLBACK" in proc.stdout) is falls_back, proc.stdout
    if falls_back:
        assert f"answered HTTP {code}" in proc.stdout
    else:
        assert "cleaned through the CA endpoint" in proc.stdout


def test_a_failing_fallback_is_the_clean_commands_failure(tmp_path):
    proc, _ = _clean(tmp_path, RECORDED.certname, "404", fallback="echo FALLBACK; false")
    assert "FALLBACK" in proc.stdout and proc.returncode == 1


# --- 8. the shown plan names its path ---------------------------------------------------------

def _path_line(plan) -> str:
    lines = [line.strip() for line in render_plan(plan, "tar ...", "m").splitlines()
             if line.strip().startswith("path: ")]
    assert len(lines) == 1
    return lines[0]


def test_the_shown_plan_names_the_reload_path_and_why():
    plan = reload_plan()
    assert _path_line(plan) == f"path: reload ({plan.path_why})"
    assert plan.path_why.startswith(f"{SERVER} keeps serving the old cert until it reloads")
    assert "$ systemctl reload --no-block puppetserver.service" in render_plan(plan, "tar ...", "m")


def test_the_shown_plan_names_a_forced_restart():
    assert _path_line(reload_plan(restart=True)) == "path: restart (--restart)"
    assert _path_line(build_plan(RECORDED, ALT)) == f"path: restart (the {SERVER} unit cannot reload (no ExecReload))"


def test_the_default_server_timeout_is_the_library_default():
    assert step(reload_plan(), "wait-server").timeout == SERVER_READY_TIMEOUT + 60


@root_only
def test_the_ca_folder_stays_writable_for_the_services_own_files_but_sticky_and_gets_its_mode_back(tmp_path):
    ca = _ca(tmp_path)
    os.chmod(ca, 0o750)
    out = tmp_path / "seen"
    inner = 'stat -c "%a %u:%g" "$1" > "$2"'
    proc = _run(sh.with_ca_frozen(str(ca), shlex.join(["sh", "-c", inner, "sh", str(ca), str(out)]), state=_state(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Root's, sticky, group-writable: the service (the group) can make and replace its own files there,
    # never replace or remove a frozen one (Puppet Server 8 rewrites its infra_* files when the folder changes).
    assert out.read_text().split() == ["1770", "0:65534"]
    assert oct(os.stat(ca).st_mode & 0o7777) == "0o750" and _owner(ca) == NOBODY
