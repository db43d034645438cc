"""`fab -H root@master TASK`: the same tasks as `invoke`, with the target from -H and -i.

Run `fab --list` for the tasks and `fab --help regen` for a task's flags.
"""

from pe_remote.tasks import ns  # noqa: F401  (fab uses the module-level `ns` collection)
