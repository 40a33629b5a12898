# mailconduit — two commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv system-deps bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m compileall -q src
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests need: Postfix's smtp-sink/smtp-source (no MTA is
# configured or left running) and Chromium for the browser tests.
system-deps:
	@bash scripts/system-deps.sh

demo: venv
	$(BIN)/python examples/demo.py

# The Airflow provider's tests run in an environment of their own (.venv-airflow, on a base
# built once per requirements-airflow.lock and cached); tests/test_airflow.py runs them.
test: venv system-deps
	PY=$(PY) bash scripts/airflow-venv.sh >/dev/null
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# compileall: where PYTHONDONTWRITEBYTECODE is set, modules added since the venv was made
# would otherwise be parsed again at every start of every contender run.
bench: venv system-deps
	$(BIN)/python -m compileall -q src
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
