# `make demo` and `make test` set up .venv themselves; nothing relies on a hand-made install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/qcompiler demo

test: lint
	$(BIN)/python -m pytest -q -n auto tests

bench: $(STAMP)
	$(BIN)/python bench/numpy_backend.py --repeats 30
	$(BIN)/python bench/quantization.py
	$(BIN)/python bench/integer.py
	$(BIN)/python bench/llvm_models.py

lint: $(STAMP)
	$(BIN)/ruff check qcompiler passes backends tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
