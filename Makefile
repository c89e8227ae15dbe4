# binenc: the two commands a newcomer runs (see README).
#   make all   - install everything (Debian's Fashion-MNIST package, venv, pinned Python deps), train the default
#                bin_enc model on Fashion-MNIST (quick profile), export model.onnx and register it with BentoML
#   make test  - run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/fashion-mnist_cnn_quick_bin_enc_s0
export BENTOML_DO_NOT_TRACK := True

.PHONY: all install data train export test lint bench serve

all: install data train export
	@echo "Model ready: $(RUN)/model.onnx (registered as binenc:latest). Serve it with: $(BIN)/bentoml serve"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Fashion-MNIST from Debian; skipped where apt is missing (then pass --data-dir, see README).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no apt-get: download the four Fashion-MNIST IDX .gz files and pass --data-dir DIR"; fi

train: install
	@if [ -f $(RUN)/metrics.json ]; then echo "$(RUN) already trained"; \
	elif [ -f $(RUN)/checkpoint.pt ]; then $(BIN)/python -m training --out $(RUN) --resume; \
	else $(BIN)/python -m training --dataset fashion-mnist --variant bin_enc --profile quick --out $(RUN); fi

export: install
	$(BIN)/python -m training.export $(RUN) --register

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check training serving robustness tests scripts

bench: install
	$(BIN)/python -m robustness.bench

serve: install
	$(BIN)/bentoml serve
