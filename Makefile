# dlsim: `make run` simulates a real network; `make test` runs lint, types and the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Optional: the CPU build of PyTorch for the torch-import tests (they skip without it).
	$(BIN)/python -m pip install -q "torch==2.13.0" || echo "torch not installed: torch-import tests will skip"
	touch $(STAMP)

run: $(STAMP)
	mkdir -p out
	$(BIN)/sim run workloads/resnet50.yaml --hw h100 --set batch=32 --dtype bf16 \
		--json out/resnet50-h100.json --trace out/resnet50-h100.trace.json --plot out/resnet50-h100.png

lint: $(STAMP)
	$(BIN)/ruff check sim tests $(wildcard bench examples)
	$(BIN)/mypy
	# unused code (settings and paths in pyproject's [tool.vulture]; vulture_whitelist.py)
	$(BIN)/vulture

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
