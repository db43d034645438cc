"""The staging masters themselves: real sshd, systemd, puppetserver and agent."""

from __future__ import annotations


import fabric
import paramiko
import pytest

from pe_remote.testing.images import ensure_image

pytestmark = pytest.mark.container
BOTH = pytest.mark.parametrize("staging_master", ["pe37", "oss7"], indirect=True)


def _fabric_connection(master) -> fabric.Connection:
    connection = fabric.Connection(master.host, user="root", port=master.port,
                                   connect_kwargs={"key_filename": [str(master.key_path)],
                                                   "look_for_keys": False, "allow_agent": False})
    host_keys = connection.client.get_host_keys()
    hostname, keytype, key = master.known_hosts_line.split()
    host_keys.add(hostname, keytype, paramiko.PKey.from_type_string(keytype, __import__("base64").b64decode(key)))
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())  # the line must be right
    return connection


@BOTH
def test_fabric_logs_in_with_fixture_key_and_reads_certname(staging_master):
    with _fabric_connection(staging_master) as connection:
        result = connection.run(f"{staging_master.flavor.puppet} config print certname", hide=True, in_stream=False)
    assert result.stdout.strip() == staging_master.certname
    assert staging_master.certname != staging_master.check("hostname").strip()


@BOTH
def test_all_flavor_services_are_active(staging_master):
    services = staging_master.flavor.services
    out = staging_master.check("systemctl is-active " + " ".join(f"{s}.service" for s in services))
    assert out.split() == ["active"] * len(services)
    assert staging_master.check("ps -o comm= -p 1").strip() == "systemd"


@BOTH
def test_agent_run_against_itself_succeeds(staging_master):
    code, out = staging_master.exec(f"{staging_master.flavor.puppet} agent -t --waitforlock 2 --maxwaitforlock 120")
    assert code in (0, 2), out[-2000:]
    catalog = f"{staging_master.flavor.catalog_dir}/{staging_master.certname}.json"
    assert staging_master.exec(f"test -s {catalog}")[0] == 0, f"no cached catalog at {catalog}"


@BOTH
def test_dns_alt_names_and_sshd_policy(staging_master):
    out = staging_master.check(f"{staging_master.flavor.puppet} config print dns_alt_names --section master")
    assert out.strip() == ",".join(staging_master.alt_names)
    sshd = staging_master.check("sshd -T")
    assert "passwordauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd or "permitrootlogin prohibit-password" in sshd
    ports = staging_master.container.get_wrapped_container().attrs["NetworkSettings"]["Ports"]["22/tcp"]
    assert {binding["HostIp"] for binding in ports} == {"127.0.0.1"}


def test_images_are_reused_when_unchanged(docker_engine):
    import docker

    client = docker.from_env()
    first = ensure_image(client, "pe37")
    again = ensure_image(client, "pe37")
    assert again.tag == first.tag and not again.built_now


def _crl_serials(master, cadir: str) -> set[str]:
    text = master.check(f"openssl crl -in {cadir}/ca_crl.pem -noout -text")
    return {line.split(":")[1].strip().lstrip("0").upper() for line in text.splitlines()
            if "Serial Number:" in line}


def test_pe37_puppet_cert_standin_clean_then_generate(master_factory):
    master = master_factory("pe37", server=False)  # the stand-in works offline, like Puppet 3's
    layout, name = master.flavor, master.certname
    cert = f"{layout.ssldir}/certs/{name}.pem"
    old_serial = master.check(f"openssl x509 -in {cert} -noout -serial").split("=")[1].strip().lstrip("0")

    out = master.check(f"{layout.puppet} cert clean {name}")
    assert "Revoked certificate with serial" in out
    for path in (cert, f"{layout.ssldir}/private_keys/{name}.pem", f"{layout.cadir}/signed/{name}.pem"):
        assert master.exec(f"test -e {path}")[0] != 0, f"{path} survived puppet cert clean"
    assert old_serial in _crl_serials(master, layout.cadir)

    master.check(f"{layout.puppet} cert generate {name} --dns_alt_names=puppet,puppet.pe-remote.test,extra.example")
    master.check(f"openssl verify -CAfile {layout.cadir}/ca_crt.pem {cert}")
    text = master.check(f"openssl x509 -in {cert} -noout -text")
    sans = text.split("X509v3 Subject Alternative Name:")[1].splitlines()[1].strip()
    assert {s.strip() for s in sans.split(",")} == {
        f"DNS:{name}", "DNS:puppet", "DNS:puppet.pe-remote.test", "DNS:extra.example"}
    new_serial = master.check(f"openssl x509 -in {cert} -noout -serial").split("=")[1].strip().lstrip("0")
    assert new_serial != old_serial
    key_pub = master.check(f"openssl pkey -in {layout.ssldir}/private_keys/{name}.pem -pubout")
    cert_pub = master.check(f"openssl x509 -in {cert} -noout -pubkey")
    assert key_pub == cert_pub
    listing = master.check(f"{layout.puppet} cert list --all")
    assert f'+ "{name}"' in listing
