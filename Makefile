# Entry points of the suite. `make bench` and `make test` are all a newcomer needs.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PyTorch is installed first and pinned: these are the releases this suite is tested with.
# Override on another platform, e.g. `make install TORCH="torch torchvision"`.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BENCH_CONFIGS ?= configs/cifar.yaml configs/density.yaml
BENCH_PROFILE ?= quick
# Tables whose models cannot train on a CPU: `make bench` measures their architectures only
# (parameters, activation memory per image, inversion error, the inversion figure).
PROBE_CONFIGS ?= configs/imagenet.yaml
# Worker processes sharing the rows and probes of `make bench` (and `make study`).
BENCH_JOBS ?= 2
# Memory benchmark size for `make memory`, as in `make bench` (the CLI defaults of `memory`
# are batch 128 and a deeper sweep).
MEMORY_ARGS ?= --batch-size 32 --sweep 3 9 --repeats 3
# The memory benchmark's Glow section (`make memory-flows`, not part of `make bench`: its K=32,
# width-512 steps take minutes on a CPU): L=3, width 512, K=8 and 32, batch 4, with normflows.
MEMORY_FLOWS_ARGS ?= --flows-steps 8 32 --flows-batch-size 4 --repeats 3

# Checkpoints of `make bench` and `make study`, one folder per revision: rerunning either at the
# same revision continues what was interrupted (and reuses what finished); a new revision
# trains afresh beside the old checkpoints, which no target deletes (`make clean` does).
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo local)
RUNS_DIR ?= runs/$(REVISION)
RUN_ARGS ?= --runs-dir $(RUNS_DIR) --resume

# Studies with several seeds: the Flow++ ablations and dequantization, and the VAE table
# (about 22 minutes on 2 cores: 15 for the Flow++ study, 6 for the VAEs).
STUDY_CONFIGS ?= configs/dequantization.yaml configs/vae.yaml

.PHONY: install bench study memory memory-flows probe tables test regress regress-update \
	regress-spread perf flow-speed gpu-report lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(TORCH)
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job, in one command and one interpreter: the memory benchmark (alone, its
# step-time ratios need the whole machine), then every row of the default configs on the
# embedded digits and the ImageNet architecture probes, shared among BENCH_JOBS worker
# processes (one thread each on 2 cores), then results/ is rewritten.
bench: $(STAMP)
	$(PYTHON) -m benchmarks bench --profile $(BENCH_PROFILE) --configs $(BENCH_CONFIGS) \
		--probe-configs $(PROBE_CONFIGS) --jobs $(BENCH_JOBS) $(RUN_ARGS)

# Train the studies' rows once per seed of the profile, draw the VAE posterior figure, then
# rewrite results/.
study: $(STAMP)
	$(PYTHON) -m benchmarks run $(STUDY_CONFIGS) --profile $(BENCH_PROFILE) --jobs $(BENCH_JOBS) \
		$(RUN_ARGS)
	$(PYTHON) -m benchmarks posterior-figure
	$(PYTHON) -m benchmarks tables

probe: $(STAMP)
	@for config in $(PROBE_CONFIGS); do \
		$(PYTHON) -m benchmarks probe $$config || exit $$?; \
	done

memory: $(STAMP)
	$(PYTHON) -m benchmarks memory $(MEMORY_ARGS)

# Glow with the memory-saving backward and with plain autograd, beside normflows' Glow (installs
# the optional extra), written to results/memory_flows.md and .csv.
memory-flows: $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[peer]'
	$(PYTHON) -m benchmarks memory --flows --no-paper --sweep $(MEMORY_FLOWS_ARGS)

tables: $(STAMP)
	$(PYTHON) -m benchmarks tables

test: $(STAMP)
	$(PYTHON) -m pytest

# The regression gate (about a minute): the smoke profile of every model against
# results/baseline.json; `make regress-update` accepts an intended change and shows the diff.
regress: $(STAMP)
	$(PYTHON) -m benchmarks regress

regress-update: $(STAMP)
	$(PYTHON) -m benchmarks regress --update-baseline

# How far the gate's figures spread across CPU kernels (AVX2, SSE4.1) and thread counts, each
# measured in a fresh process, beside the tolerances of results/baseline.json (REGRESS_SPREAD_ARGS:
# e.g. --env 1-thread sse41 --save spread/ --write-tolerances; see benchmarks/measure/gate_spread.py).
regress-spread: $(STAMP)
	$(PYTHON) -m benchmarks.measure.gate_spread $(REGRESS_SPREAD_ARGS)

# Micro-benchmarks of the flow layers, saved as results/perf/<revision>.json; compare two
# revisions with `.venv/bin/pytest-benchmark compare results/perf/A.json results/perf/B.json`.
PERF_NAME ?= $(REVISION)
perf: $(STAMP)
	$(PYTHON) -m pytest tests/perf --benchmark-enable --benchmark-only \
		--benchmark-json=results/perf/$(PERF_NAME).json

# Training speed of Glow and RealNVP beside normflows' Glow (installs the optional extra).
flow-speed: $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[peer]'
	$(PYTHON) -m benchmarks flow-speed

# On a CUDA machine, in about 5 minutes: exactness under the precision policy, recomputation
# overhead, Glow beside normflows' Glow and every paper row's throughput and GPU-hours, written
# to results/gpu.md and results/gpu.csv (the tables' GPU-hours column reads it).
gpu-report: $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[peer]'
	$(PYTHON) -m benchmarks gpu-report --revision $(REVISION)

lint: $(STAMP)
	$(PYTHON) -m ruff check flows benchmarks tests
	$(PYTHON) -m ruff format --check flows benchmarks tests

format: $(STAMP)
	$(PYTHON) -m ruff format flows benchmarks tests
	$(PYTHON) -m ruff check --fix flows benchmarks tests

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache .ruff_cache
