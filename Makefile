# Merak in Python. `make demo` runs the emulator end to end; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Ours, and Alcor's southbound schema (package alcor.schema) that Alcor's DPM/NCM speak to host agents.
PROTO_SRC := $(wildcard proto/merak/v1/*.proto proto/alcor/schema/*.proto)
APT_PACKAGES := redis-server iproute2 iputils-ping procps shellcheck openssl nftables chromium \
	ovn-central ovn-host openvswitch-switch openvswitch-common ethtool
# What the benchmarks compare against: Mininet for the topology bench (`make bench` installs them).
BENCH_PACKAGES := mininet bridge-utils

.PHONY: install apt venv proto newman lint test test-fast up down status demo bench bench-million \
	bench-references clean images compose-demo

install: apt venv proto newman ## system packages, virtualenv, generated protos, newman

# `apt` installs $(PACKAGES): the product's by default, the benchmarks' references for bench-references.
PACKAGES ?= $(APT_PACKAGES)

apt: ## Debian packages that are missing (a removed package whose config files remain counts as missing)
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing (no system service is started: policy-rc.d refuses them)"; \
	  guard=/usr/sbin/policy-rc.d; placed=""; \
	  if [ ! -e $$guard ]; then printf '#!/bin/sh\nexit 101\n' > $$guard && chmod 755 $$guard && placed=1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  status=$$?; [ -z "$$placed" ] || rm -f $$guard; exit $$status; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installed again whenever pyproject.toml changes (packages, scripts, entry points move with it).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

proto: ## generate Python + mypy stubs from proto/ (not committed)
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m grpc_tools.protoc -I proto \
	  --python_out=libs --grpc_python_out=libs --mypy_out=quiet:libs --mypy_grpc_out=quiet:libs $(PROTO_SRC)

NEWMAN_DIR := tests/e2e/newman

newman: ## newman (npm), which runs Merak's Postman collections in the e2e tests
	@command -v npm >/dev/null || { echo "apt-get install: nodejs npm"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@[ -x $(NEWMAN_DIR)/node_modules/.bin/newman ] || npm ci --prefix $(NEWMAN_DIR) --no-audit --no-fund --loglevel=error

# The last step renders every kustomize overlay and validates it offline against the Kubernetes schemas.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy/test_kustomize.py

test: $(VENV)/.installed ## the whole suite (needs root for the network-namespace tests)
	$(BIN)/pytest -q

up: ## start the local stack (Redis, Temporal dev server, all services)
	$(BIN)/merak up

down:
	$(BIN)/merak down

status:
	$(BIN)/merak status

demo: install up
	$(BIN)/merak demo

images: $(VENV)/.installed proto ## the container image, built here with no registry (Docker engine set up if missing)
	$(BIN)/python -m merak_tools.images

compose-demo: $(VENV)/.installed proto ## images, docker compose up, the default scenario, down, the host checked
	$(BIN)/python -m merak_tools.compose_demo

bench-references: ## what the benchmarks compare against (Mininet), when missing
	@$(MAKE) --no-print-directory apt PACKAGES="$(BENCH_PACKAGES)"

# The product's packages too: the benchmarks run the stack (Redis, OVN) on a machine that may have none.
bench: apt $(VENV)/.installed proto bench-references ## every benchmark; one table, bench-results.json
	$(BIN)/python -m bench

bench-million: apt $(VENV)/.installed proto ## a million fake VMs (10,000 hosts x 100) with progress; bench-million.json, bench-million-report.{json,html}
	$(BIN)/python -m bench million

clean:
	rm -rf $(VENV) $(NEWMAN_DIR)/node_modules libs/merak/v1/*_pb2*.py libs/merak/v1/*_pb2*.pyi \
	  libs/alcor/schema/*_pb2*.py libs/alcor/schema/*_pb2*.pyi .mypy_cache .ruff_cache .pytest_cache
