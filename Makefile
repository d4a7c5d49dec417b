# The two set-up commands: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs docs-check bench gpu-check study-fmnist study-tune study-lm clean

$(STAMP): pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m logit_standardization.demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# renders the built site in headless Chromium (Debian package `chromium`) and checks it
docs-check: docs
	$(PY) docs/check_site.py docs/_build/html

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# the CUDA paths on one GPU in at most 8 minutes (AMP fp16/bf16, channels_last, torch.compile, fused
# losses, ONNX Runtime's CUDA provider in its own venv, train-step speed); JSON in runs/gpu_check/.
# GPU_CHECK_ARGS=--dry-run runs the same code on the CPU at tiny sizes.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# KD, DKD, MLKD, CTKD with and without LS on Fashion-MNIST, 3 seeds (Debian package dataset-fashion-mnist)
study-fmnist: $(STAMP)
	$(PY) benchmarks/fashion_mnist.py

# a GPT-2 student alone, with KD and with KD+LS on the King James Bible, 3 seeds (Debian packages bible-kjv, bible-kjv-text)
study-lm: $(STAMP)
	$(PY) benchmarks/lm_study.py

# KD vs KD+LS and DKD vs DKD+LS on Fashion-MNIST, each re-tuned with lskd-tune (same trials), 3 final seeds
study-tune: $(STAMP)
	$(PY) benchmarks/tune_fashion_mnist.py

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build
