"""The `pe-remote` program: Fabric's own command line (`-H`, `-i`, `--list`, `--help TASK`) over
pe-remote's tasks, so an installed pe-remote works from anywhere, without a checkout.

    pe-remote --list
    pe-remote -H root@puppet.example.com -i ~/.ssh/id_ed25519 regen --dry-run
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fabric import Config, Executor
from fabric.main import Fab

from pe_remote.cli import CONFIG_DEFAULTS
from pe_remote.tasks import ns


def _version() -> str:
    try:
        return version("pe-remote")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


class PeRemoteConfig(Config):
    """Fabric's config, read from /etc/pe-remote.yaml, ~/.pe-remote.yaml and `-f FILE`; its `pe_remote:`
    section sets the target defaults (see cli.CONFIG_DEFAULTS). The inventory's own variable,
    PE_REMOTE_INVENTORY, still works."""

    prefix = "pe-remote"

    @staticmethod
    def global_defaults():
        defaults = Config.global_defaults()
        defaults["pe_remote"] = dict(CONFIG_DEFAULTS)
        return defaults


program = Fab(name="pe-remote", version=_version(), namespace=ns, executor_class=Executor,
              config_class=PeRemoteConfig)


def main() -> None:
    program.run()
