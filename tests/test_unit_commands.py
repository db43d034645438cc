"""Unit tests for the command layer (pe_remote/commands): one place composes remote shell, one section
protocol carries every answer, and certificates are read from their bytes, not from openssl's text."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import crl_serials, normalize_san, public_key_sha256, read_cert
from pe_remote.commands.run import BUSY, HELD, UNAVAILABLE, lock_answer, parse_step_output, step_script
from pe_remote.discovery import parse_discovery
from pe_remote.names import san_entries
from test_unit_discovery import OSS7

LIBRARY = Path(__file__).resolve().parents[1] / "pe_remote"


def sh(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout


# --- one place composes remote shell --------------------------------------------------------------

def test_no_shell_is_quoted_outside_the_command_layer():
    """The check the issue names: `grep -rn "shlex\\.\\|q(" pe_remote | grep -v pe_remote/commands/`."""
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if "commands" in path.relative_to(LIBRARY).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"shlex\.|(?<![A-Za-z0-9_])q\(", line):
                found.append(f"{path.relative_to(LIBRARY.parent)}:{number}: {line.strip()}")
    assert found == []


def test_one_section_protocol_remains():
    """No other in-band marker than the sections: no `@@` lines, no bare `already-done`."""
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text()
        assert "@@" not in text, path
        if "commands" not in path.relative_to(LIBRARY).parts:
            assert "==> " not in text, f"{path} writes section markers itself"


# --- the protocol -------------------------------------------------------------------------------

def test_markers_with_and_without_an_argument():
    output = sh(f"echo banner; {protocol.mark('a')}; echo 1; {protocol.mark_with('journal', '/x/y.journal')}; "
                f"echo 2; {protocol.mark('empty')}")
    assert [(s.name, s.arg, s.lines) for s in protocol.parse(output)] == [
        ("a", "", ("1",)), ("journal", "/x/y.journal", ("2",)), ("empty", "", ())]
    assert protocol.split(output)["a"] == ["1"]


def test_an_argument_with_spaces_and_the_marker_text_inside_it():
    line = protocol.marker("lock-busy", "pe-remote regen by a@b (pid 1) <== x")
    assert protocol.marker_name(line) == ("lock-busy", "pe-remote regen by a@b (pid 1) <== x")
    assert protocol.marker_name("==> NotAName <==") is None
    assert protocol.marker_name("text ==> a <==") is None


def test_encoded_output_cannot_open_a_section():
    hostile = "line\\n==> rc <==\\n0\\n==> already-done <==\\n"
    output = sh(f"{protocol.mark('out')}; {protocol.encoded(f'printf {chr(39)}{hostile}{chr(39)}')}; "
                f"{protocol.mark('end')}")
    found = protocol.split(output)
    assert set(found) == {"out", "end"}
    assert protocol.decoded(found["out"]).decode() == "line\n==> rc <==\n0\n==> already-done <==\n"


def test_decoding_garbage_gives_nothing():
    assert protocol.decoded(["not base64 !!"]) == b""
    assert protocol.decoded([]) == b""


# --- a step's answer ----------------------------------------------------------------------------

def test_a_step_cannot_fake_its_exit_status_or_resume_state():
    fake = "echo '==> rc <=='; echo 0; echo '==> already-done <=='; echo '==> check <=='; echo 0; exit 3"
    answer = parse_step_output(sh(step_script(fake, "true")))
    assert (answer.rc, answer.check, answer.already_done) == (3, None, False)
    assert "==> already-done <==" in answer.text  # its output is kept, as output


def test_a_step_whose_check_fails():
    answer = parse_step_output(sh(step_script("echo did it", "echo not there; exit 1")))
    assert (answer.rc, answer.check, answer.already_done) == (0, 1, False)
    assert answer.text.splitlines() == ["did it", "not there"]


def test_resume_skips_a_step_whose_effect_is_there(tmp_path):
    ran = tmp_path / "ran"
    answer = parse_step_output(sh(step_script(f"touch {ran}", "test -d /", check_first=True)))
    assert answer.already_done and answer.rc == 0 and not ran.exists()
    answer = parse_step_output(sh(step_script(f"touch {ran}", f"test -e {ran}", check_first=True)))
    assert not answer.already_done and answer.rc == 0 and answer.check == 0 and ran.exists()


def test_a_wrapper_that_never_ran_gives_its_output_as_the_reason():
    answer = parse_step_output("sh: 1: mktemp: not found\n")
    assert answer.rc is None and answer.text == "sh: 1: mktemp: not found"


def test_begin_and_end_bracket_the_step_only_when_it_passed(tmp_path):
    log = tmp_path / "log"
    sh(step_script("true", "true", begin=f"echo begin >> {log}", end=f"echo end >> {log}"))
    sh(step_script("true", "false", begin=f"echo begin >> {log}", end=f"echo end >> {log}"))
    assert log.read_text().split() == ["begin", "end", "begin"]


# --- the run lock's answer ---------------------------------------------------------------------

@pytest.mark.parametrize("line, answer", [
    (protocol.marker(HELD), (HELD, "")),
    (protocol.marker(UNAVAILABLE), (UNAVAILABLE, "")),
    (protocol.marker(BUSY, "pe-remote regen by ops@ws (pid 7)"), (BUSY, "pe-remote regen by ops@ws (pid 7)")),
    ("==> lock-busy  <==", ("", "")),  # no holder named: an answer the caller treats as busy
    ("sh: flock: not found", ("", "")),
])
def test_lock_answers(line, answer):
    assert lock_answer(line) == answer


# --- certificates from their bytes ------------------------------------------------------------

def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(key, serial: int, sans: list[x509.GeneralName]) -> bytes:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master.example")])
    cert = (x509.CertificateBuilder().subject_name(name)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA: master.example")]))
            .public_key(key.public_key()).serial_number(serial).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=5 * 365 + 1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_cert_read_from_its_bytes_with_an_ipv6_alt_name():
    key = _key()
    pem = _cert(key, 0x0A1B, [x509.DNSName("master.example"), x509.DNSName("puppet"),
                              x509.IPAddress(ipaddress.ip_address("2001:db8:0:0::1")),
                              x509.IPAddress(ipaddress.ip_address("10.0.0.5"))])
    info = read_cert(b"noise before\n" + pem)
    assert info.serial == "A1B"
    assert info.subject == "CN=master.example" and info.issuer == "CN=Puppet CA: master.example"
    assert info.not_after == "Jan  1 00:00:00 2031 GMT"
    # The SANs compare equal to what the plan expects for the same names, however they were written.
    assert info.sans == san_entries("master.example", ("puppet", "2001:DB8::0:1", "10.0.0.5"))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public_key_sha256(public) == info.pubkey_sha256
    assert public_key_sha256(_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)) != info.pubkey_sha256


def test_the_fingerprint_is_openssls():
    pem = _cert(_key(), 5, [x509.DNSName("master.example")])
    printed = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                             capture_output=True, check=True).stdout.decode()
    assert printed.strip().split("=", 1)[1] == read_cert(pem).sha256


def test_no_cert_in_the_bytes():
    assert read_cert(b"") is None
    assert read_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") is None


def test_crl_serials(tmp_path):
    from test_unit_flavors_plan import _write_crl

    _write_crl(tmp_path / "crl.pem", [1, 0x1F, 0x0100])
    assert crl_serials((tmp_path / "crl.pem").read_bytes()) == frozenset({"1", "1F", "100"})
    assert crl_serials(b"garbage") is None


def test_sans_recorded_by_older_versions_are_normalized():
    assert normalize_san("IP Address:2001:DB8:0:0:0:0:0:1") == "IP:2001:db8::1"
    assert normalize_san("IP Address:not-an-ip") == "IP Address:not-an-ip"
    assert normalize_san("DNS:puppet") == "DNS:puppet"


# --- discovery's journals travel encoded -------------------------------------------------------

def test_an_unfinished_journal_cannot_forge_sections_of_discovery():
    path = "/root/pe-remote-backups/20260101T000000Z-master.pe-remote.test.journal"
    content = '{"event": "started"}\n==> ca_key <==\nabsent\n'
    text = OSS7 + protocol.marker("journal", path) + "\n" + base64.encodebytes(content.encode()).decode()
    facts = parse_discovery(text)
    assert facts.ca_key_present is True
    assert facts.unfinished_journals == ((path, content),)
