# The two commands of the README: `make run` and `make test`. Everything they need
# is installed here, on a fresh machine, by the targets below.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# OS packages the suite uses: kcat (broker checks), PostgreSQL (the API suite runs
# on SQLite and on PostgreSQL), Chromium (browser tests of the settings page) and
# prometheus for its promtool (checks and unit tests of deploy/prometheus/alerts.yml;
# on a machine with systemd the package also enables a Prometheus server on :9090).
# Java 17 and Maven are installed by `auditrelay kafka up` itself when missing.
APT_PACKAGES := kcat postgresql chromium prometheus

.PHONY: run test test-fast lint lock system-deps install kafka-up kafka-down clean

run: install
	$(BIN)/auditrelay run --demo

test: install system-deps lint
	$(BIN)/python -m pytest -n 3 --dist loadfile --durations=25

# Unit tests only: no broker and no Debian tool, a few seconds.
test-fast: install
	$(BIN)/python -m pytest tests/unit -m "not broker and not slow and not system"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

install: $(STAMP)

# Every dependency at the version of requirements-dev.lock, then the project itself.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Pin the dependencies anew after a change in pyproject.toml (uv resolves, pip installs).
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --quiet --python-version 3.11 pyproject.toml \
	  --extra worker --extra api --extra postgres -o requirements.lock
	$(BIN)/uv pip compile --quiet --python-version 3.11 pyproject.toml --extra dev \
	  -o requirements-dev.lock

system-deps:
	@missing=""; for pkg in $(APT_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

kafka-up: install
	$(BIN)/auditrelay kafka up

kafka-down: install
	$(BIN)/auditrelay kafka down

clean: kafka-down
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
