# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSTEM_BINS := redis-server prometheus promtool prometheus-alertmanager amtool jq bc curl
SYSTEM_PKGS := redis-server prometheus prometheus-alertmanager jq bc curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test fuzz system-deps bench dashboards alerts docs generate clean stack stack-down incident

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m service

system-deps:
	@missing=""; for b in $(SYSTEM_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PKGS) >/dev/null; \
	fi
	@command -v docker-compose >/dev/null 2>&1 || { echo "installing Debian docker-compose (validates docker-compose.yml offline; no daemon)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }

test: install system-deps
	$(BIN)/python -m pytest -q -rfE tests

# the hostile-input fuzz tests (tests/fuzz, also in `make test` with few examples) with the long profile
fuzz: install system-deps
	FUZZ_PROFILE=long $(BIN)/python -m pytest -q -rfE -m fuzz tests/fuzz

bench: install system-deps
	@command -v wrk >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 || { echo "installing Debian wrk (the load generator) and haproxy (the C relay of uncached_overhead)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk haproxy >/dev/null; }
	$(BIN)/python -m bench

dashboards: install
	$(BIN)/python -m dashboards.generate
	$(BIN)/python -m deploy.kubernetes.generate

alerts: install
	$(BIN)/python -m alerts.generate
	$(BIN)/python -m deploy.kubernetes.generate
	$(BIN)/python -m deploy.alertmanager

docs: install
	$(BIN)/python -m service.docgen --write README.md

generate: dashboards alerts docs

# the whole observability stack on loopback without Docker (deploy/stack.py), state under .stack/
stack: install system-deps
	$(BIN)/python -m deploy.stack up

stack-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m deploy.stack down; else echo "no stack (no .venv)"; fi

incident: install
	$(BIN)/python -m deploy.stack incident

clean:
	@if [ -x $(BIN)/python ] && [ -f .stack/stack.json ]; then $(BIN)/python -m deploy.stack down; fi
	rm -rf $(VENV) .state .stack
