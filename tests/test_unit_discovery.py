"""Unit tests for pe_remote.discovery: parsing a real recorded discovery output and hostile variants of it,
and `discover()` end to end through a fabric Connection backed by fabric.testing's doubles."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabric import Config, Connection
from fabric.testing.fixtures import remote  # noqa: F401  (pytest fixture)

from pe_remote.connection import Remote
from pe_remote.commands import sections as protocol
from pe_remote.commands.facts import read_cert_with_key
from pe_remote.discovery import SETTINGS, ServiceState, discover, discovery_script, parse_discovery
from pe_remote.errors import DiscoveryError, Refused
from pe_remote.flavors import PE37, PUPPET6
from pe_remote.inventory import Target

DATA = Path(__file__).parent / "data"
OSS7 = (DATA / "discovery-oss7.txt").read_text()
PE37_FILE = DATA / "discovery-pe37.txt"

CERTNAME = "master.pe-remote.test"


def sub(text: str, old: str, new: str) -> str:
    """Replace exactly one occurrence, so a variant never silently equals the original."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def set_setting(text: str, name: str, value: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
    return sub(text, "\n" + line + "\n", f"\n{name} = {value}\n")


def drop_setting(text: str, name: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
    return sub(text, "\n" + line + "\n", "\n")


def pe37_variant(text: str = OSS7) -> str:
    """A PE 3.7 master derived from the recorded open-source one."""
    text = sub(text, "puppet=/usr/bin/puppet\n", "puppet=/opt/puppet/bin/puppet\n")
    text = sub(text, "puppetserver=/usr/bin/puppetserver\n", "puppetserver=\n")
    text = sub(text, "==> pe_version <==\n", "==> pe_version <==\n3.7.2\n")
    text = sub(text, "==> puppet_version <==\n7.23.0\n", "==> puppet_version <==\n3.7.4 (Puppet Enterprise 3.7.2)\n")
    for name in ("pe-puppet", "pe-puppetserver", "pe-activemq", "pe-mcollective"):
        text = sub(text, f"\n{name} absent\n", f"\n{name} active\n")
    text = sub(text, "\npuppet active\n", "\npuppet absent\n")
    text = sub(text, "\npuppetserver active\n", "\npuppetserver absent\n")
    text = set_setting(text, "ssldir", "/etc/puppetlabs/puppet/ssl")
    text = set_setting(text, "cadir", "/etc/puppetlabs/puppet/ssl/ca")
    text = set_setting(text, "client_datadir", "/var/opt/lib/pe-puppet/client_data")
    text = set_setting(text, "hostcert", f"/etc/puppetlabs/puppet/ssl/certs/{CERTNAME}.pem")
    text = set_setting(text, "hostprivkey", f"/etc/puppetlabs/puppet/ssl/private_keys/{CERTNAME}.pem")
    return sub(text, "==> listener <==\nunit=puppetserver\n", "==> listener <==\nunit=pe-puppetserver\n")


# --- the recorded Puppet 7 master --------------------------------------------------------------

@pytest.fixture(scope="module")
def facts():
    return parse_discovery(OSS7)


def test_recorded_oss7_flavor_and_identity(facts):
    assert facts.flavor is PUPPET6
    assert facts.uid == 0
    assert facts.hostname == "staging-node"
    assert facts.init_system == "systemd"
    assert facts.puppet == "/usr/bin/puppet"
    assert facts.puppetserver == "/usr/bin/puppetserver"
    assert facts.puppet_version == "7.23.0"
    assert facts.pe_version is None


def test_recorded_oss7_names(facts):
    assert facts.certname == CERTNAME
    assert facts.dns_alt_names == ("puppet", "puppet.pe-remote.test")


def test_recorded_oss7_paths(facts):
    assert facts.ssldir == "/var/lib/puppet/ssl"
    assert facts.cadir == "/etc/puppet/puppetserver/ca"
    assert not facts.cadir_inside_ssldir
    assert facts.client_datadir == "/var/cache/puppet/client_data"
    assert facts.hostcert == f"/var/lib/puppet/ssl/certs/{CERTNAME}.pem"
    assert facts.hostprivkey == f"/var/lib/puppet/ssl/private_keys/{CERTNAME}.pem"
    assert facts.catalog_path == f"/var/cache/puppet/client_data/catalog/{CERTNAME}.json"
    assert facts.ca_key_present is True


def test_recorded_oss7_services(facts):
    assert facts.service("puppet") == ServiceState("puppet", True, True, "active")
    assert facts.service("puppetserver") == ServiceState("puppetserver", True, True, "active")
    assert facts.service("pe-puppetserver") == ServiceState("pe-puppetserver", False, False, "absent")
    assert facts.service("no-such-service") is None
    assert {s.name for s in facts.services if s.exists} == {"puppet", "puppetserver"}


def test_recorded_oss7_cert(facts):
    cert = facts.cert
    assert cert is not None
    # The values `openssl x509 -noout -serial -subject -issuer -enddate -fingerprint -sha256 -nameopt RFC2253`
    # and `openssl pkey -pubin -outform DER | sha256sum` print for the recorded cert (OpenSSL 3.0).
    assert cert.serial == "1"  # serial=01: leading zeros are stripped
    assert cert.subject == f"CN={CERTNAME}"
    assert cert.issuer == f"CN=Puppet CA: {CERTNAME}"
    assert cert.not_after == "Nov 30 13:26:01 2041 GMT"
    assert cert.sha256 == ("20:91:93:A5:8C:2E:05:71:AB:AD:6E:B3:8B:BB:6A:AD:C2:A1:09:80:86:E8:88:8F:15:74:A4:F0:"
                           "AA:74:88:F8")
    assert cert.sans == frozenset({f"DNS:{CERTNAME}", "DNS:puppet", "DNS:puppet.pe-remote.test"})
    assert cert.pubkey_sha256 == "2c4a53fd4bfd6fa13318015f3583c82e399c4b578fdcfb422a0dc3639ff7c1dd"


def test_recorded_oss7_key_matches_cert():
    assert read_cert_with_key(protocol.split(OSS7), "cert")[1] is True


def _with_key_section(text: str, lines: list[str]) -> str:
    head, _, rest = text.partition("==> cert_key <==\n")
    tail = rest[rest.index("==> ") if "==> " in rest else len(rest):]
    return head + "==> cert_key <==\n" + "".join(line + "\n" for line in lines) + tail


def test_key_mismatch_is_detected():
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = _with_key_section(OSS7, [base64.b64encode(other).decode()])
    assert read_cert_with_key(protocol.split(text), "cert")[1] is False


def test_key_missing_is_not_a_match():
    text = _with_key_section(OSS7, [])
    assert read_cert_with_key(protocol.split(text), "cert")[1] is False


def test_the_recording_has_every_setting_discovery_asks_for():
    from pe_remote.discovery import parse_settings

    assert set(SETTINGS) <= set(parse_settings(protocol.split(OSS7)["settings"]))


def test_split_sections_ignores_text_before_the_first_marker():
    sections = protocol.split("motd noise\n==> a <==\n1\n==> b <==\n==> c <==\nx\ny\n")
    assert sections == {"a": ["1"], "b": [], "c": ["x", "y"]}


# --- PE 3.7 -------------------------------------------------------------------------------------

PE37_SAMPLES = [pytest.param(pe37_variant(), id="derived-from-oss7")]
if PE37_FILE.exists():
    PE37_SAMPLES.append(pytest.param(PE37_FILE.read_text(), id="recorded-pe37"))


@pytest.mark.parametrize("text", PE37_SAMPLES)
def test_pe37_is_detected(text):
    facts = parse_discovery(text)
    assert facts.flavor is PE37
    assert facts.pe_version == "3.7.2"
    assert facts.puppet == "/opt/puppet/bin/puppet"
    assert facts.certname == CERTNAME
    assert facts.ssldir == "/etc/puppetlabs/puppet/ssl"
    assert facts.cadir_inside_ssldir
    for name in ("pe-puppet", "pe-puppetserver", "pe-activemq", "pe-mcollective"):
        assert facts.service(name).active, name
    assert not facts.service("puppetserver").active
    assert facts.cert is not None and facts.cert.issuer == f"CN=Puppet CA: {CERTNAME}"


@pytest.mark.skipif(not PE37_FILE.exists(), reason="tests/data/discovery-pe37.txt not recorded")
def test_recorded_pe37_cert_serial():
    # Puppet 3/5's CA signs its own cert first (serial 1), the master's next.
    assert parse_discovery(PE37_FILE.read_text()).cert.serial == "2"


def test_derived_pe37_has_no_puppetserver_binary():
    assert parse_discovery(pe37_variant()).puppetserver is None


def test_pe_version_beats_puppet_version():
    # A PE 3.7 marker wins even if puppet reports a version that alone would mean Puppet 6+.
    text = sub(OSS7, "==> pe_version <==\n", "==> pe_version <==\n\n3.7.2\n")
    assert parse_discovery(text).flavor is PE37


def test_flavor_override():
    assert parse_discovery(OSS7, flavor_override="pe37").flavor is PE37


def test_unknown_flavor_override_is_a_discovery_error():
    with pytest.raises(DiscoveryError, match="'pe99'"):
        parse_discovery(OSS7, flavor_override="pe99")


def test_unsupported_puppet_version_is_refused():
    text = sub(OSS7, "==> puppet_version <==\n7.23.0\n", "==> puppet_version <==\n3.8.7\n")
    with pytest.raises(Refused, match="3.8.7"):
        parse_discovery(text)


def test_unsupported_pe_version_is_refused():
    text = sub(OSS7, "==> pe_version <==\n", "==> pe_version <==\n2.8.1\n")
    with pytest.raises(Refused, match="2.8.1"):
        parse_discovery(text)


# --- hostile or broken masters -------------------------------------------------------------------

@pytest.mark.parametrize("certname", ["x;touch /tmp/p", "$(id)", "`id`", "a b", "Master.pe-remote.test", "a|b",
                                      "-rf"])
def test_hostile_certname_is_refused(certname):
    with pytest.raises(Refused) as info:
        parse_discovery(set_setting(OSS7, "certname", certname))
    assert repr(certname) in str(info.value)
    assert "refusing" in str(info.value)


@pytest.mark.parametrize("alt", ["puppet,x;touch /tmp/p", "$(id)", "*.pe-remote.test", "puppet,a b"])
def test_hostile_dns_alt_names_are_refused(alt):
    with pytest.raises(Refused, match="dns_alt_names"):
        parse_discovery(set_setting(OSS7, "dns_alt_names", alt))


def test_empty_dns_alt_names_is_no_alt_names():
    assert parse_discovery(set_setting(OSS7, "dns_alt_names", "")).dns_alt_names == ()


def test_alt_names_with_prefixes_are_normalised():
    facts = parse_discovery(set_setting(OSS7, "dns_alt_names", "DNS:Puppet, IP:10.0.0.1,puppet"))
    assert facts.dns_alt_names == ("puppet", "10.0.0.1")


@pytest.mark.parametrize("uid", ["1000", "33"])
def test_non_root_is_refused(uid):
    with pytest.raises(Refused, match=f"uid {uid}"):
        parse_discovery(sub(OSS7, "==> id <==\n0\n", f"==> id <==\n{uid}\n"))


def test_unreadable_uid_is_a_discovery_error():
    with pytest.raises(DiscoveryError, match="user id"):
        parse_discovery(sub(OSS7, "==> id <==\n0\n", "==> id <==\nid: not found\n"))


def test_no_puppet_binary_as_the_script_prints_it():
    # The script stops right after pe_version when it finds no puppet.
    text = OSS7[:OSS7.index("==> puppet_version <==")]
    text = sub(text, "puppet=/usr/bin/puppet\n", "puppet=\n")
    with pytest.raises(DiscoveryError, match="no puppet binary") as info:
        parse_discovery(text)
    assert "/opt/puppetlabs/bin/puppet" in str(info.value)  # says where it looked


def test_no_puppet_binary_even_with_the_rest_present():
    with pytest.raises(DiscoveryError, match="no puppet binary"):
        parse_discovery(sub(OSS7, "puppet=/usr/bin/puppet\n", "puppet=\n"))


@pytest.mark.parametrize("line, says", [
    ("puppet=/tmp/x", "puppet binary '/tmp/x'"), ("puppet=rm", "puppet binary 'rm'"),
    ("puppetserver=/tmp/puppetserver", "puppetserver binary '/tmp/puppetserver'")])
def test_a_binary_where_discovery_never_looks_is_refused(line, says):
    # The script only ever answers one of the paths it tried: anything else is not its answer.
    key = line.split("=")[0]
    original = next(x for x in OSS7.splitlines() if x.startswith(key + "="))
    with pytest.raises(Refused, match="the master's answer holds") as info:
        parse_discovery(sub(OSS7, original + "\n", line + "\n"))
    assert says in str(info.value)


def test_a_sysv_or_systemd_init_only():
    with pytest.raises(Refused, match="init system"):
        parse_discovery(sub(OSS7, "==> init <==\nsystemd\n", "==> init <==\nupstart\n"))


@pytest.mark.parametrize("setting", ["ssldir", "cadir", "client_datadir", "hostcert", "hostprivkey"])
@pytest.mark.parametrize("bad", ["/var/lib/puppet/my ssl", "/var/lib/puppet/ssl;reboot", "relative/ssl",
                                 "/var/$(id)/ssl", "/var/lib/puppet/ssl`id`"])
def test_path_setting_that_is_not_a_plain_absolute_path_is_refused(setting, bad):
    with pytest.raises(Refused) as info:
        parse_discovery(set_setting(OSS7, setting, bad))
    assert setting in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("setting", SETTINGS)
def test_missing_setting_is_a_discovery_error(setting):
    with pytest.raises(DiscoveryError) as info:
        parse_discovery(drop_setting(OSS7, setting))
    assert setting in str(info.value)


def test_empty_settings_section_names_every_missing_setting():
    start = OSS7.index("==> settings <==\n") + len("==> settings <==\n")
    end = OSS7.index("==> ca_key <==")
    with pytest.raises(DiscoveryError) as info:
        parse_discovery(OSS7[:start] + OSS7[end:])
    for setting in SETTINGS:
        assert setting in str(info.value)


@pytest.mark.parametrize("output", ["", "bash: sh: command not found\n", "Permission denied\n"])
def test_output_without_sections_is_a_discovery_error(output):
    with pytest.raises(DiscoveryError, match="nothing usable"):
        parse_discovery(output)


def test_absent_ca_key():
    facts = parse_discovery(sub(OSS7, "==> ca_key <==\npresent\n", "==> ca_key <==\nabsent\n"))
    assert facts.ca_key_present is False


def test_no_cert_section_means_no_cert():
    text = OSS7[:OSS7.index("==> cert <==")] + "==> cert <==\n"
    assert parse_discovery(text).cert is None


def _cert_with_malformed_san() -> bytes:
    """A cert OpenSSL loads whose SubjectAltName `cryptography` cannot parse (its DER cut short)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtensionOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master.pe-remote.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(5).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x01"),
                           False).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _crl_with_malformed_number() -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtensionOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA")]))
           .last_update(now).next_update(now + dt.timedelta(days=1))
           .add_extension(x509.UnrecognizedExtension(ExtensionOID.CRL_NUMBER, b"\x02"), False)
           .sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM)


def _cert_with(*extensions, patch: tuple[bytes, bytes] | None = None) -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master.pe-remote.test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(5).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    for extension in extensions:
        builder = builder.add_extension(extension, False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    if patch:  # the builder refuses what a forged cert can hold: change its bytes after signing
        assert der.count(patch[0]) == 1
        der = der.replace(*patch)
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_a_cert_with_an_extension_twice_or_a_san_type_cryptography_cannot_read_is_one_line():
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

    from pe_remote.commands.certs import read_bundle, read_cert
    from pe_remote.errors import UnreadableCert

    twice = _cert_with(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.4"), b"\x05\x00"),
                       x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.5"), b"\x05\x00"),
                       patch=(b"\x06\x03\x2a\x03\x05", b"\x06\x03\x2a\x03\x04"))
    x400 = _cert_with(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x02\xa3\x00"))
    for pem, why in ((twice, "Duplicate 1.2.3.4 extension"), (x400, "x400Address")):
        for read in (read_cert, read_bundle):
            with pytest.raises(UnreadableCert, match="serial 5 cannot be read") as info:
                read(pem)
            assert why in str(info.value) and "\n" not in str(info.value)


def test_a_cert_of_an_x509_version_that_does_not_exist_is_no_cert_not_a_traceback():
    # cryptography raises InvalidVersion (no ValueError) from the load itself: passed over like any other
    # block that is not a cert it can load.
    from pe_remote.commands.certs import load_cert, read_bundle, read_cert

    good = _cert_with()
    import base64
    der = base64.b64decode(b"".join(good.splitlines()[1:-1]))
    assert der.count(b"\xa0\x03\x02\x01\x02") == 1
    bad_der = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03")
    bad = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad_der) + b"-----END CERTIFICATE-----\n"
    assert read_cert(bad) is None and read_bundle(bad) == [] and load_cert(bad + good) is not None


def test_a_cert_whose_extensions_cannot_be_read_is_a_one_line_error_not_a_traceback():
    import base64

    from pe_remote.commands.certs import read_bundle, read_cert, read_crls
    from pe_remote.errors import UnreadableCert

    pem = _cert_with_malformed_san()
    for read in (read_cert, read_bundle):
        with pytest.raises(UnreadableCert, match="serial 5 cannot be read") as info:
            read(pem)
        assert "\n" not in str(info.value) and info.value.exit_code == 6
    text = OSS7[:OSS7.index("==> cert <==")] + "==> cert <==\n" + base64.encodebytes(pem).decode()
    with pytest.raises(UnreadableCert, match="a CRL cannot be read"):
        read_crls(_crl_with_malformed_number())
    with pytest.raises(UnreadableCert):
        parse_discovery(text)


def test_inactive_and_failed_services():
    text = sub(OSS7, "\npuppet active\n", "\npuppet inactive\n")
    text = sub(text, "\npuppetserver active\n", "\npuppetserver failed\n")
    facts = parse_discovery(text)
    assert facts.service("puppet") == ServiceState("puppet", True, False, "inactive")
    assert facts.service("puppetserver") == ServiceState("puppetserver", True, False, "failed")


# --- discover() through a real fabric Connection on fabric.testing's doubles -------------------

def fabric_remote() -> Remote:
    config = Config(overrides={"load_ssh_configs": False})
    return Remote(Connection("host", user="root", port=22, config=config), Target(address="host"))


def test_discover_runs_exactly_one_command_through_fabric(remote):  # noqa: F811
    channel = remote.expect(host="host", cmd=discovery_script(), out=OSS7.encode())
    r = fabric_remote()
    facts = discover(r)
    assert facts == parse_discovery(OSS7)
    assert facts.flavor is PUPPET6
    assert facts.certname == CERTNAME
    assert r.commands_run == 1
    channel.exec_command.assert_called_once_with(discovery_script())
    # The `remote` fixture's teardown also checks one session was opened, for that command.


def test_discover_with_flavor_override_through_fabric(remote):  # noqa: F811
    # A PE 3.7 master whose version marker is gone: puppet's own version alone would not say PE.
    text = sub(pe37_variant(), "==> pe_version <==\n3.7.2\n", "==> pe_version <==\n")
    remote.expect(host="host", cmd=discovery_script(), out=text.encode())
    assert discover(fabric_remote(), flavor_override="pe37").flavor is PE37


def test_discover_refuses_an_override_the_host_does_not_run(remote):  # noqa: F811
    remote.expect(host="host", cmd=discovery_script(), out=OSS7.encode())
    with pytest.raises(Refused) as info:
        discover(fabric_remote(), flavor_override="pe37")
    assert info.value.exit_code == 4
    assert "--flavor pe37" in str(info.value) and "pe-puppet, pe-puppetserver" in str(info.value)


def test_discover_failing_without_sections_is_a_discovery_error(remote):  # noqa: F811
    remote.expect(host="host", cmd=discovery_script(), out=b"", err=b"sh: 1: exec: not found\n", exit=127)
    with pytest.raises(DiscoveryError) as info:
        discover(fabric_remote())
    assert "exit 127" in str(info.value)
    assert "not found" in str(info.value)


def test_discover_refuses_a_hostile_master_through_fabric(remote):  # noqa: F811
    remote.expect(host="host", cmd=discovery_script(), out=set_setting(OSS7, "certname", "$(id)").encode())
    with pytest.raises(Refused):
        discover(fabric_remote())


@pytest.mark.parametrize("odd", ["²", "١٢", "--1", "1²"])
def test_numbers_from_the_master_are_ascii_digits_or_refused(odd):
    # str.isdigit() takes "²" (then int() raised ValueError: a traceback) and `\d` takes other scripts' digits.
    from pe_remote.backup import _parse_sum_and_size
    from pe_remote.commands.sections import number
    from pe_remote.errors import BackupError
    from pe_remote.flavors import _version_tuple

    with pytest.raises(DiscoveryError, match="could not read the free space"):
        parse_discovery(sub(OSS7, next(x for x in OSS7.splitlines() if x.startswith("free_kb=")), f"free_kb={odd}"))
    with pytest.raises(BackupError, match="unexpected output"):
        _parse_sum_and_size(f"{'a' * 64}  /root/x.tar.gz\n{odd}\n", "/root/x.tar.gz")
    assert number([odd]) is None and number(["-1"]) == -1 and number([" 7 "]) == 7
    assert _version_tuple(f"7.{odd}") in ((7,), (7, 1))  # never a ValueError


def test_a_value_read_from_a_master_file_can_never_open_a_section():
    # Before, a pe_version file (64 bytes read) holding "x\n==> settings <==\nssldir = ..." opened a
    # settings section of its own, which won over the real one (the first section of a name wins).
    from pe_remote.commands.discovery import discovery_script

    script = discovery_script()
    assert "printf 'v=%s\\n' \"$PE\"" in script and "head -n1 \"$f\" | head -c 64" in script
    assert "sec puppet_version; printf 'v=%s\\n' \"$V\"" in script
    assert "printf 'v=%s\\n' \"$(hostname | head -n1)\"" in script
    forged = sub(OSS7, "==> pe_version <==\n", "==> pe_version <==\nv===> settings <==\n")
    with pytest.raises(Refused):  # an unknown PE version, not a forged section
        parse_discovery(forged)
    prefixed = sub(OSS7, "==> puppet_version <==\n7", "==> puppet_version <==\nv=7")
    assert parse_discovery(prefixed).puppet_version == parse_discovery(OSS7).puppet_version


def test_printable_hides_bidirectional_and_invisible_characters():
    from pe_remote.names import printable

    assert printable("ok\u202eevil\u2066x\u200by\ufeff") == "ok?evil?x?y?"
    assert printable("line one\n\tline two é") == "line one\n\tline two é"
