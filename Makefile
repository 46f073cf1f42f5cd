# Two entry points for a fresh machine that has Python 3.11 and make:
#   make demo   set up, then run the main job on the built-in teachers (embedded default)
#   make test   set up, then run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo-project

.PHONY: setup demo seal-demo test teachers clean bench-peers

setup: $(VENV)/.installed

# torch is pinned and installed first so that pip takes the CPU wheel and never a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: harvest the built-in teachers, distil the student, score it against them,
# and end with the scorecard and the release gate's verdict. A gate that says FAIL (exit 1)
# is a verdict, not a broken demo; bad input (exit 2) still stops make.
demo: setup
	$(BIN)/persea init $(DEMO) --exist-ok
	$(BIN)/persea harvest --project $(DEMO)
	$(BIN)/persea distill --project $(DEMO) --eval-per-skill 0
	$(BIN)/persea eval --project $(DEMO)
	$(BIN)/persea scorecard --project $(DEMO)
	$(BIN)/persea gate --project $(DEMO) || test $$? -eq 1

# After the demo: a keyring (inside the demo project: for the demo only), the student sealed
# (a gate that failed is overridden with a recorded reason) and the command that serves it.
seal-demo: demo
	test -f $(DEMO)/keys/kek.key || $(BIN)/persea keygen $(DEMO)/keys
	rm -rf $(DEMO)/sealed
	$(BIN)/persea seal --project $(DEMO) --keyring $(DEMO)/keys --force-release \
		--reason "make seal-demo: the toy student is sealed whatever its gate said"
	@echo "serve it: $(BIN)/persea serve --model student=$(DEMO)/sealed --keyring $(DEMO)/keys"

test: setup
	$(BIN)/python -m pytest -q

# Rebuild the three built-in teachers from their seed (about 15 minutes on 2 cores).
teachers: setup
	$(BIN)/python -m persea.toyworld.build

# The peers bench/gateway_overhead.py measures beside persea, when present: the LiteLLM
# proxy (PyPI, in a venv of its own) and the Portkey gateway (npm). Git-ignored; optional.
PEERS ?= bench/.peers
bench-peers:
	test -x $(PEERS)/litellm/bin/litellm || { $(PYTHON) -m venv $(PEERS)/litellm && \
		$(PEERS)/litellm/bin/python -m pip install --quiet 'litellm[proxy]'; }
	test -d $(PEERS)/portkey/node_modules/@portkey-ai/gateway || \
		npm install --prefix $(PEERS)/portkey --no-fund --no-audit @portkey-ai/gateway

clean:
	rm -rf $(VENV) $(DEMO)
