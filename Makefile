# pe-remote: `make test` and `make demo` set up everything they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup engine python test unit demo images clean bench

setup: engine python

engine:
	sh scripts/ensure-engine.sh

python: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Build (or reuse) the staging masters' images.
images: setup
	$(BIN)/python -m pe_remote.testing.images

# The whole suite: unit tests and end-to-end tests against containerised masters. The 30 slowest
# tests are listed at its end (the suite must stay well under 45 min on a fresh 2-core machine).
test: setup
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -v --durations=30 $(PYTEST_ARGS)

# Fast tests only (no Docker needed), with the library's line coverage (must stay >= 85%).
unit: python
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -v -m "not container" --cov=pe_remote --cov-report=term \
		--cov-fail-under=85 $(PYTEST_ARGS)

# Start a throwaway PE 3.7 staging master, run `fab ... regen --yes` against it, stop it.
demo: setup
	PATH="$(BIN):$$PATH" $(BIN)/python -m pe_remote.testing.demo

clean:
	rm -rf $(VENV) .demo .pytest_cache
	docker ps -aq --filter label=pe-remote.staging-master | xargs -r docker rm -f

# Measure pe-remote against its targets (downtime, overhead, backup, fleet, RSS) on staging masters
# it starts itself (at most 4 at once, all removed again); 10-20 minutes. The backup is compared
# with the OpenSSH client, installed here if missing.
bench: setup
	command -v ssh >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q openssh-client; }
	PATH="$(BIN):$$PATH" $(BIN)/python -m benchmarks
