# cnnpipe: train a CNN, export it as a quantized TFLite model.  `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= configs/default.yaml
RUN    ?=
SET    ?=
BIN     = $(VENV)/bin
CNNPIPE = $(BIN)/cnnpipe
ARGS    = --config $(CONFIG) $(if $(RUN),--run $(RUN)) $(foreach s,$(SET),--set $(s))
STAMP   = $(VENV)/.installed

.DEFAULT_GOAL := help

## help: list every target with one line each
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed -e 's/^## /  /' | awk -F': ' '{printf "  %-16s %s\n", $$1, $$2}' | sed 's/^    /  /'

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

## install: create .venv and install the package with its dependencies (done by every target that needs it)
install: $(STAMP)

## train: ingest, build, train and evaluate CONFIG (default configs/default.yaml); up-to-date stages are skipped
train: $(STAMP)
	$(CNNPIPE) run --until evaluate $(ARGS)

## evaluate: evaluate the trained model on the test split (metrics.json, confusion matrix)
evaluate: $(STAMP)
	$(CNNPIPE) evaluate $(ARGS)

## export-tflite: convert to float32 + int8 TFLite, check parity, publish exported/<run>/
export-tflite: $(STAMP)
	$(CNNPIPE) run --until export $(ARGS)

FASHION = /usr/share/datasets/fashion-mnist

$(FASHION):
	@echo "Fashion-MNIST IDX files missing: installing the Debian package dataset-fashion-mnist (needs root)"
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

## fashion-mnist: run every stage on Fashion-MNIST (local IDX files when TFDS cannot download)
fashion-mnist: $(STAMP) $(FASHION)
	$(CNNPIPE) run --config configs/fashion_mnist.yaml $(foreach s,$(SET),--set $(s))

KEYWORDS = benchmarks/data/keywords
ESPEAK   = /usr/bin/espeak-ng

$(ESPEAK):
	@echo "espeak-ng missing (it speaks the keyword dataset): installing the Debian packages espeak-ng and sox (needs root)"
	apt-get update -qq && apt-get install -y -qq espeak-ng sox

$(KEYWORDS)/yes: | $(STAMP) $(ESPEAK)
	$(BIN)/python -m tasks.keywords $(KEYWORDS) --per-class 250 --seed 0

## keywords-data: speak a keyword dataset offline (espeak-ng) into benchmarks/data/keywords (once)
keywords-data: $(STAMP) $(ESPEAK) $(KEYWORDS)/yes

## keywords: keywords-data, then run configs/keywords.yaml
keywords: keywords-data
	$(CNNPIPE) run --config configs/keywords.yaml $(foreach s,$(SET),--set $(s))

CHROMIUM = /usr/bin/chromium

$(CHROMIUM):
	@echo "headless Chromium missing (the report test renders the page in it): installing the Debian package chromium (needs root)"
	apt-get update -qq && apt-get install -y -qq chromium

## report: write runs/<run>/report.html of CONFIG (or RUN), one self-contained page showing the run
report: $(STAMP)
	$(CNNPIPE) report --config $(CONFIG) $(if $(RUN),--run $(RUN))

## test: check the style (flake8), then run the test suite (tests marked slow run with `make test-slow`)
test: lint $(CHROMIUM) $(ESPEAK)
	$(BIN)/python -m pytest -q -m "not slow"

## lint: flake8 on pipeline/, tasks/ and tests/ (lines up to 110 characters, setup.cfg [flake8])
lint: $(STAMP)
	$(BIN)/python -m flake8 pipeline tasks tests

## test-slow: run only the slow tests (multi-worker restart, preset exports, keywords, transfer, report in Chromium)
test-slow: $(STAMP) $(CHROMIUM) $(ESPEAK) $(FASHION)
	$(BIN)/python -m pytest -q -m slow

## benchmark: digits, Fashion-MNIST default vs the Keras baseline, MNIST-1D, detection, segmentation, transfer (~1 h)
benchmark: $(STAMP) $(FASHION)
	$(BIN)/python -m tasks.benchmark --out benchmarks/results $(if $(BUDGET),--fashion-budget $(BUDGET))

## benchmark-full: benchmark plus the training profile, the 60,000-PNG folder, GunPoint, ArrowHead, keywords (~2 h)
benchmark-full: $(STAMP) $(FASHION) keywords-data
	$(BIN)/python -m tasks.benchmark --full --out benchmarks/results $(if $(BUDGET),--fashion-budget $(BUDGET))

## clean: remove runs/ and exported bundles (keeps .venv)
clean:
	rm -rf runs exported/*/ exported/.[!.]* .pytest_cache

## distclean: clean, and remove .venv
distclean: clean
	rm -rf $(VENV) *.egg-info

.PHONY: help install train evaluate export-tflite report fashion-mnist keywords keywords-data lint test test-slow benchmark benchmark-full clean distclean
