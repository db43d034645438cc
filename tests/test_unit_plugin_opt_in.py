"""Installing pe-remote changes no other project's pytest runs: the staging-master plugin is opt-in,
imports docker only when a master is asked for, and sets no environment for anyone else.

Before: a `pytest11` entry point loaded the plugin into every pytest run of the environment; it
imported docker (failing runs where docker is not installed) and set TESTCONTAINERS_RYUK_DISABLED."""

from __future__ import annotations

import os
import subprocess
import sys


def test_an_unrelated_project_without_docker_still_runs(tmp_path):
    project = tmp_path / "other-project"
    project.mkdir()
    (project / "test_other.py").write_text(
        "import os, sys\n"
        "def test_untouched():\n"
        "    assert 'TESTCONTAINERS_RYUK_DISABLED' not in os.environ\n"
        "    assert not any(m.startswith('pe_remote') for m in sys.modules)\n")
    shadow = tmp_path / "no-docker"
    (shadow / "docker").mkdir(parents=True)
    (shadow / "docker" / "__init__.py").write_text("raise ImportError('docker is not installed here')\n")
    env = {k: v for k, v in os.environ.items() if k != "TESTCONTAINERS_RYUK_DISABLED"}
    env["PYTHONPATH"] = str(shadow)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_opting_in_offers_the_fixtures_without_importing_docker(tmp_path):
    project = tmp_path / "ci-project"
    project.mkdir()
    (project / "test_nothing.py").write_text("import sys\n"
                                            "def test_no_docker_yet():\n"
                                            "    assert 'docker' not in sys.modules\n")
    shadow = tmp_path / "no-docker"
    (shadow / "docker").mkdir(parents=True)
    (shadow / "docker" / "__init__.py").write_text("raise ImportError('docker is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow)}
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pe_remote.testing.plugin"]
    listing = subprocess.run([*base, "--fixtures", str(project)], cwd=project, env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    for name in ("staging_master", "fresh_master", "master_factory", "client_key"):
        assert name in listing.stdout
    proc = subprocess.run([*base, "-q", str(project)], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
