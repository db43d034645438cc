"""Small fakes shared by the unit tests of regen.py, restore.py and verify.py.

They fake the collaborators the modules call (a Remote, a Console, the master lock), never the
text of the remote commands: the command builders are being moved into `pe_remote/commands/`, so a
test that matches command text would break for no change in behaviour.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import subprocess
import types

from pe_remote.errors import Aborted


class Result:
    """What `Remote.run` returns: the fields the library reads."""

    def __init__(self, stdout: str = "", *, ok: bool = True, stderr: str = "", exit_status: int | None = None):
        self.stdout = stdout
        self.stderr = stderr
        self.ok = ok
        self.exit_status = exit_status if exit_status is not None else (0 if ok else 1)


class FakeRemote:
    """Records every command (with `check`/`timeout`); answers through `respond(command, index, kwargs)`,
    which returns a Result (or None for a plain success) or raises."""

    def __init__(self, respond=None, *, label: str = "m"):
        self.target = types.SimpleNamespace(label=label)
        self.calls: list[tuple[str, dict]] = []
        self.respond = respond

    @property
    def commands(self) -> list[str]:
        return [command for command, _ in self.calls]

    @property
    def commands_run(self) -> int:
        return len(self.calls)

    def run(self, command, *, check=True, timeout=None):
        index = len(self.calls)
        kwargs = {"check": check, "timeout": timeout}
        self.calls.append((command, kwargs))
        answer = self.respond(command, index, kwargs) if self.respond else None
        return answer if answer is not None else Result()


def in_shell(command: str) -> Result:
    """Run one command in a local `sh`, as a master would (for parsers fed by their own command)."""
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    return Result(proc.stdout, ok=proc.returncode == 0, stderr=proc.stderr, exit_status=proc.returncode)


class QuietConsole:
    """Prints nothing; keeps what the library said and asked. `refuse` (a substring) makes the
    matching confirmation answer no (Aborted), as the real Console does."""

    def __init__(self, refuse: str | None = None):
        self.said: list[tuple[str, str]] = []
        self.asked: list[str] = []
        self.refuse = refuse

    def _keep(kind):
        def keep(self, message: str = "", *args, **kwargs):
            self.said.append((kind, message))
        return keep

    info = _keep("info")
    notice = _keep("notice")
    warn = _keep("warn")
    command = _keep("command")
    del _keep

    def step_started(self, *args):
        pass

    def step_finished(self, *args):
        pass

    def waiting(self, what):
        return contextlib.nullcontext()

    def confirm(self, question: str) -> None:
        self.asked.append(question)
        if self.refuse is not None and self.refuse in question:
            raise Aborted("aborted by the operator; nothing was changed on the master")

    def text(self, kind: str | None = None) -> str:
        return "\n".join(message for k, message in self.said if kind is None or k == kind)


class FakeLocks:
    """Stands in for `lock.acquire`: records each acquire and release."""

    def __init__(self):
        self.taken: list[str] = []
        self.released = 0

    def acquire(self, remote, task, console=None, **kwargs):
        self.taken.append(task)
        locks = self

        class Held:
            def release(self):
                locks.released += 1

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.release()

        return Held()


def make_cert(cn: str, *, serial: int = 2, sans: tuple[str, ...] = (), issuer_cn: str | None = None,
              days: int = 365):
    """A self-signed (or `issuer_cn`-named) cert and its key, PEM bytes: (cert, key, key object, cert object)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn or cn)]))
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=days)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, key, cert


def make_crl(issuer_cn: str, key, revoked: tuple[int, ...], *, days: int = 30) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
               .last_update(now).next_update(now + _dt.timedelta(days=days)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
