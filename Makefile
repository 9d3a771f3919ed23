# Targets a newcomer guesses. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CTL    := $(BIN)/bench-ctl
IMAGES ?=
DEMO_MODEL ?= resnet50
DEMO_BATCHES ?= 1,8,32
DEMO_REPEAT ?= 5
PLAN ?= plans/paper.toml
REPORT ?= report
# The GPU check runs without `make setup`: with .venv's Python where there is one, else python3.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
GPU_WHEELS ?= .bench/gpu-wheels
PYVER      ?= 3.12

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast faults lint schemas locks images images-gpu base-image bench clean \
        gpu-check gpu-wheels study

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/bench-ctl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/bench-ctl ## create .venv with bench-ctl and the dev tools

demo: setup ## export resnet50; ONNX Runtime and OpenVINO at 1,8,32, 5 interleaved runs each; compare
	$(CTL) models export $(DEMO_MODEL)
	$(CTL) run --image ort,openvino --model $(DEMO_MODEL) --batch-sizes $(DEMO_BATCHES) \
	  --repeat $(DEMO_REPEAT) --set policy.max_time_s=10
	$(CTL) compare --model $(DEMO_MODEL) --baseline ort

study: setup ## the study here: what this host can run of PLAN (plans/paper.toml), then its figures in REPORT/index.html
	@$(CTL) sweep $(PLAN); status=$$?; $(CTL) report --out $(REPORT) && exit $$status

test: setup ## run the test suite (real frameworks in their local environments; Docker tests if an engine runs)
	$(BIN)/python -m pytest

test-fast: setup ## tests that need no framework environment
	$(BIN)/python -m pytest -m "not frameworks and not docker"

faults: setup ## the fault suite: kill, fill, corrupt and crowd real runs; one line per case and a total
	$(BIN)/python -m tests.faults

gpu-check: ## every GPU path run for real, or skipped with its reason; no `make setup` needed
	@$(GPU_PYTHON) -m gpucheck.check --wheelhouse $(GPU_WHEELS)

gpu-wheels: ## what gpu-check needs on a bare GPU machine, into .bench/gpu-wheels (PYVER=3.12)
	@$(GPU_PYTHON) -m gpucheck.check wheels --python-version $(PYVER) --dest $(GPU_WHEELS)

lint: setup ## ruff (lint + format check) and mypy (strict on the product, tests/ checked)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

schemas: setup ## regenerate schemas/json from the pydantic models
	$(BIN)/python -m schemas.generate

locks: setup ## re-pin images/*/requirements.lock from requirements.in (hashes included)
	for d in images/*/; do [ -f $$d/requirements.in ] && \
	  $(BIN)/uv pip compile --quiet --python-version 3.11 --generate-hashes --no-header \
	    $$d/requirements.in -o $$d/requirements.lock || true; done

base-image: ## build the local Debian base image (debootstrap; no registry needed)
	images/base/build-base.sh

images: setup ## build images offline from locked wheels: make images IMAGES="ort openvino"
	$(CTL) images build $(IMAGES)

images-gpu: setup ## build the GPU images whose wheels are on PyPI (ort-gpu, torch; several GB)
	$(CTL) images build ort-gpu torch

bench: setup ## run the benchmarks under benchmarks/ (ratios measured in one run)
	$(BIN)/python benchmarks/harness_overhead.py
	$(BIN)/python benchmarks/openvino_vs_benchmark_app.py
	$(BIN)/python benchmarks/compiled_vs_own_tools.py
	$(BIN)/python benchmarks/local_vs_docker.py
	$(BIN)/python benchmarks/stats_calibration.py
	$(BIN)/python benchmarks/compare_calibration.py
	$(BIN)/python benchmarks/noise_calibration.py
	$(BIN)/python benchmarks/target_ci_time.py
	$(BIN)/python benchmarks/server_mdl.py
	$(BIN)/python benchmarks/server_vs_loadgen.py
	$(BIN)/python benchmarks/report_speed.py
	$(BIN)/python benchmarks/ingest_rate.py

clean: ## remove runs, caches and the result database (keeps models and environments)
	rm -rf .bench/runs .bench/cache results.duckdb results.duckdb.wal
