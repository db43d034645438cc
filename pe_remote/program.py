"""The `pe-remote` program: Fabric's own command line (`-H`, `-i`, `--list`, `--help TASK`) over
pe-remote's tasks, so an installed pe-remote works from anywhere, without a checkout.

    pe-remote --list
    pe-remote -H root@puppet.example.com -i ~/.ssh/id_ed25519 regen --dry-run
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fabric import Config, Executor
from fabric.main import Fab

from pe_remote.tasks import ns


def _version() -> str:
    try:
        return version("pe-remote")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


program = Fab(name="pe-remote", version=_version(), namespace=ns, executor_class=Executor, config_class=Config)


def main() -> None:
    program.run()
