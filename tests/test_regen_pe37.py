"""End to end, PE 3.7: the real `fab` and `invoke` against a real staging master."""

from __future__ import annotations

import hashlib
import stat
import tarfile
from pathlib import Path

import pytest

from conftest import describe, fab_target_args, run_cli

pytestmark = pytest.mark.container


def _cert_facts(master) -> dict[str, str]:
    cert = f"{master.flavor.ssldir}/certs/{master.certname}.pem"
    out = master.check(f"openssl x509 -in {cert} -noout -serial -issuer -nameopt RFC2253 -fingerprint -sha256; "
                       f"openssl x509 -in {cert} -noout -text | grep -A1 'Subject Alternative Name' | tail -1")
    lines = out.strip().splitlines()
    # OpenSSL 1.1 (bullseye) prints "SHA256 Fingerprint=", OpenSSL 3 "sha256 Fingerprint=".
    facts = {key.lower(): value for key, value in (line.split("=", 1) for line in lines[:3])}
    sans = frozenset(s.strip() for s in lines[3].split(","))
    return {"serial": facts["serial"], "issuer": facts["issuer"], "sha256": facts["sha256 fingerprint"],
            "sans": sans}


def _served_fingerprint(master) -> str:
    return master.check(f"openssl s_client -connect 127.0.0.1:8140 -servername {master.certname} </dev/null "
                        "2>/dev/null | openssl x509 -noout -fingerprint -sha256").strip().split("=", 1)[1]


def test_fab_regen_pe37_end_to_end(fresh_master, tmp_path):
    master = fresh_master
    before = _cert_facts(master)
    catalog = f"{master.flavor.catalog_dir}/{master.certname}.json"
    assert master.exec(f"test -e {catalog}")[0] == 0, "the staging master should have a cached catalog"
    master.check(f"touch -d '2020-01-01' {catalog}")  # so that a catalog cached after the regen differs
    catalog_mtime = master.check(f"stat -c %Y {catalog}").strip()

    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "backups"))
    assert proc.returncode == 0, describe(proc)

    after = _cert_facts(master)
    assert after["serial"] != before["serial"]
    assert after["issuer"] == before["issuer"]
    assert after["sans"] == {f"DNS:{master.certname}"} | {f"DNS:{n}" for n in master.alt_names}
    # The agent, started last, may already have cached a new catalog: never the one from before.
    code, mtime = master.exec(f"stat -c %Y {catalog}")
    assert code != 0 or mtime.strip() != catalog_mtime, "the cached catalog from before the regen is still there"
    services = master.check("systemctl is-active " + " ".join(master.flavor.services)).split()
    assert services == ["active"] * 4
    assert _served_fingerprint(master) == after["sha256"]

    tarballs = list((tmp_path / "backups").rglob("*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    local = tarballs[0]
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
    local_sha = hashlib.sha256(local.read_bytes()).hexdigest()
    remote_sha = master.check(f"sha256sum /root/pe-remote-backups/{local.name}").split()[0]
    assert local_sha == remote_sha
    assert master.check(f"stat -c %a /root/pe-remote-backups/{local.name}").strip() == "600"
    with tarfile.open(local) as tar:
        member = tar.extractfile(f"{master.flavor.ssldir.lstrip('/')}/certs/{master.certname}.pem")
        old_pem = member.read()
    (tmp_path / "old.pem").write_bytes(old_pem)
    import subprocess
    serial = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "old.pem"), "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert serial == f"serial={before['serial']}"
    assert f"serial {before['serial'].lstrip('0')} -> {after['serial'].lstrip('0')}" in proc.stdout


def _write_inventory(path: Path, master, backup_dir: Path) -> Path:
    path.write_text(
        'default = "staging"\n\n'
        "[hosts.staging]\n"
        f'address = "127.0.0.1"\nport = {master.port}\nuser = "root"\n'
        f'key_file = "{master.key_path}"\nknown_hosts = "{master.known_hosts_path}"\n'
        f'backup_dir = "{backup_dir}"\n'
    )
    return path


def test_invoke_backup_via_inventory_changes_nothing(staging_master, tmp_path):
    master = staging_master
    before = master.ssl_checksums()
    inventory = _write_inventory(tmp_path / "inventory.toml", master, tmp_path / "bk")
    proc = run_cli("invoke", "backup", "--host", "staging", "--inventory", str(inventory))
    assert proc.returncode == 0, describe(proc)
    assert master.ssl_checksums() == before
    (tarball,) = (tmp_path / "bk").rglob("*.tar.gz")
    assert stat.S_IMODE(tarball.stat().st_mode) == 0o600
    remote_sha = master.check(f"sha256sum /root/pe-remote-backups/{tarball.name}").split()[0]
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == remote_sha
    assert remote_sha in proc.stdout
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert f"{master.flavor.cadir.lstrip('/')}/ca_key.pem" in names


def test_backup_of_a_master_laid_out_otherwise_is_of_the_folders_discovery_names(staging_master, tmp_path):
    """`backup` streams the folders where Puppet usually keeps them while discovery runs; a master that has
    one more of them (a CA folder of Puppet 7's packaging, not this master's CA) gets the backup of the
    folders discovery names, and nothing of the guess is left on either side."""
    master = staging_master
    decoy = "/etc/puppetlabs/puppetserver"
    assert master.exec(f"test -e {decoy}")[0] != 0, "the decoy must not be part of the master"
    master.check(f"mkdir -p {decoy}/ca && cp {master.flavor.cadir}/ca_crt.pem {decoy}/ca/")
    try:
        before = master.ssl_checksums()
        proc = run_cli("fab", *fab_target_args(master), "backup", "--known-hosts", str(master.known_hosts_path),
                       "--backup-dir", str(tmp_path / "bk"))
        assert proc.returncode == 0, describe(proc)
        assert master.ssl_checksums() == before
    finally:
        master.check(f"rm -rf {decoy}")
    (tarball,) = (tmp_path / "bk").rglob("*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert f"{master.flavor.cadir.lstrip('/')}/ca_key.pem" in names
    assert not [n for n in names if n.startswith(decoy.lstrip("/"))], "the guessed CA folder is not backed up"
    kept = master.check("ls -A /root/pe-remote-backups").split()
    assert tarball.name in kept and not [n for n in kept if "unconfirmed" in n], kept  # the guess was deleted
    remote_sha = master.check(f"sha256sum /root/pe-remote-backups/{tarball.name}").split()[0]
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == remote_sha
    assert sorted(p.name for p in tarball.parent.iterdir()) == [tarball.name, tarball.name + ".sha256"]
    master.check(f"rm -f /root/pe-remote-backups/{tarball.name}")  # leave the shared master as found


def test_unknown_host_key_is_refused(staging_master, tmp_path):
    master = staging_master
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes", "--known-hosts", str(empty),
                   "--backup-dir", str(tmp_path / "bk"))
    assert proc.returncode == 3, describe(proc)
    assert "host key" in proc.stderr and "unknown" in proc.stderr
    assert empty.read_text() == "", "an unknown key must not be saved without --accept-new-host-key"


def test_changed_host_key_is_refused(staging_master, tmp_path):
    master = staging_master
    wrong = tmp_path / "known_hosts"
    # A valid ed25519 key that is not the master's.
    wrong.write_text(f"[127.0.0.1]:{master.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIJx9yD1wOWeX0a7Y1kq3r1YbF9m4Vg3sH4Hq0vJrSxXy\n")
    proc = run_cli("fab", *fab_target_args(master), "discover", "--known-hosts", str(wrong))
    assert proc.returncode == 3, describe(proc)
    assert "does NOT match" in proc.stderr


def test_non_root_login_is_refused(staging_master, tmp_path):
    master = staging_master
    proc = run_cli("fab", "-H", f"deploy@{master.host}:{master.port}", "-i", str(master.key_path), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"))
    assert proc.returncode == 2, describe(proc)
    assert "logs in as root" in proc.stderr and "deploy" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hostile_certname_is_refused_before_any_change(master_factory, tmp_path):
    master = master_factory("pe37", server=False)
    master.check("sed -i 's/^certname = .*/certname = evil;touch \\/tmp\\/pwned/' /etc/puppet/puppet.conf")
    before = master.ssl_checksums()
    proc = run_cli("fab", *fab_target_args(master), "regen", "--yes",
                   "--known-hosts", str(master.known_hosts_path), "--backup-dir", str(tmp_path / "bk"))
    assert proc.returncode == 4, describe(proc)
    assert "evil;touch /tmp/pwned" in proc.stderr and "not a valid certname" in proc.stderr
    assert master.exec("test -e /tmp/pwned")[0] != 0
    assert master.ssl_checksums() == before
    assert master.exec("ls /root/pe-remote-backups")[0] != 0, "no backup should even be started"
    assert not (tmp_path / "bk").exists()
