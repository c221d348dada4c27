# Two commands on a fresh machine (python3 + java): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-cluster bundle clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)
	$(PY) -m pip install --quiet -e ".[test]"

demo: setup
	$(VENV)/bin/distunlearn demo

test: setup
	$(PY) -m pytest -q

test-cluster: setup
	$(PY) -m pytest -q -m cluster

bundle: setup
	$(VENV)/bin/distunlearn bundle --out dist/distunlearn.zip

clean:
	rm -rf lakehouse dist spark-warehouse metastore_db derby.log .pytest_cache
