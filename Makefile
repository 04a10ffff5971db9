# followrec developer commands. `make help` lists them.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.followrec-deps-$(shell cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
OUT ?= runs/twitch
RUN ?= runs/pipeline
# The CPU build of torch lies on this machine's disk; without it pip would fetch a CUDA build.
export PIP_FIND_LINKS ?= $(wildcard /opt/wheels)

DAG ?= followrec_index_refresh
CONF ?= {"run_dir": "$(RUN)"}

.PHONY: help install run evaluate ui dag deploy undeploy test lint browser bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.followrec-deps-* && touch $(STAMP)

install: $(STAMP)  ## create the virtualenv with the pinned versions (constraints.txt)
	@# A shared virtualenv (CI's cache) may point at another checkout: repoint it, else skip.
	@$(BIN)/python -I -c "import importlib.util as u, sys; s = u.find_spec('followrec'); \
	sys.exit(s is None or not s.origin.startswith('$(CURDIR)/'))" 2>/dev/null \
	|| $(BIN)/pip install -q --no-deps -e .

run: install  ## the main job: features + training DAGs under Airflow (embedded), then candidates for user 0
	$(BIN)/followrec run --run $(RUN) --quiet
	$(BIN)/followrec recommend --run $(RUN) --user 0 --k 10

evaluate: install  ## every candidate source and two-tower variant on the Twitch platform (no DAG)
	$(BIN)/followrec evaluate --dataset twitch --out $(OUT)

bench: install  ## the ANN peers for benchmarks/ann.py (usearch, scann), pinned in constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'

ui: install  ## Airflow (:8080), MLflow (:5000) and Feast (:8888) UIs over $(RUN)
	$(BIN)/followrec ui --run $(RUN)

dag: install  ## one DAG under Airflow (in-process) on $(RUN): make dag DAG=followrec_index_refresh CONF='{}'
	AIRFLOW_HOME=$(CURDIR)/$(RUN)/airflow-home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/airflow db migrate > /dev/null
	AIRFLOW_HOME=$(CURDIR)/$(RUN)/airflow-home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False $(BIN)/airflow dags test $(DAG) -c '$(CONF)'
	$(BIN)/followrec status --run $(RUN)

deploy: install  ## the production topology here (root): Celery workers + serving in netns; runs/deploy/endpoints.json
	$(BIN)/followrec deploy up --run runs/deploy

undeploy: install  ## stop it and remove its namespaces (PURGE=1 also drops its databases)
	$(BIN)/followrec deploy down --run runs/deploy $(if $(PURGE),--purge,)

TEST_WORKERS ?= 2
test: install  ## run the whole test suite (what CI runs), whole files on TEST_WORKERS processes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

browser:  ## Debian's chromium and chromedriver for the browser tests (apt; root or sudo)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); pkgs="chromium chromium-driver"; \
	  $$sudo apt-get install -y -q --no-install-recommends $$pkgs || \
	  { $$sudo apt-get update -q && $$sudo apt-get install -y -q --no-install-recommends $$pkgs; }; }

lint: install  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## remove run outputs (keeps the virtualenv)
	rm -rf runs .pytest_cache
