"""The backup's commands: make the tarball (streamed or to a file), check it, put it back, and
compare the CA now with the CA in a backup."""

from __future__ import annotations

import posixpath

from pe_remote.commands.sections import mark
from pe_remote.commands.shell import join, q


def _members(paths: list[str]) -> str:
    # Stored relative to / so that `tar -xzf FILE -C /` restores them in place.
    return " ".join(q(p.lstrip("/")) for p in paths)


def _private_folder(path: str) -> str:
    folder = q(posixpath.dirname(path))
    return f"umask 077 && mkdir -p {folder} && chmod 700 {folder}"


def private_folder(folder: str) -> str:
    """Shell that makes `folder` (root-only) if it is not there."""
    return f"umask 077 && mkdir -p {q(folder)} && chmod 700 {q(folder)}"


def create_tarball(paths: list[str], remote_path: str) -> str:
    """Make the tarball atomically (umask 077, temp name, rename) and print its sha256 and size."""
    target, partial = q(remote_path), q(remote_path + ".partial")
    return (f"{_private_folder(remote_path)} && tar -czf {partial} -C / {_members(paths)} && mv {partial} {target} && "
            f"sha256sum {target} && stat -c %s {target}")


def stream_tarball(paths: list[str], remote_path: str) -> str:
    """The streamed form of `create_tarball`: one remote command, one tar.

    `tar -czf -` goes through `tee` into `<remote_path>.partial` AND to stdout (the workstation's
    copy). tar's exit status is kept in `<remote_path>.rc` (a pipeline's status is tee's); only when
    tar and tee both succeeded is the master's copy renamed into place, and its sha256 and size are
    printed on stderr, after all the data. On failure the partial file is removed and it exits 1.
    """
    return _stream(f"set -- {_members(paths)}", remote_path)


def stream_likely_tarball(ssldirs: tuple[str, ...], cadirs: tuple[str, ...], copy_dirs: tuple[str, ...],
                          remote_path: str) -> str:
    """`stream_tarball` of the folders where Puppet usually keeps them, chosen on the master: the first
    of `ssldirs` with a certs/ folder, the first of `cadirs` with a CA cert (none: the CA is inside
    the ssldir), every one of `copy_dirs` there. stderr opens with section `paths` (the folders
    chosen, one per line) then section `tar`, which ends with the sha256 and size. Exit 3, nothing
    written, when no ssldir is found."""
    choose = (f"set --; for d in {_words(ssldirs)}; do if [ -d \"$d/certs\" ]; then set -- \"${{d#/}}\"; break; fi; done\n"
              "[ $# = 1 ] || { echo 'pe-remote: no SSL folder where Puppet usually keeps it' >&2; exit 3; }\n"
              f"for d in {_words(cadirs)}; do if [ -f \"$d/ca_crt.pem\" ]; then set -- \"$@\" \"${{d#/}}\"; break; fi; done\n"
              f"for d in {_words(copy_dirs)}; do if [ -d \"$d\" ]; then set -- \"$@\" \"${{d#/}}\"; fi; done\n"
              f"{{ {mark('paths')}; printf '/%s\\n' \"$@\"; {mark('tar')}; }} >&2")
    return _stream(choose, remote_path)


def _words(values: tuple[str, ...]) -> str:
    return join(values) or "''"


def _stream(members: str, remote_path: str) -> str:
    """Shell: `members` sets the positional parameters to the folders (relative to /), then the stream.

    The sha256 is of the bytes `tee` writes into the master's copy, computed as they pass (a FIFO into
    `sha256sum`), so the file is not read a second time after the stream; the size is the stored
    file's (`stat`). The workstation compares both with what it received."""
    target, partial, rc = q(remote_path), q(remote_path + ".partial"), q(remote_path + ".rc")
    return (f"{members}\n{_private_folder(remote_path)} && H=$(mktemp -d) && mkfifo \"$H/bytes\" && "
            f"{{ sha256sum < \"$H/bytes\" > \"$H/sum\" & }} && "
            f"{{ tar -czf - -C / \"$@\"; echo $? >{rc}; }} | tee {partial} \"$H/bytes\" && wait && "
            f"[ \"$(cat {rc})\" = 0 ] && rm -f {rc} && mv {partial} {target} && "
            f"cat \"$H/sum\" >&2 && stat -c %s {target} >&2 && rm -rf \"$H\" || "
            f"{{ echo \"pe-remote: the backup was not made (tar exit status $(cat {rc} 2>/dev/null || echo none))\" >&2; "
            f"rm -f {partial} {rc}; [ -z \"$H\" ] || rm -rf \"$H\"; exit 1; }}")


def move_unless_there(source: str, target: str) -> str:
    """Shell: rename `source` to `target` unless `target` exists (exit 1 then, nothing moved)."""
    return f"[ ! -e {q(target)} ] && mv {q(source)} {q(target)}"


def remove(path: str) -> str:
    return f"rm -f {q(path)} {q(path + '.partial')} {q(path + '.rc')}"


def sha256_matches(path: str, sha256: str) -> str:
    """Exit 0 only if the file's sha256 is `sha256`."""
    return f"echo {q(sha256 + '  ' + path)} | sha256sum -c --status"


# put_back's exit statuses besides 0; any other status: it ended without a known outcome.
PUT_BACK_MISMATCH = 3  # the tarball does not match its sha256: nothing was moved
PUT_BACK_UNDONE = 4  # moving aside or extracting failed, and every folder is back as it was
PUT_BACK_NOT_UNDONE = 5  # ... and not every folder could be put back: a KEPT_ASIDE line names each kept aside
KEPT_ASIDE = "pe-remote: kept aside: "


def put_back(paths: list[str], tarball: str, sha256: str, suffix: str) -> str:
    """Verify the tarball, move the current folders aside (`path + suffix`), extract the backup in place.

    When moving aside or extracting fails (a truncated tarball, a full disk), the shell undoes it
    itself, last folder first: what the extraction wrote is removed and the folder moved aside is
    moved back (a folder that was not there before is removed). It never moves a folder onto an
    existing `path + suffix`. Exit status 0, PUT_BACK_MISMATCH, PUT_BACK_UNDONE or
    PUT_BACK_NOT_UNDONE (then a KEPT_ASIDE line on stderr for each folder still aside); its last
    line (stderr, after tar's or mv's own error) says which."""
    indexed = [(i, q(p), q(p + suffix), p + suffix) for i, p in enumerate(paths)]
    moves = " && ".join(
        f"{{ if [ -e {p} ] || [ -L {p} ]; then "
        f"{{ [ ! -e {aside} ] && [ ! -L {aside} ] || {{ echo {aside}' is already there' >&2; false; }}; }} && "
        f"mv {p} {aside} && m{i}=1; else a{i}=1; fi; }}" for i, p, aside, _ in indexed) or "true"
    undo = " ".join(f"if [ -n \"$m{i}\" ]; then rm -rf {p} && mv {aside} {p}; "
                    f"elif [ -n \"$a{i}\" ]; then rm -rf {p}; fi || u=1;" for i, p, aside, _ in reversed(indexed))
    kept = " ".join(f"[ -z \"$m{i}\" ] || [ ! -e {aside} ] || echo {q(KEPT_ASIDE + raw)} >&2;"
                    for i, _, aside, raw in indexed)
    variables = " ".join(f"m{i}= a{i}=" for i, *_ in indexed)
    failed = f"pe-remote: putting back {tarball} failed"
    return (f"{sha256_matches(tarball, sha256)} || "
            f"{{ echo {q(f'pe-remote: backup {tarball} does not match its sha256; nothing was moved')} >&2; "
            f"exit {PUT_BACK_MISMATCH}; }}\n"
            f"{variables} u=\n"
            f"if {moves} && tar -xzpf {q(tarball)} -C /; then :; else\n"
            f"{undo}\n"
            f"if [ -z \"$u\" ]; then echo {q(failed + '; the folders it replaced are back as they were')} >&2; "
            f"exit {PUT_BACK_UNDONE}; fi\n"
            f"{kept}\n"
            f"echo {q(failed + ' and the folders it replaced could not all be put back')} >&2; "
            f"exit {PUT_BACK_NOT_UNDONE}\nfi")


def ca_changes(cadir: str, tarball: str, scratch: str) -> str:
    """Compare the CA's serial counter, signed certs and inventory now with the backup's (read-only;
    scratch files in `scratch`, removed again). Sections: serial (then, now), signed_added,
    signed_removed, inventory_added."""
    inner = cadir.lstrip("/")
    then_serial, then_inventory = q(inner + "/serial"), q(inner + "/inventory.txt")
    return (f"T=$(mktemp -d {q(scratch + '/.ca-check.XXXXXX')}) || exit 1; "
            f"tar -xzf {q(tarball)} -C \"$T\" {then_serial} {then_inventory} 2>/dev/null; "
            f"tar -tzf {q(tarball)} | awk -v p={q(inner + '/signed/')} "
            "'index($0, p) == 1 && length($0) > length(p) { print substr($0, length(p) + 1) }' | sort > \"$T/then\"; "
            f"ls -1 {q(cadir + '/signed')} 2>/dev/null | sort > \"$T/now\"; "
            f"{mark('serial')}; cat \"$T\"/{then_serial} 2>/dev/null || echo; cat {q(cadir + '/serial')} 2>/dev/null; "
            f"{mark('signed_added')}; comm -13 \"$T/then\" \"$T/now\" | head -n 20; "
            f"{mark('signed_removed')}; comm -23 \"$T/then\" \"$T/now\" | head -n 20; "
            f"{mark('inventory_added')}; if [ -f \"$T\"/{then_inventory} ]; then "
            f"sort \"$T\"/{then_inventory} > \"$T/inv-then\"; sort {q(cadir + '/inventory.txt')} > \"$T/inv-now\"; "
            "comm -13 \"$T/inv-then\" \"$T/inv-now\" | head -n 20; fi; rm -rf \"$T\"")
