"""Unit tests: a run journal read back from the master is input like any other.

Before: a truncated last line, an unknown field or an unknown flavor crashed every later `regen` on
that master with a traceback, and hostile values (`certname 'x;reboot'`, `ssldir /etc`,
`run_id ../../etc/x`) were accepted into the rollback's commands.
"""

from __future__ import annotations

import json

import pytest

from pe_remote.backup import RemoteBackup
from pe_remote.errors import JournalDamaged
from pe_remote.journal import Journal, event, parse_journal
from test_unit_trust import RECORDED

RUN_ID = f"20261128T001500Z-{RECORDED.certname}"
PATH = f"/root/pe-remote-backups/{RUN_ID}.journal"
BACKUP = RemoteBackup(f"/root/pe-remote-backups/20261128T001500Z-{RECORDED.certname}-ssl.tar.gz", "a" * 64, 1234)


def header(**changes) -> dict:
    head = json.loads(Journal(RUN_ID, RECORDED, ("puppet",), BACKUP, "/local/b.tar.gz").header())
    for dotted, value in changes.items():
        where = head
        *parents, last = dotted.split(".")
        for key in parents:
            where = where[key]
        where[last] = value
    return head


def text(head: dict, *events: str) -> str:
    return "\n".join([json.dumps(head), *events]) + "\n"


def test_a_good_journal_round_trips():
    journal = parse_journal(PATH, text(header(), event("begin", step="stop:puppet"), event("end", step="stop:puppet")))
    assert journal.run_id == RUN_ID and journal.facts == RECORDED and journal.done == ["stop:puppet"]
    assert journal.backup == BACKUP


def test_steps_that_began_are_kept_apart_from_those_done():
    journal = parse_journal(PATH, text(header(), event("begin", step="clean"), event("end", step="clean"),
                                       event("begin", step="generate")))
    assert journal.done == ["clean"] and journal.begun == ["clean", "generate"]
    with pytest.raises(JournalDamaged, match="unknown step"):
        parse_journal(PATH, text(header(), event("begin", step="$(reboot)")))


def test_a_last_line_cut_off_mid_write_is_ignored():
    cut = text(header(), event("end", step="stop:puppet"), event("end", step="clean")[:9])
    assert parse_journal(PATH, cut).done == ["stop:puppet"]


def test_unknown_fields_from_a_newer_version_are_ignored():
    head = header()
    head["facts"]["something_new"] = 1
    head["facts"]["cert"]["also_new"] = "x"
    head["future"] = True
    assert parse_journal(PATH, text(head)).facts == RECORDED


@pytest.mark.parametrize("changes, says", [
    ({"facts.flavor": "pe99"}, "pe99"),
    ({"facts.certname": "x;reboot"}, "x;reboot"),
    ({"facts.ssldir": "/etc"}, "system folder"),
    ({"facts.cadir": "/var/lib/puppet/../../etc"}, "normalized"),
    ({"run_id": "../../etc/x"}, "run id"),
    ({"run_id": f"20261399T250000Z-{RECORDED.certname}"}, "does not match format"),  # no such date
    ({"alt_names": ["$(reboot)"]}, "reboot"),
    ({"backup.path": "/etc/shadow"}, "backup"),
    ({"backup.sha256": "x"}, "backup"),
    ({"facts.cert.serial": "."}, "serial"),  # a regex that every CRL would match
    ({"facts.services": [{"name": "a;b", "exists": True, "active": True, "state": "active"}]}, "service"),
    # Wrong types: before, tracebacks (AttributeError, TypeError) on every later run on the master.
    ({"facts": []}, "header pe-remote did not write"),
    ({"facts.ssldir": None}, "ssldir"),
    ({"facts.cert.sans": [5]}, "header pe-remote did not write"),
    ({"facts.services": [{"name": "puppet", "exists": True, "active": "yes", "state": "active"}]}, "active"),
    ({"facts.uid": "0"}, "uid"),
    ({"facts.uid": True}, "uid"),
    ({"facts.dns_alt_names": "puppet"}, "header pe-remote did not write"),
    # What discovery would refuse, a journal must not bring in.
    ({"facts.init_system": "upstart; reboot"}, "init system"),
    ({"facts.puppet": "/tmp/x"}, "puppet binary '/tmp/x'"),
    ({"facts.puppetserver": "rm"}, "puppetserver binary 'rm'"),
    ({"facts.hostprivkey": "/etc/puppetlabs/key.pem"}, "outside the ssldir"),
])
def test_hostile_or_unknown_values_are_refused_saying_how_to_move_it_aside(changes, says):
    with pytest.raises(JournalDamaged) as info:
        parse_journal(PATH, text(header(**changes)))
    message = str(info.value)
    assert says in message and f"mv {PATH} {PATH}.damaged" in message and "\n" not in message
    assert info.value.exit_code == 6


@pytest.mark.parametrize("line", ["[" * 100000 + "]" * 100000, '{"event": "end", "n": ' + "9" * 5000 + "}"])
def test_json_that_python_refuses_to_read_is_a_damaged_journal_not_a_traceback(line):
    # Nested past the recursion limit, or a number over 4300 digits: RecursionError / ValueError before.
    with pytest.raises(JournalDamaged, match="damaged at line 2"):
        parse_journal(PATH, text(header()) + line + "\n" + event("end", step="clean") + "\n")


def test_a_journal_under_another_name_is_refused():
    with pytest.raises(JournalDamaged, match="not its own"):
        parse_journal("/root/pe-remote-backups/other.journal", text(header()))


@pytest.mark.parametrize("body", ["", "not json\n", "[1, 2]\n", json.dumps({"event": "begin"}) + "\n",
                                  json.dumps(header()) + "\n{broken\n" + event("end", step="clean") + "\n"])
def test_damaged_journals_are_refused(body):
    with pytest.raises(JournalDamaged, match="damaged"):
        parse_journal(PATH, body)


def test_an_unknown_step_is_refused():
    with pytest.raises(JournalDamaged, match="unknown step"):
        parse_journal(PATH, text(header(), event("end", step="rm -rf /")))
