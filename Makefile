# The two commands a newcomer needs are `make run` and `make test`; everything
# else here serves them. The virtual environment lives in .venv and is rebuilt
# whenever pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench bench-layer docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[run]'
	touch $@

# make run: migrate the example's database, then start the Procfile's web, worker and
# delay processes (not release). WEB_CONCURRENCY (default 2) is how many worker processes
# honcho starts; each then runs one (the Procfile's --processes ${WEB_CONCURRENCY:-1}
# is for platforms that start one worker per dyno or container).
run: $(VENV)/.installed-run  ## the example chat (Procfile: interface server + 2 workers) on :8000
	$(BIN)/python deploy/example/manage.py migrate --noinput -v0
	INTERFACESERVER_BIND=$${INTERFACESERVER_BIND:-127.0.0.1} WEB_CONCURRENCY=1 \
	    PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -p $${PORT:-8000} \
	    -c worker=$${WEB_CONCURRENCY:-2} web worker delay

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(VENV)/.installed-test  ## lint, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-test  ## whole servers vs daphne 4 and uvicorn (--quick: make bench ARGS=--quick)
	$(BIN)/python -m tests.bench.servers $(ARGS)

bench-layer: $(VENV)/.installed-test  ## channel-layer benchmark (prints numbers; see docs/benchmarks)
	$(BIN)/python -m tests.bench.layer

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.installed-docs  ## build the Sphinx site into docs/_build/html (warnings fail)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
