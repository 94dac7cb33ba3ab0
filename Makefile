# `make demo` and `make test` each create .venv (once; redone when pyproject.toml changes).
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: demo test test-all test-threads lint format venv clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: the synthetic accented-English recipe from scratch to the per-accent WER table.
demo: $(STAMP)
	cd egs/synth_accents/asr1 && PATH="$(CURDIR)/$(BIN):$$PATH" ./run.sh --train-config conf/demo.yaml --train-utts 4000

# Fast suite (CI); slow end-to-end checks are marked and run by `make test-all`.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

# The fast suite at 2 torch threads in a shuffled order (seed printed): no test may depend on
# one thread count's float results or on the order tests run in.
test-threads: $(STAMP)
	@seed=$${RANDOM_ORDER_SEED:-$$(date +%s)}; \
	echo "random order seed $$seed (same order again: make test-threads RANDOM_ORDER_SEED=$$seed)"; \
	MOE_ASR_TEST_THREADS=2 $(BIN)/python -m pytest -q -m "not slow" --random-order-bucket=module \
	  --random-order-seed=$$seed tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check moe_asr tests tools
	$(BIN)/ruff format --check moe_asr tests tools

format: $(STAMP)
	$(BIN)/ruff format moe_asr tests tools
	$(BIN)/ruff check --fix moe_asr tests tools

clean-venv:
	rm -rf $(VENV)
