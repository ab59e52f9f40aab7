# Two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests never touch the network: the Hugging Face hub is off, offline assets are used.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test notebooks bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,scale,notebooks,mauve]'
	touch $(STAMP)

# The main job: learned MDM vs IMDM on enumerable tasks, every distillation method, exact KLs.
demo: $(STAMP)
	mkdir -p results
	$(OFFLINE) $(PY) -m toy_tasks experiment --preset demo --json results/demo.json --plot results/demo.png

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest

notebooks: $(STAMP)
	$(OFFLINE) $(PY) -m notebooks.execute

bench: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/exact_engine.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
