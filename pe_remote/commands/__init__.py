"""The command layer: every remote shell command pe-remote runs is composed here, and only here.

- `shell`: words quoted by construction (`q`, `join`).
- `sections`: the ONE output protocol (`==> name <==` sections) and its parser.
- `certs`: certificates, keys and CRLs parsed on the workstation from their PEM bytes.
- `facts`: remote facts, each a command beside its parser (cert files, served cert, CRL, services).
- `discovery`, `steps`, `backup`, `run`: the scripts of discovery, the plan's steps, the backup and
  restore, and the run's own machinery (step wrapper, journal, lock).

The rest of the library decides WHAT to run; this package decides how it is written for `sh`.
"""
