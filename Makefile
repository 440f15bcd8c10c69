# Two entry points, each self-contained on a fresh machine with Python 3.11 and make:
#   make demo   -- create .venv, install LUMEN, run the main job
#   make test   -- create .venv, install LUMEN with dev tools and the executor extra (CPU torch),
#                 run lint, type checks and tests
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit bench proto golden clean gpu-check

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,executor]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lumen demo

lint: $(STAMP)
	$(BIN)/ruff check lumen tests benchmarks scripts
	$(BIN)/ruff format --check lumen tests benchmarks scripts
	$(BIN)/python -m lumen.proto.generate --check

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# Benchmarks print their figures; they are kept out of `make test`.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_placement.py
	$(BIN)/python benchmarks/bench_recovery.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_service.py

# Regenerate the gRPC stubs from lumen/proto/lumen/v1/*.proto (commit the result).
proto: $(STAMP)
	$(BIN)/python -m lumen.proto.generate

# Regenerate the simulator's golden scenario summaries in tests/golden/ after an intended model
# change (review the diff, then commit it); tests/test_golden.py checks them.
golden: $(STAMP)
	$(BIN)/python -m lumen.simulator.golden --update

# On a GPU machine (NVIDIA driver, network to PyPI): install '.[vllm]' into its own environment
# (.venv-vllm: vLLM's CUDA torch, never the CPU [executor] extra), write a tiny Qwen3 checkpoint,
# run a planner, a gateway and three vLLM workers, SIGKILL one mid-generation and check the
# failover (docs/vllm.md). `python3 scripts/gpu_check.py --dry-run` prints the plan only.
gpu-check:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) scripts/gpu_check.py --venv .venv-vllm $(if $(WHEELHOUSE),--wheelhouse $(WHEELHOUSE))

clean:
	rm -rf $(VENV) .venv-vllm .mypy_cache .pytest_cache .ruff_cache
