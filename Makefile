# spikeforge: two commands on a fresh machine -- `make demo` and `make test`.
# Everything installs from PyPI into ./.venv; nothing is downloaded at run time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spikeforge-installed
OUT    := out

.PHONY: setup demo test test-slow bench clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "spikeforge needs Python >= 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m spikeforge.sim.toolchain
	touch $@

demo: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge train --backend golden --dataset digits --config configs/digits.toml --report $(OUT)/demo-train.json

test: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -n 2 -q -m slow

bench: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge bench golden --config configs/digits.toml --report $(OUT)/bench-golden.json

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis build sim_build

distclean: clean
	rm -rf $(VENV) *.egg-info
