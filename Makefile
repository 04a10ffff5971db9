# followrec developer commands. `make help` lists them.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.followrec-deps-$(shell cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
OUT ?= runs/twitch
# The CPU build of torch lies on this machine's disk; without it pip would fetch a CUDA build.
export PIP_FIND_LINKS ?= $(wildcard /opt/wheels)

AIRFLOW_HOME ?= $(CURDIR)/runs/airflow-home
CONF ?= {}

.PHONY: help install run dag-training test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.followrec-deps-* && touch $(STAMP)

install: $(STAMP)  ## create the virtualenv with the pinned versions (constraints.txt)
	$(BIN)/pip install -q --no-deps -e .

run: install  ## the main job: evaluate every candidate source on the Twitch platform
	$(BIN)/followrec evaluate --dataset twitch --out $(OUT)

dag-training: install  ## run the followrec_training DAG under Airflow (SQLite, in-process); CONF='{"epochs": 2}'
	AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/airflow db migrate > /dev/null
	AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/airflow dags test followrec_training -c '$(CONF)'
	$(BIN)/followrec status --run runs/airflow

test: install  ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest

lint: install  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## remove run outputs (keeps the virtualenv)
	rm -rf runs .pytest_cache
