# The README's first two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
OUT    ?= runs/demo

.PHONY: demo test test-slow test-all bench clean-venv

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Main job on built-in synthetic data: synthesise, train, prune, ensemble, evaluate, report.
demo: $(STAMP)
	$(VENV)/bin/histobreast demo --out $(OUT)

## Default test suite (fast tests + real-data tests that fit; slow ones excluded).
test: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "not slow" -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -n 2

## Benchmarks write BENCHMARKS.md sections (machine and date included).
bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV)
