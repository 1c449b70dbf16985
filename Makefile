# Two commands a newcomer needs: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration kafka-up kafka-down bench chaos clean deploy-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/arrears demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts services tests bench chaos
	$(BIN)/python -m contracts.generate --check

unit: $(STAMP)
	$(BIN)/pytest -m "not integration" -q

integration: $(STAMP)
	bash deploy/local/kafka.sh fetch
	$(BIN)/pytest -m integration -q

# The test files are spread over TEST_WORKERS processes (pytest-xdist), each with its own Kafka broker
# and PostgreSQL: most integration tests wait on them, so two processes finish sooner on two cores.
TEST_WORKERS ?= 2

test: lint $(STAMP)
	bash deploy/local/kafka.sh fetch
	$(BIN)/pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

# Fault scenarios on real processes (docs/reliability.md): the long run by default, `make chaos ARGS=--short`
# for the few-minute one CI runs. Exits non-zero if anything was lost, applied twice or sent twice.
chaos: $(STAMP)
	bash deploy/local/kafka.sh fetch
	$(BIN)/python -m chaos $(ARGS)

# Lint deploy/image/Dockerfile and validate the Kubernetes manifests (base and overlays), offline.
deploy-check: $(STAMP)
	bash deploy/check.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
