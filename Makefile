# Two entry points for a fresh machine that has Python 3.11 and make:
#   make demo   set up, then run the main job on the built-in teachers (embedded default)
#   make test   set up, then run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo-project

.PHONY: setup demo test teachers clean

setup: $(VENV)/.installed

# torch is pinned and installed first so that pip takes the CPU wheel and never a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/persea init $(DEMO) --exist-ok
	$(BIN)/persea harvest --project $(DEMO)

test: setup
	$(BIN)/python -m pytest -q

# Rebuild the three built-in teachers from their seed (about 15 minutes on 2 cores).
teachers: setup
	$(BIN)/python -m persea.toyworld.build

clean:
	rm -rf $(VENV) $(DEMO)
