"""The README's exit-code table is what the code does: every code it lists comes from the error the
library raises for that case, through the same wrapper the tasks use, and no error class has a code
the table does not explain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke import Exit

from pe_remote import errors
from pe_remote.cli import exits_cleanly

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_codes() -> dict[int, str]:
    table = README[README.index("### Exit codes"):]
    table = table[:table.index("\n\n", table.index("| code |"))]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+) \|$", table, re.M)}


CASES = [  # (code, what raises it, words of the README row that describe it)
    (2, lambda: errors.InputError("bad flag"), "bad input"),
    (2, lambda: errors.InvalidName("bad alt name"), "invalid alt names"),
    (3, lambda: errors.ConnectionFailed("unreachable"), "SSH failed"),
    (3, lambda: errors.HostKeyRejected("unknown key"), "host key unknown"),
    (4, lambda: errors.Refused("hostile certname"), "refused as unsafe"),
    (5, lambda: errors.Aborted("said no"), "the operator said no"),
    (6, lambda: errors.BackupError("disk full"), "the backup"),
    (6, lambda: errors.DiscoveryError("no puppet"), "discovery"),
    (6, lambda: errors.JournalDamaged("damaged"), "discovery"),
    (6, lambda: errors.RemoteCommandFailed("x", 1, "y"), "a remote command failed"),
    (7, lambda: errors.RolledBack("rolled back"), "rolled back"),
    (8, lambda: errors.Incomplete("lost"), "NOT rolled back"),
    (9, lambda: errors.Mismatch("verify"), "`verify` found a mismatch"),
    (130, lambda: KeyboardInterrupt(), "interrupted"),
]


@pytest.mark.parametrize("code, make, words", CASES, ids=[f"{c}-{w}" for c, _, w in CASES])
def test_each_row_is_what_the_wrapper_exits_with(code, make, words):
    rows = readme_codes()
    assert code in rows and words in rows[code], (code, rows.get(code))

    @exits_cleanly
    def task():
        raise make()

    with pytest.raises(Exit) as info:
        task()
    assert info.value.code == code


def test_every_error_class_code_is_in_the_table():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    codes = {cls.exit_code for cls in subclasses(errors.PeRemoteError) if cls is not errors.FleetFailed}
    assert codes <= set(readme_codes()), codes - set(readme_codes())
    assert set(readme_codes()) == codes | {0, 130}


def test_several_hosts_exit_with_the_most_severe_code_in_the_readmes_order():
    said = re.search(r"in this order\s+\(`pe_remote/errors.py`, `EXIT_SEVERITY`\): ([\d >]+)", README)
    assert said, "the README states the order of severity"
    assert tuple(int(code) for code in said[1].split(">")) == errors.EXIT_SEVERITY
    assert set(readme_codes()) - {0} <= set(errors.EXIT_SEVERITY)  # every failure the table lists is ranked
    assert errors.most_severe([4, 8]) == errors.most_severe([8, 4]) == 8  # not the first in list order
    assert errors.most_severe([2, 5, 3, 6]) == 6
    assert errors.most_severe([10, 7]) == 7 and errors.most_severe([9, 10]) == 10
    assert errors.most_severe([130, 5]) == 130 and errors.most_severe([2, 130, 4]) == 4
    assert errors.most_severe([None, 7]) == errors.most_severe([42, 7]) == 1  # no code / unknown: a bug
    assert errors.most_severe([]) == errors.most_severe([0, 0]) == 0
