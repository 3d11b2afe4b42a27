# Every target creates .venv and installs what it needs on first use.
# GPU users: `make install-gpu` (a CUDA torch, replacing a CPU build already in .venv), or
# make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
GPU_INDEX ?= https://download.pytorch.org/whl/cu128
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-gpu torch-build demo app test test-slow test-all lint bench gpu-check \
	pretrain data paper results waiting waiting-gpu frontier frontier-gpu clean-venv

install: $(STAMP)
ifneq ($(strip $(TORCH_INDEX)),)
install: torch-build
endif

# A torch from TORCH_INDEX in place of a CPU build the venv already has: pip keeps an installed
# 2.13.0+cpu as satisfying torch==2.13.0, after which --device auto would quietly pick the CPU.
torch-build: $(STAMP)
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is None)" \
		|| ($(BIN)/python -m pip uninstall -y -q torch \
			&& $(BIN)/python -m pip install -q "$(TORCH)" $(TORCH_INDEX))

install-gpu:
	$(MAKE) install TORCH_INDEX="--index-url $(GPU_INDEX)"
	$(BIN)/python -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count()); sys.exit(torch.version.cuda is None)"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH)" $(TORCH_INDEX)
	# dev = every extra (analysis, app, accelerate) + the test tools; `pip install -e .` is the core only
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

DEMO_ARGS ?=
APP_PORT ?= 8501

demo: $(STAMP)
	$(BIN)/cyb experiment configs/demo.toml $(DEMO_ARGS)
	$(BIN)/cyb experiment configs/waiting/demo.toml
	$(BIN)/cyb experiment configs/frontier/demo.toml
	$(BIN)/cyb app --db data/cyb.duckdb --port $(APP_PORT)

# where waiting pays (docs/results.md section 10): from scratch, then fine-tuned from data/base-mixed
waiting: $(STAMP)
	$(BIN)/cyb experiment configs/waiting/scratch.toml
	$(BIN)/cyb experiment configs/waiting/base.toml
	test -d data/base-mixed || cp -r runs/waiting-base/every-step-1x1-s0/final data/base-mixed
	$(BIN)/cyb experiment configs/waiting/finetune.toml
	$(BIN)/cyb results collect --waiting-only
	$(BIN)/cyb results render

# the same comparison at 16x the parameters on one GPU (install a CUDA torch first, docs/scaling.md)
waiting-gpu: $(STAMP)
	$(BIN)/cyb experiment configs/waiting/gpu.toml

# does a model's own placement of pauses beat random placement? (docs/results.md section 11)
# Every grid is evaluated twice: natural held-out text ([eval] of its config) and the synthetic
# lines (SYNTHETIC_EVAL). Two processes split a grid (one per core); resumable.
FRONTIER_PROCS ?= 2
EXPERIMENT = OMP_NUM_THREADS=1 $(BIN)/torchrun --nnodes 1 --nproc-per-node $(FRONTIER_PROCS) \
	--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 -m cyb experiment --no-progress
SYNTHETIC_EVAL = --set eval.root=data/mixed --set eval.max_docs=30 --set eval.max_chars=3000

frontier: $(STAMP)
	$(EXPERIMENT) configs/frontier/mixed.toml
	$(EXPERIMENT) configs/frontier/mixed.toml $(SYNTHETIC_EVAL)
	$(EXPERIMENT) configs/frontier/natural.toml
	$(EXPERIMENT) configs/frontier/natural.toml $(SYNTHETIC_EVAL)
	$(BIN)/cyb results collect --frontier-only
	$(BIN)/cyb results render

# the same grid at the medium preset on one GPU (install a CUDA torch first, docs/scaling.md)
frontier-gpu: $(STAMP)
	$(BIN)/cyb experiment configs/frontier/gpu.toml
	$(BIN)/cyb experiment configs/frontier/gpu.toml $(SYNTHETIC_EVAL)
	$(BIN)/cyb results collect --frontier-only  # every data/frontier*.duckdb
	$(BIN)/cyb results render

app: $(STAMP)
	$(BIN)/cyb app --port $(APP_PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the slow tests alone (multi-process training, kill-and-resume): about 80-120 s on 2 cores
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

# the first run on a GPU (docs/scaling.md): every gpu test, timings, bf16 checks; under 8 min on
# one H200. On a CPU-only machine it runs its CPU parts and says what it skipped.
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_generate.py

LINT := .  # every Python file and the Python blocks of the Markdown docs

lint: $(STAMP)
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)

data: $(STAMP)
	$(BIN)/cyb data build
	$(BIN)/cyb tokenizer

pretrain: $(STAMP)
	$(BIN)/cyb pretrain

# docs/results.md: every paper comparison (hours on a CPU; resumable), then the document
paper: $(STAMP)
	CYB=$(BIN)/cyb PYTHON=$(BIN)/python configs/paper/run.sh

# rebuild docs/results.md and its figures from the committed data in docs/results/data
results: $(STAMP)
	$(BIN)/cyb results render

clean-venv:
	rm -rf $(VENV)
