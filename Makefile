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

build:
	$(CARGO) build --release --locked

run: build
	$(CARGO) run --release --locked -- serve --bind $(BIND)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

test-rust:
	$(CARGO) test --release --locked

test: lint test-rust

bench:
	$(CARGO) run --release --locked --example fasta_scan

fmt:
	$(CARGO) fmt --all
