# BayesPilot: two entry points, each bootstrapping the locked environment first.
#   make run   - the promotion flow on embedded defaults (synthetic data, local SQLite Prefect + MLflow)
#   make test  - the test suite (plus ruff and mypy in `make check`)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-from-lock
CONFIG ?= configs/default.yaml
ARGS ?=
# pytest-xdist workers (one per core on the 2-core CI machine; 0 runs in this process)
PYTEST_WORKERS ?= 2

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export OMP_NUM_THREADS ?= 1

.PHONY: run test check lint env clean

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(BIN)/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip sync --quiet --python $(BIN)/python --require-hashes requirements.lock
	uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/bayespilot run --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check flows tasks schemas serving configs tests benchmarks
	$(BIN)/mypy flows tasks schemas serving configs tests benchmarks

check: lint test

clean:
	rm -rf $(VENV)
