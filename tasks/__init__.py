"""`invoke TASK --host ALIAS` from a checkout: the tasks live in the library (pe_remote/tasks.py), so
the installed `pe-remote` program, `fab` and `invoke` run the very same ones.

Run `invoke --list` for the tasks and `invoke --help regen` for a task's flags.
"""

from pe_remote.tasks import ns  # noqa: F401  (invoke uses the module-level `ns` collection)
