# binenc: the two commands a newcomer runs (see README).
#   make serve  - install the serving part (no torch) and serve the shipped Fashion-MNIST model on port 3000
#   make test   - install everything (training, bench, test tools) and run the test suite (what CI runs)
# Everything else: make train (train the default model from scratch), make model (regenerate the shipped model),
# make bench (robustness bench), make docs (regenerate every CPU-reproducible figure in docs/), make lint (ruff check, ruff format --check and the import contracts).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/fashion-mnist_cnn_quick_bin_enc_s1
export BENTOML_DO_NOT_TRACK := True

.PHONY: serve install-serve install browser data train model test lint bench docs

serve: install-serve
	$(BIN)/bentoml serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps torchattacks==3.5.1   # see pyproject.toml, extra "bench"
	touch $@ $(BIN)/.installed-serve

install-serve: $(BIN)/.installed-serve
install: $(BIN)/.installed browser

# Chromium and its driver from Debian for the /ui browser test (tests/serving/test_ui.py); a no-op once present.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; \
	else echo "no apt-get: install Chromium and chromedriver, or tests/serving/test_ui.py skips its browser test"; fi

# Fashion-MNIST from Debian; skipped where apt is missing (then pass --data-dir, see README).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no apt-get: download the four Fashion-MNIST IDX .gz files and pass --data-dir DIR"; fi

# The shipped bin_enc model from scratch (quick profile, seed 1: docs/shipped-model.md; ~15 min on 2 CPU cores);
# resumes an interrupted run.
train: install data
	@if [ -f $(RUN)/metrics.json ]; then echo "$(RUN) already trained"; \
	elif [ -f $(RUN)/checkpoint.pt ]; then $(BIN)/python -m training --out $(RUN) --resume; \
	else $(BIN)/python -m training --dataset fashion-mnist --variant bin_enc --profile quick --seed 1 --out $(RUN); fi

# Regenerate the shipped model (models/fashion-mnist_bin_enc/model.onnx + provenance.json) from $(RUN), with the
# risk-controlled threshold of docs/shipped-model.md (scripts/ship_model.py's defaults).
model: train
	$(BIN)/python scripts/ship_model.py --run $(RUN)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check training serving robustness tests scripts research examples
	$(BIN)/ruff format --check training serving robustness tests scripts research examples
	$(BIN)/lint-imports   # the import direction: contracts in pyproject.toml, see docs/architecture.md

bench: install data
	$(BIN)/python -m robustness.bench

docs: install data
	bash scripts/make_docs.sh
