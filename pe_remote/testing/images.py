"""Build the staging masters' images, with no registry needed.

Three layers deep, each image built from a definition folder under images/:

    base `debian:<suite>`        bullseye          bookworm          trixie
    suite layer (systemd, sshd,  bullseye          bookworm          trixie
      Debian's own Puppet)       puppet 5.5.22     puppetserver 7.9  puppetserver 8.7
                                 + puppet-master   + puppet-agent 7  + puppet-agent 8
      definition folder          bullseye          puppetserver      puppetserver
    flavor                       pe37 pe2016       oss7 pe2019       oss8
                                 puppet5

What every suite layer shares (sshd, the accounts, masked units) is images/common/
suite-layer.sh; images/common/ goes into every image's build context as common/.

Every Puppet command on these masters is Puppet's own code from Debian's
packages; only PE services that Debian does not package (ActiveMQ, MCollective,
orchestration services, PXP agent, and PE 2019+'s console, nginx, PuppetDB and
PostgreSQL) are stand-in units that say so.

A base is `debian:<suite>` when it is present or can be pulled (a laptop with
Docker Hub); otherwise it is made with debootstrap and `docker import` (a CI
machine with no registry) and tagged `pe-remote-staging:base-<suite>-debootstrap`.
Every image is tagged with a hash of its build context (its definition folder and
images/common/) and of its parent's tag, so a warm run reuses what is built and any
edit of a definition or of common/ rebuilds it and what depends on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger(__name__)

IMAGES_DIR = Path(__file__).parent / "images"
# Shared by the definitions (the suite layers' setup); in every build context as common/.
COMMON_DIR = IMAGES_DIR / "common"
REPOSITORY = "pe-remote-staging"
DEBOOTSTRAP_MIRROR = os.environ.get("PE_REMOTE_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# Debian suites with a base image; the suite layer of the same name is built on it.
SUITES = ("bullseye", "bookworm", "trixie")
# Image -> the image it is built on; a suite layer (parent None) is built on its suite's base.
LAYERS: dict[str, str | None] = {
    "bullseye": None, "bookworm": None, "trixie": None,
    "pe37": "bullseye", "pe2016": "bullseye", "puppet5": "bullseye",
    "oss7": "bookworm", "pe2019": "bookworm",
    "oss8": "trixie",
}
# Image -> its definition folder under images/ where that is not the folder of its own name:
# Debian's puppetserver layer is one definition, built on bookworm (Puppet 7) and trixie (Puppet 8).
FOLDERS = {"bookworm": "puppetserver", "trixie": "puppetserver"}
# The images a staging master is started from, in build order (bullseye's three share a layer).
FLAVOR_IMAGES = ("pe37", "pe2016", "puppet5", "oss7", "pe2019", "oss8")


class ImageBuildError(RuntimeError):
    """An image could not be built; the message carries the build's last lines."""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    built_now: bool


def build_context(name: str) -> dict[str, Path]:
    """The files image `name` is built from, by their path in its build context: its definition
    folder's at the top, images/common/'s under common/."""
    folder = IMAGES_DIR / FOLDERS.get(name, name)
    context = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    context.update(
        {f"common/{p.relative_to(COMMON_DIR).as_posix()}": p for p in COMMON_DIR.rglob("*") if p.is_file()}
    )
    return context


def definition_hash(context: dict[str, Path], parent_tag: str) -> str:
    """A hash of every file of a build context (path and bytes) and of the parent image's tag."""
    digest = hashlib.sha256(parent_tag.encode())
    for name in sorted(context):
        digest.update(name.encode())
        digest.update(context[name].read_bytes())
    return digest.hexdigest()[:16]


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_base(client: docker.DockerClient, suite: str) -> str:
    """Return the tag of a Debian `suite` base image, making one if needed."""
    if suite not in SUITES:
        raise ValueError(f"unknown Debian suite {suite!r}; known: {', '.join(SUITES)}")
    upstream = f"debian:{suite}"
    if _has_image(client, upstream):
        return upstream
    local = f"{REPOSITORY}:base-{suite}-debootstrap"
    if _has_image(client, local):
        return local
    if os.environ.get("PE_REMOTE_TRY_PULL", "1") == "1":
        try:
            client.images.pull(upstream)
            return upstream
        except docker.errors.APIError as exc:  # no registry here: build it ourselves
            log.info("cannot pull %s (%s); building the base with debootstrap", upstream, exc)
    _debootstrap_import(suite, local)
    return local


def _debootstrap_import(suite: str, tag: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            f"no debian:{suite} image and no debootstrap to build one: "
            f"install it (apt-get install debootstrap) or pull debian:{suite}"
        )
    log.info("building the debian:%s base with debootstrap as %s", suite, tag)
    with tempfile.TemporaryDirectory(prefix="pe-remote-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(rootfs), DEBOOTSTRAP_MIRROR],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-20:])
            raise ImageBuildError(f"debootstrap failed (exit {run.returncode}):\n{tail}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise ImageBuildError(f"docker import of the debootstrap base failed: {imported.stderr.strip()}")


def ensure_image(client: docker.DockerClient, name: str) -> BuiltImage:
    """Build (or reuse) image `name` and its parents."""
    parent = LAYERS[name]
    parent_tag = ensure_image(client, parent).tag if parent else ensure_base(client, name)
    context = build_context(name)
    tag = f"{REPOSITORY}:{name}-{definition_hash(context, parent_tag)}"
    if _has_image(client, tag):
        return BuiltImage(tag, built_now=False)
    log.info("building %s from %s", tag, IMAGES_DIR / FOLDERS.get(name, name))
    try:
        with tempfile.TemporaryDirectory(prefix="pe-remote-context-") as tmp:
            for relative, source in context.items():
                (Path(tmp) / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, Path(tmp) / relative)
            client.images.build(path=tmp, tag=tag, buildargs={"BASE": parent_tag}, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        lines = [str(chunk.get("stream", chunk.get("error", ""))).rstrip() for chunk in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-3000:]
        raise ImageBuildError(f"building {tag} failed: {exc.msg}\n{tail}") from exc
    return BuiltImage(tag, built_now=True)


def main() -> None:
    """`python -m pe_remote.testing.images`: build every flavor's image, print tags and times."""
    import time

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = docker.from_env()
    for name in FLAVOR_IMAGES:
        started = time.monotonic()
        image = ensure_image(client, name)
        state = "built" if image.built_now else "reused"
        print(f"{name}: {image.tag} ({state}, {time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
