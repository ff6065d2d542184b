# Two commands do everything, set-up included:
#   make run    train (or load) the MNIST CNN on the bundled digits and run the cascading test
#   make test   the linter (ruff) and the test suite
# Both create .venv on first use. ARGS passes Hydra overrides: make run ARGS="randomization=independent"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install run test clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
