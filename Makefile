# spikeforge: two commands on a fresh machine -- `make demo` and `make test`.
# Everything installs from PyPI into ./.venv; nothing is downloaded at run time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spikeforge-installed
OUT    := out

.PHONY: setup demo test test-slow bench bench-rtl bench-scaling formal federated train-rtl-deep train-rtl-multicore cosim-full train-rtl-full generate synth boards synth-all clean distclean

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
	@echo "== the same first 64 samples on the core's RTL (Verilator, host protocol) and on golden:"
	$(BIN)/spikeforge train --backend rtl --dataset digits --samples 64 --epochs 1 --seed 1 --report $(OUT)/demo-rtl.json
	$(BIN)/spikeforge train --backend golden --dataset digits --samples 64 --epochs 1 --seed 1 --quiet --report $(OUT)/demo-golden64.json
	$(BIN)/spikeforge compare $(OUT)/demo-golden64.json $(OUT)/demo-rtl.json

test: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -n 2 -q -m slow

bench: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge bench golden --config configs/digits.toml --report $(OUT)/bench-golden.json

bench-rtl: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge bench rtl --config configs/digits.toml --report $(OUT)/bench-rtl.json

# multi-core scaling (cycle model on the golden multi-core activity) and off-chip traffic
bench-scaling: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge bench scaling --config configs/deep-20core.toml --report $(OUT)/bench-scaling.json

# SymbiYosys proofs of the interconnect's FIFO and router (k-induction; about half a minute)
formal: setup
	$(BIN)/python -m spikeforge.sim.formal

# FedAvg over 5 worker processes (gloo) on digits, against centralised training
federated: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge federated --workers 5 --backend golden --dataset digits --rounds 20 --report $(OUT)/federated.json

# the 20-core network's arithmetic on one core's RTL vs the 20-core golden model (about 5 minutes)
train-rtl-deep: setup
	$(BIN)/python -m pytest -q -m slow tests/test_train_rtl.py -k deep_20core

# configs/deep-20core.toml on the 20-core RTL (MultiCoreTop), 64 samples in lockstep with the
# 20-core golden model (about 30 minutes: the 20-core Verilator build is most of it)
train-rtl-multicore: setup
	$(BIN)/python -m pytest -q -m slow tests/test_cosim_multicore.py -k deep_20core_64

# full-length co-simulation regression: every directed case + 100 constrained-random configs
cosim-full: setup
	$(BIN)/python -m spikeforge.sim.cosim_core --random 100 --seed 1000

# a whole digits epoch on the RTL, against golden (slow: minutes)
train-rtl-full: setup
	@mkdir -p $(OUT)
	$(BIN)/spikeforge train --backend rtl --dataset digits --epochs 1 --seed 1 --report $(OUT)/train-rtl-epoch.json
	$(BIN)/spikeforge train --backend golden --dataset digits --epochs 1 --seed 1 --quiet --report $(OUT)/train-golden-epoch.json
	$(BIN)/spikeforge compare $(OUT)/train-golden-epoch.json $(OUT)/train-rtl-epoch.json

generate: setup
	$(BIN)/spikeforge generate --config configs/digits.toml --out $(OUT)/generated

# FPGA rows of docs/fpga-results.md (slow: tens of minutes; fails while a goal is not met)
synth: setup
	@mkdir -p $(OUT)
	status=0; \
	$(BIN)/spikeforge synth --target ecp5-25f --config configs/digits.toml --report $(OUT)/synth-ecp5-25f.json || status=$$?; \
	$(BIN)/spikeforge synth --target ice40-up5k --config configs/digits-up5k.toml --report $(OUT)/synth-ice40-up5k.json || status=$$?; \
	exit $$status

# bitstreams for the boards (fpga/boards.py, amaranth-boards): the digits core behind the board
# UART; each fails (and keeps no bitstream) when it does not fit or misses the board clock
boards: setup
	@mkdir -p $(OUT)
	status=0; \
	$(BIN)/spikeforge board --board ulx3s-85f --config configs/digits.toml --report $(OUT)/board-ulx3s-85f.json || status=$$?; \
	$(BIN)/spikeforge board --board icebreaker --config configs/digits-up5k.toml --report $(OUT)/board-icebreaker.json || status=$$?; \
	exit $$status

# the sweep of docs/fpga-results.md: lanes and widths, table + PNG (slow: about an hour)
synth-all: setup
	$(BIN)/python -m spikeforge.fpga.sweep --out $(OUT)/synth-all --doc docs/fpga-results.md --plot docs/fpga-sweep.png

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis build sim_build

distclean: clean
	rm -rf $(VENV) *.egg-info
