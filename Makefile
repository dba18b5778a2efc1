# hookstream developer tasks. `make` alone lists them.
#
# Variables: VENV (default .venv), PYTHON (to create it, default python3), PYTEST_ARGS,
# KAFKA_PORT (local broker port, default 9092), KAFKA_BOOTSTRAP_SERVERS (use that broker instead).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV ?= .venv
PYTHON ?= python3
PY = $(VENV)/bin/python
STAMP = $(VENV)/.installed
PYTEST_ARGS ?=
STATE_DIR ?= $(or $(HOOKSTREAM_STATE_DIR),.hookstream)

# KAFKA_PORT and the other KAFKA_*/HOOKSTREAM_* variables reach scripts/kafka through the
# environment (make passes both environment and command-line variables on to recipes).

.PHONY: help venv oracles kafka-up kafka-down kafka-status kafka-logs test unit demo lint docs fmt clean \
	bench-gateway bench-ai bench-replay bench-latency bench-pipeline bench-http postgres-up postgres-down compose-check deploy-check monitoring-check

help: ## list the targets
	@echo "hookstream make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,docs]'
	@touch $@

venv: $(STAMP) ## create .venv and install hookstream with its dev and docs tools (again when pyproject.toml changes)

# The senders' Node SDKs the signature-preset tests use as oracles (tests/oracles): npm ci from
# the lock file, again when it changes. No node is an error here, not a skip in the tests.
ORACLES_STAMP = tests/oracles/node_modules/.installed
$(ORACLES_STAMP): tests/oracles/package.json tests/oracles/package-lock.json
	@command -v node >/dev/null || { echo "node (20.19 or newer) is needed for tests/oracles" >&2; exit 1; }
	npm ci --prefix tests/oracles --no-audit --no-fund --loglevel=error
	@touch $@

oracles: $(ORACLES_STAMP) ## install the Node SDKs the signature presets are tested against (tests/oracles, npm ci)

kafka-up: ## start the local Kafka broker (scripts/kafka up); with KAFKA_BOOTSTRAP_SERVERS set, check that a broker answers there
	scripts/kafka up

kafka-down: ## stop the local Kafka broker
	scripts/kafka down

kafka-status: ## is the local Kafka broker running?
	scripts/kafka status

kafka-logs: ## the local broker's log (last lines)
	scripts/kafka logs

test: venv oracles ## all tests against a real broker and PostgreSQL (started and stopped here unless KAFKA_BOOTSTRAP_SERVERS / HOOKSTREAM_TEST_POSTGRES_DSN are set)
	scripts/with-kafka scripts/with-postgres $(PY) -m pytest $(PYTEST_ARGS)

unit: venv oracles ## unit tests only, no broker
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: venv ## the end-to-end demo (scripts/demo.py) against a real broker (no PostgreSQL: the demo does not use it)
	scripts/with-kafka $(PY) scripts/demo.py

postgres-up: ## start the local PostgreSQL server (scripts/postgres up; prints its DSN)
	scripts/postgres up

postgres-down: ## stop the local PostgreSQL server
	scripts/postgres down

bench-gateway: venv ## gateway vs bare aiohttp vs naive aiokafka, one run (bench/results/gateway.md)
	scripts/with-kafka $(PY) bench/gateway/run.py

bench-ai: venv ## AI stage vs naive Faust vs Faust concurrency=64; TPM budget vs a rate-limited provider, 4 min (bench/results/ai_stage.md, ai_budget.md, .json)
	scripts/with-kafka $(PY) bench/ai_stage/run.py
	$(PY) bench/ai_budget/run.py

bench-replay: venv ## hookstream replay vs a kcat pipe over 100,000 events (bench/results/replay.md, .json; installs kcat if missing)
	scripts/with-kafka $(PY) bench/replay/run.py

bench-latency: venv ## webhook in → CRM update, per hop, at a low rate vs bare aiokafka hops (bench/results/latency.md, .json)
	scripts/with-kafka $(PY) bench/latency/run.py

# A broker of its own (a fresh state dir, so scripts/kafka starts an empty one and stops it
# after): a long-running broker with thousands of topics skews CPU per event.
bench-pipeline: venv ## CPU per event: worker vs bare Faust vs a bare aiokafka loop; sinks vs a consume + PUT loop (bench/results/pipeline.md, .json; ~15 min)
	env -u KAFKA_BOOTSTRAP_SERVERS HOOKSTREAM_STATE_DIR=$$(mktemp -d) scripts/with-kafka $(PY) bench/pipeline/run.py $(BENCH_PIPELINE_ARGS)

# BENCH_HTTP_ARGS: options both of its scripts take, e.g. --servers hookstream aiohttp, --code-from HEAD
bench-http: venv ## own HTTP/1.1 layer vs aiohttp, uvicorn, granian: req/s, CPU/req, attacks (bench/results/http_servers.md, .json; ~12 min; installs the bench extra and wrk)
	$(PY) -c 'import uvicorn, granian' 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q -e '.[dev,bench]'
	$(PY) bench/http_servers/run.py $(BENCH_HTTP_ARGS)
	$(PY) bench/http_servers/protections.py $(BENCH_HTTP_ARGS)

lint: venv ## ruff check, ruff format --check, mypy, the import contracts, compose-check, deploy-check (runs all, fails if any fails)
	@rc=0; \
	echo "+ ruff check ."; $(PY) -m ruff check . || rc=1; \
	echo "+ ruff format --check ."; $(PY) -m ruff format --check . || rc=1; \
	echo "+ mypy"; $(PY) -m mypy || rc=1; \
	echo "+ mypy docs/hooks"; $(PY) -m mypy --strict docs/hooks/reference_pages.py || rc=1; \
	echo "+ lint-imports"; $(VENV)/bin/lint-imports || rc=1; \
	echo "+ compose-check"; $(MAKE) --no-print-directory compose-check || rc=1; \
	echo "+ deploy-check"; $(MAKE) --no-print-directory deploy-check || rc=1; \
	exit $$rc

compose-check: venv ## validate docker-compose.yml without a container engine (compose-go and the Compose Specification's schema; commands, ports, env, healthchecks; needs go)
	$(PY) scripts/compose_check.py

deploy-check: venv ## render the Helm chart (deploy/helm/hookstream) and validate every manifest offline: helm lint/template, Kubernetes schemas (strict), hookstream's own checks; builds Helm from source once (needs go)
	$(PY) scripts/deploy_check.py

monitoring-check: venv ## check deploy/monitoring: promtool check and test rules of the alerts, the dashboard's queries parsed and naming only exported metrics (also in make test; needs promtool: apt-get install prometheus)
	$(PY) -m pytest -q tests/unit/deploy/test_monitoring.py

docs: venv ## build the manual (docs/, mkdocs-material) into site/ with --strict: a broken link, anchor or page fails
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --clean --site-dir site

fmt: venv ## ruff format + ruff check --fix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: ## stop the local broker and PostgreSQL, and remove the .hookstream state
	scripts/kafka down
	scripts/postgres down
	rm -rf -- "$(STATE_DIR)"
