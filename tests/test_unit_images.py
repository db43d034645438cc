"""The staging images' build contexts and the hash their tags carry (no Docker needed)."""

from __future__ import annotations

from pe_remote.testing import images
from pe_remote.testing.images import LAYERS, build_context, definition_hash


def test_every_build_context_has_its_dockerfile_and_the_shared_setup():
    for name in LAYERS:
        context = build_context(name)
        assert "Dockerfile" in context and "common/suite-layer.sh" in context, name
    assert build_context("bookworm") == build_context("trixie")  # one puppetserver definition, two suites
    assert "puppetserver-start-race.conf" in build_context("trixie")


def test_the_hash_covers_the_shared_folder_and_the_parent(tmp_path, monkeypatch):
    definition, common = tmp_path / "bullseye", tmp_path / "common"
    definition.mkdir()
    common.mkdir()
    (definition / "Dockerfile").write_text("FROM x\n")
    (common / "suite-layer.sh").write_text("true\n")
    monkeypatch.setattr(images, "IMAGES_DIR", tmp_path)
    monkeypatch.setattr(images, "COMMON_DIR", common)
    before = definition_hash(build_context("bullseye"), "debian:bullseye")
    assert definition_hash(build_context("bullseye"), "debian:bullseye") == before
    assert definition_hash(build_context("bullseye"), "debian:bookworm") != before
    (common / "suite-layer.sh").write_text("false\n")
    assert definition_hash(build_context("bullseye"), "debian:bullseye") != before
