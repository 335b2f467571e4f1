# safetour tasks. `make help` lists them. CI runs `make test` (see .ci/run).
.DEFAULT_GOAL := help
.PHONY: help bootstrap run test check lint typecheck unit integration bench broker-start broker-stop clean

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-14s %s\n", $$1, $$2}'

bootstrap: ## install Debian packages, .venv and the Kafka jars (idempotent)
	@scripts/bootstrap

run: bootstrap ## THE DEMO: embedded Kafka + worker + generator, alerts shown live
	@.venv/bin/safetour run $(ARGS)

test: bootstrap ## THE TEST SUITE: lint, types, unit tests (JIT on and off), broker tests
	@scripts/test

check: bootstrap ## lint and type-check only
	@scripts/check

unit: bootstrap ## unit tests only (no broker)
	@.venv/bin/pytest tests/unit -q

integration: bootstrap ## broker tests only
	@.venv/bin/pytest tests/integration -q

bench: bootstrap ## end-to-end benchmark against the peers; writes benchmarks/RESULTS.md (long)
	@.venv/bin/python -m benchmarks $(ARGS)

broker-start: bootstrap ## start the embedded broker and create the topics
	@.venv/bin/safetour topics create --start-broker

broker-stop: ## stop the embedded broker
	@.venv/bin/safetour broker stop

clean: ## remove local state (.safetour: broker data and jars) and caches
	rm -rf .safetour .mypy_cache .ruff_cache .pytest_cache .hypothesis
