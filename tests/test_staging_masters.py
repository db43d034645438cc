"""The staging masters themselves: real sshd, systemd, Puppet's own master, CA and agent."""

from __future__ import annotations


import fabric
import paramiko
import pytest

from pe_remote.testing.images import ensure_image
from pe_remote.testing.master import FLAVORS

pytestmark = pytest.mark.container
ALL = pytest.mark.parametrize("staging_master", list(FLAVORS), indirect=True)


def _fabric_connection(master) -> fabric.Connection:
    connection = fabric.Connection(master.host, user="root", port=master.port,
                                   connect_kwargs={"key_filename": [str(master.key_path)],
                                                   "look_for_keys": False, "allow_agent": False})
    host_keys = connection.client.get_host_keys()
    hostname, keytype, key = master.known_hosts_line.split()
    host_keys.add(hostname, keytype, paramiko.PKey.from_type_string(keytype, __import__("base64").b64decode(key)))
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())  # the line must be right
    return connection


@ALL
def test_fabric_logs_in_with_fixture_key_and_reads_certname(staging_master):
    with _fabric_connection(staging_master) as connection:
        result = connection.run(f"{staging_master.flavor.puppet} config print certname", hide=True, in_stream=False)
    assert result.stdout.strip() == staging_master.certname
    assert staging_master.certname != staging_master.check("hostname").strip()


@ALL
def test_all_flavor_services_are_active(staging_master):
    services = staging_master.flavor.services
    out = staging_master.check("systemctl is-active " + " ".join(f"{s}.service" for s in services))
    assert out.split() == ["active"] * len(services)
    assert staging_master.check("ps -o comm= -p 1").strip() == "systemd"


@ALL
def test_agent_run_against_itself_succeeds(staging_master):
    code, out = staging_master.agent_run()
    assert code in (0, 2), out[-2000:]
    catalog = f"{staging_master.flavor.catalog_dir}/{staging_master.certname}.json"
    assert staging_master.exec(f"test -s {catalog}")[0] == 0, f"no cached catalog at {catalog}"


@ALL
def test_dns_alt_names_and_sshd_policy(staging_master):
    section = staging_master.flavor.config_section
    out = staging_master.check(f"{staging_master.flavor.puppet} config print dns_alt_names --section {section}")
    assert out.strip() == ",".join(staging_master.alt_names)
    sans = staging_master.check(f"openssl x509 -in {staging_master.flavor.hostcert(staging_master.certname)} "
                                "-noout -ext subjectAltName").splitlines()[1]
    assert {s.strip() for s in sans.split(",")} == {f"DNS:{n}" for n in (staging_master.certname,
                                                                         *staging_master.alt_names)}
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


def test_pe37_real_puppet_cert_clean_then_generate(master_factory):
    master = master_factory("pe37", server=False)  # `puppet cert` works offline, on the files
    layout, name = master.flavor, master.certname
    assert master.check(f"readlink -f {layout.puppet}").strip() == "/usr/bin/puppet"
    assert master.check(f"{layout.puppet} --version").strip() == "5.5.22"
    cert = layout.hostcert(name)
    old_serial = master.check(f"openssl x509 -in {cert} -noout -serial").split("=")[1].strip().lstrip("0")

    out = master.check(f"{layout.puppet} cert clean {name} 2>&1")
    assert f"Revoked certificate with serial {int(old_serial, 16)}" in out
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
    assert master.check(f"cat {layout.ssldir}/public_keys/{name}.pem") == key_pub
    listing = master.check(f"{layout.puppet} cert list --all 2>/dev/null")
    assert f'+ "{name}"' in listing and "extra.example" in listing
    # `puppet master` (it drops to user puppet) must still own what root's `puppet cert` wrote.
    owners = master.check(f"stat -c %U {cert} {layout.ssldir}/private_keys/{name}.pem {layout.cadir}/signed/{name}.pem "
                          f"{layout.cadir}/ca_crl.pem {layout.cadir}/serial")
    assert set(owners.split()) == {"puppet"}


@pytest.mark.parametrize("staging_master", ["pe2016"], indirect=True)
def test_pe2016_orchestration_services_keep_copies_of_the_master_credentials(staging_master):
    layout, name = staging_master.flavor, staging_master.certname
    copies = "/etc/puppetlabs/orchestration-services/ssl"
    assert copies in layout.credential_dirs
    stat = staging_master.check(f"stat -c '%a %U %G' {copies}").split()
    assert stat == ["750", "pe-orchestration-services", "pe-orchestration-services"]
    for suffix, original in (("cert.pem", "certs"), ("public_key.pem", "public_keys"),
                             ("private_key.pem", "private_keys")):
        staging_master.check(f"cmp {copies}/{name}.{suffix} {layout.ssldir}/{original}/{name}.pem")
    owners = staging_master.check(f"stat -c %U {copies}/{name}.*").split()
    assert len(owners) == 4 and set(owners) == {"pe-orchestration-services"}
    pk8_pub = staging_master.check(f"openssl pkey -inform DER -in {copies}/{name}.private_key.pk8 -pubout")
    cert_pub = staging_master.check(f"openssl x509 -in {layout.hostcert(name)} -noout -pubkey")
    assert pk8_pub == cert_pub
    # PKCS#8 (the orchestrator's Java reads it), not the traditional RSA DER form.
    staging_master.check(f"openssl pkcs8 -inform DER -nocrypt -in {copies}/{name}.private_key.pk8 -out /dev/null")


@ALL
def test_master_serves_the_cert_on_disk_and_puppets_own_code(staging_master):
    """Readiness in full: 8140 presents the hostcert file; every `puppet` is Debian's packaged Puppet."""
    layout = staging_master.flavor
    served = staging_master.check(
        "timeout 10 openssl s_client -connect 127.0.0.1:8140 </dev/null 2>/dev/null | openssl x509 -noout -serial")
    on_disk = staging_master.check(f"openssl x509 -in {layout.hostcert(staging_master.certname)} -noout -serial")
    assert served == on_disk
    real = staging_master.check(f"readlink -f {layout.puppet}").strip()
    assert real == "/usr/bin/puppet"
    assert staging_master.check(f"dpkg -S {real}").split(":")[0] in ("puppet", "puppet-agent")


@ALL
def test_the_server_and_agent_are_puppets_own_and_every_other_service_is_a_stand_in_that_says_so(staging_master):
    """Only PE services that Debian does not package may be stand-ins, and their units say so."""
    layout = staging_master.flavor

    def unit(service: str, field: str) -> str:
        return staging_master.check(f"systemctl show -p {field} --value {service}.service").strip()

    for service in layout.services:
        description, command = unit(service, "Description"), unit(service, "ExecStart")
        if service == layout.server_service:
            assert "puppetserver.jar" in command or " master" in command, (service, command)
        elif service == layout.agent_service:
            assert " agent" in command, (service, command)
        else:
            assert description.startswith("STAND-IN for ") and "standin-daemon.sh" in command, (service, description)
            continue
        assert "STAND-IN" not in description, (service, description)

