# The two set-up commands of the README: `make demo` and `make test`.
# Both build the virtualenv from pyproject.toml first, so a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wadaemon demo

test: $(STAMP)
	scripts/ensure-firestore-emulator
	scripts/ensure-prometheus
	scripts/ensure-systemd-analyze
	scripts/ensure-chromium
	scripts/ensure-postgres
	$(BIN)/ruff check wadaemon supervisors tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(STAMP)
	scripts/ensure-firestore-emulator
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
