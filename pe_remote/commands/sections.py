"""The one output protocol: a remote script prints `==> name <==` (or `==> name arg <==`) lines,
each opening a section that runs to the next marker.

Whatever a master can put into the output freely (a step's own output, file contents) travels
base64-encoded inside its section (`encoded`, `decoded`), so it can never open a section of its own.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from pe_remote.commands.shell import q

_MARKER = re.compile(r"==> ([a-z][a-z0-9_-]*)(?: (.+?))? <==")


@dataclass(frozen=True)
class Section:
    name: str
    arg: str  # "" when the marker has none
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def marker(name: str, arg: str = "") -> str:
    return f"==> {name} {arg} <==" if arg else f"==> {name} <=="


def mark(name: str, arg: str = "") -> str:
    """Shell that opens section `name` (arg: a fixed value, quoted)."""
    return f"echo {q(marker(name, arg))}"


def mark_with(name: str, shell_value: str) -> str:
    """Shell that opens section `name` whose arg is a value known only on the master (`"$j"`)."""
    return f"printf '==> %s %s <==\\n' {q(name)} {shell_value}"


def encoded(command: str) -> str:
    """Shell that sends `command`'s output base64-encoded (read back with `decoded`)."""
    return f"{{ {command}\n}} | base64"


def file_encoded(path: str) -> str:
    """Shell that sends a file base64-encoded; nothing when it is absent."""
    return f"[ ! -f {q(path)} ] || base64 < {q(path)}"


def parse(output: str) -> list[Section]:
    """Every section in order (text before the first marker, a login banner say, is ignored)."""
    sections: list[Section] = []
    name = arg = None
    lines: list[str] = []
    for line in output.splitlines():
        match = _MARKER.fullmatch(line.strip())
        if match:
            if name is not None:
                sections.append(Section(name, arg or "", tuple(lines)))
            name, arg, lines = match.group(1), match.group(2), []
        elif name is not None:
            lines.append(line.rstrip("\n"))
    if name is not None:
        sections.append(Section(name, arg or "", tuple(lines)))
    return sections


def split(output: str) -> dict[str, list[str]]:
    """name -> lines, the first section of each name."""
    found: dict[str, list[str]] = {}
    for section in parse(output):
        found.setdefault(section.name, list(section.lines))
    return found


def marker_name(line: str) -> tuple[str, str] | None:
    """(name, arg) if `line` is a marker, else None."""
    match = _MARKER.fullmatch(line.strip())
    return (match.group(1), match.group(2) or "") if match else None


def number(lines: list[str] | tuple[str, ...]) -> int | None:
    """The integer a section carries on its first non-empty line (an exit status), None if none."""
    values = [line.strip() for line in lines if line.strip()]
    return int(values[0]) if values and re.fullmatch(r"-?[0-9]+", values[0]) else None


def decoded(lines: list[str] | tuple[str, ...]) -> bytes:
    """The bytes an `encoded` section carried (b"" when it carried nothing readable)."""
    try:
        return base64.b64decode("".join(line.strip() for line in lines), validate=True)
    except (binascii.Error, ValueError):
        return b""
