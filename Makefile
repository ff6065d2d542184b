# Three commands do everything, set-up included:
#   make run    train (or load) the MNIST CNN on the bundled digits and run the cascading test
#   make test   the linter (ruff) and the quick tier of the tests (unit and integration, a few minutes)
#   make test-all   the linter and every test but the slow ones (the end-to-end tier too)
# Both create .venv on first use. ARGS passes Hydra overrides: make run ARGS="randomization=independent"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install run test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) experiments/model_randomization.py $(ARGS)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m 'not slow and not e2e' $(PYTEST_ARGS)

test-all: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
