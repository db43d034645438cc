"""The CA jobs' runs are journalled like regen's (pe_remote/runs.py): a run cut off is resumed from what
its journal recorded (never from the half-changed master), rolled back or closed by the next run of the
SAME job; another job's unfinished run is refused. On fakes; the real cut-and-resume runs on masters in
tests/test_ca_jobs.py."""

from __future__ import annotations

import dataclasses
import io
import json
import types

import pytest

from pe_remote import crl as refresh_job
from pe_remote import extend_ca as extend_job
from pe_remote import runs
from pe_remote.backup import RemoteBackup
from pe_remote.console import Console
from pe_remote.errors import InputError, JournalDamaged, Refused, RolledBack
from pe_remote.journal import Journal, event, new_run_id, parse_journal
from pe_remote.report import RunReport
from test_unit_backup_verify import RECORDED
from test_unit_crl import NEW, OLD, Master, raw
from test_unit_extend_ca import OLD as OLD_BUNDLE, ca_raw

BACKUP = RemoteBackup("/root/pe-remote-backups/20261204T100000Z-master-ssl.tar.gz", "b" * 64, 1)


def _journal_text(task: str, job: dict, done=(), *, facts=RECORDED) -> tuple[str, str]:
    journal = Journal(new_run_id(facts.certname), facts, (), BACKUP, "/tmp/b.tar.gz", task=task, job=job)
    lines = [journal.header()] + [event("end", step=key) for key in done]
    return journal.remote_path, "\n".join(lines) + "\n"


@pytest.fixture
def master(monkeypatch):
    found = types.SimpleNamespace(journals=(), executed=[], put_back=[], states=[raw(NEW)], backups=0)

    def discover(remote, flavor_override=None):
        return dataclasses.replace(RECORDED, unfinished_journals=found.journals)

    def execute(remote, plan, console, **kwargs):
        found.executed.append((plan, kwargs["done"], kwargs["resume"]))

    def put_back(remote, facts, tarball, sha256, start, console, **_):
        found.put_back.append((tarball, sha256))
        return types.SimpleNamespace(moved_aside=("/etc/puppetlabs/puppet/ssl.pe-remote-failed-x",))

    def no_backup(*args):
        found.backups += 1
        raise AssertionError("a resume takes no new backup")

    for module in (refresh_job, extend_job):
        monkeypatch.setattr(module, "discover", discover)
    monkeypatch.setattr(refresh_job, "read_raw", lambda remote, facts: found.states.pop(0))
    monkeypatch.setattr(runs, "execute", execute)
    monkeypatch.setattr(runs, "put_back", put_back)
    monkeypatch.setattr(runs, "take_backup", no_backup)
    found.remote = Master()
    return found


def _refresh(found, **options):
    console = Console(out=io.StringIO(), assume_yes=True)
    report = RunReport("m")
    try:
        result = refresh_job.refresh_crl(found.remote, console, report=report,
                                         unfinished_run=runs.Unfinished(**options))
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        return exc, report, console
    return result, report, console


def test_a_cut_off_refresh_resumes_from_its_journal_without_a_new_backup(master):
    # Re-signed before the cut: the resume skips it and works from the RECORDED old CRL, not the master's.
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD)), ["resign-crl"]),)
    result, report, console = _refresh(master)
    assert result.outcome == "ok" and report.exit_code == 0, result
    plan, done, resume = master.executed[0]
    assert done == ("resign-crl",) and resume
    assert [s.key for s in plan.steps][:2] == ["resign-crl", "copy-host-crl"]
    assert result.before.ca_crl[0].number == 4 and result.after.ca_crl[0].number == 5
    assert master.backups == 0
    assert any(json.dumps({"event": "finished", "outcome": "ok"}) in c for c in master.remote.commands)
    assert "Found an unfinished run" in console.out.getvalue() and "number 4 -> 5" in console.out.getvalue()


def test_a_cut_off_refresh_is_rolled_back_on_request(master):
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD))),)
    master.states = [raw(OLD)]  # what the rollback finds: the old CRL
    error, report, _ = _refresh(master, rollback=True)
    assert isinstance(error, RolledBack) and report.exit_code == 7, error
    assert master.put_back == [(BACKUP.path, BACKUP.sha256)] and master.executed == []
    assert any(json.dumps({"event": "finished", "outcome": "rolled-back"}) in c for c in master.remote.commands)


def test_a_cut_off_refresh_can_be_closed_touching_nothing(master):
    path, text = _journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD)))
    master.journals = ((path, text),)
    run_id = path.rsplit("/", 1)[1].removesuffix(".journal")
    result, report, _ = _refresh(master, abandon=True, run_id=run_id)
    assert result.outcome == "abandoned" and report.exit_code == 0
    assert master.executed == [] and master.put_back == []
    assert any(json.dumps({"event": "finished", "outcome": "abandoned"}) in c for c in master.remote.commands)


def test_another_jobs_unfinished_run_is_refused_naming_the_job(master):
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD))),)
    console = Console(out=io.StringIO(), assume_yes=True)
    with pytest.raises(Refused, match=r"unfinished refresh-crl run .*finish it first with `refresh-crl`"):
        extend_job.extend_ca(master.remote, console)
    assert master.executed == [] and master.put_back == []


def test_regen_refuses_a_ca_jobs_unfinished_run():
    facts = dataclasses.replace(RECORDED, unfinished_journals=(
        _journal_text("extend-ca", extend_job.ExtendJob.record(15, ca_raw(OLD_BUNDLE), raw(OLD))),))
    with pytest.raises(Refused, match="finish it first with `extend-ca`"):
        runs.chosen_journal(facts, None, "m", "regen")


def test_an_extend_run_records_what_it_needs_to_resume():
    path, text = _journal_text("extend-ca", extend_job.ExtendJob.record(15, ca_raw(OLD_BUNDLE), raw(OLD)))
    years, before, crl_before = extend_job.ExtendJob.recorded(parse_journal(path, text))
    assert years == 15 and before.bundle == OLD_BUNDLE and before.root_key
    assert crl_before.ca_crl[0].number == 4
    plan = extend_job.ExtendJob(None).plan(parse_journal(path, text))
    assert [s.key for s in plan.steps][:3] == ["extend-ca", "copy-host-ca", "resign-crl"]


@pytest.mark.parametrize("damage", [
    lambda job: job["before"].update(ca_crl="not base64!"),
    lambda job: job["before"].pop("ca_cert"),
    lambda job: job["before"].update(can_reload="yes"),
    lambda job: job.update(days=0),
    lambda job: job.update(days=True),
    lambda job: job.update(before="x"),
])
def test_a_record_pe_remote_did_not_write_is_refused_before_any_change(master, damage):
    job = refresh_job.RefreshJob.record(1825, raw(OLD))
    damage(job)
    master.journals = (_journal_text("refresh-crl", job),)
    error, report, _ = _refresh(master)
    assert isinstance(error, JournalDamaged) and report.exit_code == 6, error
    assert "move it aside" in str(error) and master.executed == []


def test_a_journal_of_an_unknown_task_is_damaged():
    path, text = _journal_text("refresh-crl", {})
    with pytest.raises(JournalDamaged, match="task 'format-disk'"):
        parse_journal(path, text.replace('"task": "refresh-crl"', '"task": "format-disk"'))


def test_an_older_journal_without_a_task_is_regens():
    path, text = _journal_text("regen", {})
    head = json.loads(text.splitlines()[0])
    head.pop("task"), head.pop("job")
    assert parse_journal(path, json.dumps(head) + "\n").task == "regen"


def test_rollback_resume_or_abandon_without_an_unfinished_run_is_an_input_error(master):
    error, report, _ = _refresh(master, rollback=True)
    assert isinstance(error, InputError) and "no unfinished run" in str(error) and report.exit_code == 2


# --- a resume asked with another --days / --years than its run recorded ------------------------------

def test_a_resume_asked_with_other_days_is_refused_touching_nothing(master):
    # Without the check it would finish with the recorded 1825 days and report success.
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD)), ["resign-crl"]),)
    console = Console(out=io.StringIO(), assume_yes=True)
    with pytest.raises(InputError, match=r"uses --days 1825, not 30: finish it as recorded \(run refresh-crl "
                                         r"again without --days\).*nothing was changed"):
        refresh_job.refresh_crl(master.remote, console, days=30)
    assert master.executed == [] and master.put_back == [] and master.remote.commands == []


def test_a_resume_asked_with_the_days_it_recorded_goes_on(master):
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD)), ["resign-crl"]),)
    result = refresh_job.refresh_crl(master.remote, Console(out=io.StringIO(), assume_yes=True), days=1825)
    assert result.outcome == "ok" and master.executed[0][2]  # resumed


def test_a_rollback_is_not_refused_for_other_days(master):
    master.journals = (_journal_text("refresh-crl", refresh_job.RefreshJob.record(1825, raw(OLD))),)
    master.states = [raw(OLD)]
    with pytest.raises(RolledBack):
        refresh_job.refresh_crl(master.remote, Console(out=io.StringIO(), assume_yes=True), days=30,
                                unfinished_run=runs.Unfinished(rollback=True))
    assert master.put_back == [(BACKUP.path, BACKUP.sha256)]


def test_an_extend_resume_asked_with_other_years_is_refused_touching_nothing(master):
    master.journals = (_journal_text("extend-ca", extend_job.ExtendJob.record(15, ca_raw(OLD_BUNDLE), raw(OLD))),)
    console = Console(out=io.StringIO(), assume_yes=True)
    with pytest.raises(InputError, match=r"run .* of `extend-ca` uses --years 15, not 5: .*`extend-ca --abandon "):
        extend_job.extend_ca(master.remote, console, years=5)
    assert master.executed == [] and master.put_back == [] and master.remote.commands == []


@pytest.mark.parametrize("given", [0, True, "30", 10 ** 6])
def test_days_out_of_range_or_not_a_number_is_an_input_error(master, given):
    with pytest.raises(InputError, match="--days"):
        refresh_job.refresh_crl(master.remote, Console(out=io.StringIO(), assume_yes=True), days=given)
