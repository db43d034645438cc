"""pytest plugin: staging Puppet masters as fixtures. Opt-in: `-p pe_remote.testing.plugin` on the
command line, or `pytest_plugins = ["pe_remote.testing.plugin"]` in a conftest.py. Installing
pe-remote changes no other project's pytest runs, and docker/testcontainers are imported only when
a test asks for a master.

Fixtures:
- `staging_master`: a SHARED running master, one per flavor per session, for tests
  that only read it. Parametrize the flavor indirectly:
  `@pytest.mark.parametrize("staging_master", ["pe37", "oss7"], indirect=True)`
  (default `pe37`; flavors: pe37, pe2016 and puppet5 on Puppet 5.5, oss7 and
  pe2019 on Puppet 7, oss8 on Puppet 8; see `pe_remote.testing.master.FLAVORS`). After each test the plugin checks that the master's SSL files
  are byte for byte as before, so a test that changes it fails instead of
  poisoning the tests after it.
- `fresh_master`: a new master for one test that changes it, same parametrization.
- `master_factory`: `master_factory(flavor, server=True)` starts extra masters,
  all removed at the end of the test.
- `agent_factory`: `agent_factory(master)` starts an agent host of that master (its generation's
  Debian suite, puppet agent only), enrolled with a cert the master's CA signed; removed at the end.
- `client_key`: the key pair root's authorized_keys trusts.

Tests marked `container` need a Docker engine. Without one they are skipped with a
one-line reason, except when CI=true, where they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # docker and testcontainers are imported only when a master is asked for
    from pe_remote.testing.master import ClientKey, StagingMaster

DEFAULT_FLAVOR = "pe37"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "container: needs a Docker engine; starts staging Puppet masters")


def _engine_problem() -> str | None:
    try:
        import docker

        docker.from_env().ping()
        return None
    except Exception as exc:  # any failure to reach the engine means the same thing here
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:120]})"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = _engine_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {problem}: container tests must not be skipped in CI", pytrace=False)
    pytest.skip(f"{problem}; container tests skipped (they fail instead when CI=true)")


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> "ClientKey":
    from pe_remote.testing.master import ClientKey

    return ClientKey.create(tmp_path_factory.mktemp("client-key"))


class MasterPool:
    """The session's shared masters, one per flavor, started on first use."""

    def __init__(self, client_key: ClientKey, folder) -> None:
        self.client_key = client_key
        self.folder = folder
        self.masters: dict[str, StagingMaster] = {}

    def get(self, flavor: str) -> "StagingMaster":
        from pe_remote.testing.master import start_master

        if flavor not in self.masters:
            self.masters[flavor] = start_master(flavor, self.client_key, self.folder)
        return self.masters[flavor]

    def close(self) -> None:
        for master in self.masters.values():
            master.stop()


@pytest.fixture(scope="session")
def master_pool(docker_engine, client_key, tmp_path_factory):
    pool = MasterPool(client_key, tmp_path_factory.mktemp("known-hosts"))
    yield pool
    pool.close()


def _flavor(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", DEFAULT_FLAVOR)


@pytest.fixture
def staging_master(request, master_pool: MasterPool):
    master = master_pool.get(_flavor(request))
    before = master.ssl_checksums()
    yield master
    after = master.ssl_checksums()
    if after != before:
        # Later tests must not run against a changed shared master.
        master_pool.masters.pop(master.flavor.name).stop()
        pytest.fail(f"test {request.node.nodeid} changed the shared {master.flavor.name} master's SSL files; "
                    "use the fresh_master fixture for tests that change a master", pytrace=False)


@pytest.fixture
def master_factory(docker_engine, client_key, tmp_path):
    started: list[StagingMaster] = []

    def start(flavor: str = DEFAULT_FLAVOR, *, server: bool = True) -> "StagingMaster":
        from pe_remote.testing.master import start_master

        master = start_master(flavor, client_key, tmp_path, server=server)
        started.append(master)
        return master

    yield start
    for master in started:
        master.stop()


@pytest.fixture
def agent_factory(docker_engine, client_key):
    """`agent_factory(master)`: an agent host of that master, enrolled (see master.start_agent)."""
    started = []

    def start(master):
        from pe_remote.testing.master import start_agent

        agent = start_agent(master, client_key)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def fresh_master(request, master_factory):
    return master_factory(_flavor(request))
