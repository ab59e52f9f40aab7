# Two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests never touch the network: the Hugging Face hub is off, offline assets are used.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo demo-seeds figures test lint notebooks bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,scale,notebooks,mauve]'
	touch $(STAMP)

# The main job: learned MDM vs IMDM on enumerable tasks, every distillation method, exact KLs; at the end
# each one-step KL is placed against the committed range over training seeds 0-2 (float32 training is
# bit-identical only on the same machine, so another CPU lands elsewhere in, or near, that range).
demo: $(STAMP)
	mkdir -p results
	$(OFFLINE) $(PY) -m toy_tasks experiment --preset demo --json results/demo.json --plot results/demo.png \
		--compare docs/results/demo-seeds.json

# The demo over training seeds 0-2 (three demo runs in turn): each number as mean and range.
demo-seeds: $(STAMP)
	mkdir -p results
	$(OFFLINE) $(PY) -m toy_tasks experiment --preset demo --seeds 0,1,2 --json results/demo-seeds.json \
		--plot results/demo-seeds.png

# Redraw the committed figures from the committed results (no training).
figures: $(STAMP)
	$(OFFLINE) $(PY) -m toy_tasks figures --results docs/results --out docs/figures
	$(OFFLINE) $(PY) -m scale report --replot docs/results/wiki-cpu.json --out docs/figures/wiki-cpu-frontier.png

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest

# ruff: pyflakes, pycodestyle, import order, pyupgrade and bugbear (configured in pyproject.toml)
lint: $(STAMP)
	$(PY) -m ruff check .

notebooks: $(STAMP)
	$(OFFLINE) $(PY) -m notebooks.execute

bench: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/exact_engine.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
