# nnserve: `make serve` serves the committed models, `make test` runs the suite. Both set up what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
SERVE_STAMP := $(VENV)/.installed-serve
# setuptools warns at length on every editable install (a project folder named like the package): said once here.
INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e
TRAIN_STAMP := $(VENV)/.installed-train
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: profile serve train-env serve-gpu gpu-check gpu-prepare test test-unit models lint format clean bento container container-test loadtest overload bench soak soak-housing memory scale-curve activation-curve fuzz protos dashboard-png instructions rollout swarm-test retrain-loop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving needs only the base dependencies and onnxruntime's CPU package (no torch).
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(INSTALL) '.[cpu]'
	touch $@

# Training needs the train extra (torch is pinned to the on-disk CPU wheel); the tests need dev too.
$(TRAIN_STAMP): pyproject.toml | $(BIN)/python
	$(INSTALL) '.[cpu,train]'
	touch $@ $(SERVE_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(INSTALL) '.[cpu,train,dev]'
	touch $@ $(TRAIN_STAMP) $(SERVE_STAMP)

train-env: $(TRAIN_STAMP)

# The GPU runtime lives in its own virtual environment: onnxruntime-gpu and onnxruntime install the same
# package and must not meet. NNSERVE_PROVIDERS defaults to cuda there: no GPU, no service (or set auto).
GPU_VENV := .venv-gpu
$(GPU_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(GPU_VENV)/bin/pip install -q -e '.[gpu]'
	touch $@

serve-gpu: $(GPU_VENV)/.installed
	NNSERVE_PROVIDERS=$${NNSERVE_PROVIDERS:-cuda} $(GPU_VENV)/bin/bentoml serve service.app:NNServe --host 0.0.0.0 --port $(PORT)

serve: $(SERVE_STAMP)
	$(BIN)/bentoml serve service.app:NNServe --host 0.0.0.0 --port $(PORT)

# promtool checks the alerting rules, and a real Prometheus scrapes a running nnserve (Debian's package).
PROMETHEUS := /usr/bin/prometheus
$(PROMETHEUS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

# The suite in TEST_WORKERS processes (default 2, this machine's cores; 0: one process, no xdist), each
# taking whole test files, so a file's servers and fixtures stay in one process: 8.2-9.7 min here, against
# 12.3-13.2 in one (docs/development.md, Tests).
TEST_WORKERS ?= 2
test: $(DEV_STAMP) $(PROMETHEUS)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit

# Retrain and export all three models into models/ (about half an hour on 2 cores, most of it the CNN).
models: $(TRAIN_STAMP)
	$(BIN)/python -m training.train_housing --publish
	$(BIN)/python -m training.train_adclick --publish
	$(BIN)/python -m training.train_tagger --publish

# The bento (service/ and models/ only) and the image; see service/container/build.sh for the options
# (BASE_IMAGE, LOCAL_BASE=1, EXTRA_CA_CERTS, GPU=1).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)".*/\1/p' service/__init__.py)
IMAGE ?= nnserve:$(VERSION)

bento: $(SERVE_STAMP)
	$(BIN)/bentoml build --label version=$(VERSION) --label commit=$$(git rev-parse --short HEAD)

container: $(SERVE_STAMP)
	service/container/ensure-docker.sh
	service/container/build.sh $(IMAGE)

# Installs and starts a Docker engine if needed, builds the image, runs it beside a local `bentoml serve`
# and compares every endpoint's answers; the test removes its containers.
container-test: $(DEV_STAMP) container
	NNSERVE_IMAGE=$(IMAGE) PATH="/usr/bin:$$PATH" $(BIN)/pytest tests/container

# One worker's CPU under a bench scenario's load, as py-spy's flame graph (loadtests/profile.py);
# SCENARIO (default housing-1row), OUT (default reports/profile-<scenario>.svg). docs/performance.md keeps one.
profile: $(DEV_STAMP)
	$(BIN)/pip install -q py-spy==0.4.2
	$(BIN)/python -m loadtests.profile --scenario $(or $(SCENARIO),housing-1row) $(if $(OUT),--out $(OUT))

# What one request costs a worker in instructions, counted by valgrind's callgrind (loadtests/instructions.py):
# nnserve, the floor and the bare server in one process over in-memory connections, free of this machine's
# timing noise, to measure a change of a few microseconds. SCENARIO (default housing-1row); about 2 minutes.
instructions: $(DEV_STAMP)
	@command -v valgrind >/dev/null || { echo "make instructions needs valgrind (apt-get install valgrind)"; exit 1; }
	$(BIN)/python -m loadtests.instructions --scenario $(or $(SCENARIO),housing-1row)

# The image on a live Docker Swarm (deploy/swarm) under Locust load: a rolling update, a SIGKILLed replica,
# scaling 1 -> 3 -> 1, no failed request (loadtests/swarm.py; about 2 minutes). It removes what it made:
# the stack, the swarm if it made one, the proxy and update images. RECORD=1 appends to loadtests/RESULTS.md.
swarm-test: $(DEV_STAMP) container
	PATH="/usr/bin:$$PATH" $(BIN)/python -m loadtests.swarm --image $(IMAGE) $(if $(RECORD),--record)

# The GPU check (loadtests/GPU.md). gpu-prepare, here: the onnxruntime-gpu wheel in parts and a kit under
# .gpuwheel/ (ignored): wheels of the serving dependencies (pyproject's, read from it) for the GPU machine's
# CPython 3.12, less numpy (that machine's own serves), a 1000-class 224x224 model and the sample photos.
# gpu-check, on the GPU machine: loadtests/gpu_check.sh.
gpu-prepare: $(DEV_STAMP)
	../shared/gpu/split-ort-gpu-wheel.sh 1.31.1 $(or $(PART_SIZE),50M)
	rm -rf .gpuwheel/kit && mkdir -p .gpuwheel/kit/photos
	basename .gpuwheel/whl/onnxruntime_gpu-*.whl > .gpuwheel/kit/wheel-name
	cp .gpuwheel/whl.sha256 .gpuwheel/kit/wheel.sha256
	$(BIN)/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
	  > .gpuwheel/kit/requirements.txt
	$(BIN)/pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
	  -d .gpuwheel/kit/wheels -r .gpuwheel/kit/requirements.txt
	rm .gpuwheel/kit/wheels/numpy-*.whl
	cp ../shared/data/images/sample_photos/* .gpuwheel/kit/photos/
	$(BIN)/python -c "from pathlib import Path; from loadtests.bench import imagenet_models_dir as m; m(Path('.gpuwheel/kit/tmp'))"
	mv .gpuwheel/kit/tmp/models/imagenet-classifier .gpuwheel/kit/ && rm -rf .gpuwheel/kit/tmp
	du -sh .gpuwheel/kit .gpuwheel/part*

gpu-check:
	loadtests/gpu_check.sh

# Headless Locust against a service it starts (or URL=http://127.0.0.1:PORT), reports in reports/.
DURATION ?= 60
USERS ?= 24
loadtest: $(DEV_STAMP)
	$(BIN)/python -m loadtests.run --duration $(DURATION) --users $(USERS) $(if $(URL),--url $(URL))

# Locust at 4x what the service admits for 60 s: only 200 or 503 + Retry-After, bounded p99 and memory,
# healthy within seconds after (loadtests/overload.py; thresholds in loadtests/slo.toml).
overload: $(DEV_STAMP)
	$(BIN)/python -m loadtests.overload --seconds $(DURATION) --record

# nnserve against a plain Starlette app, a FastAPI app, the peers (Triton through PyTriton, LitServe, KServe, MLServer,
# Ray Serve, TorchServe, BentoML from its docs; each in its own venv under build/peers/, built on first use) and raw
# onnxruntime, same run; appends to loadtests/RESULTS.md. About an hour (BENCH_ARGS="--duration 5": 45 minutes).
# Needs wrk, h2load (the gRPC scenarios) and, for TorchServe, Java (installed from Debian's packages when missing).
bench: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null)
	command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null)
	$(BIN)/python -m loadtests.bench --drift-off --payload-log $(BENCH_ARGS)

# Ten minutes of mixed load (all endpoints, Locust), memory and p99 per minute; fails on any failed
# request or memory growth of 5% or more after the first minute. soak-housing: issue 4's 5-minute wrk run.
soak: $(DEV_STAMP)
	$(BIN)/python -m loadtests.soak

soak-housing: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m loadtests.soak --housing

# Versions swapped, rolled back, canaried, refused and promoted under Locust load: 0 failed requests, each
# step's convergence over the workers, p99 during the swap against before (loadtests/rollout.py).
rollout: $(DEV_STAMP)
	$(BIN)/python -m loadtests.rollout --seconds $(or $(ROLLOUT_S),60) --record

# The monthly loop on the real sales (loadtests/retrain_loop.py, ~2 min): version 1 through January serves
# February with prices posted back, the payload log becomes training data, version 2 is a 50% canary in
# March, promoted only if its online MAE is lower. Everything under build/retrain-loop/; models/ untouched.
retrain-loop: $(DEV_STAMP)
	$(BIN)/python -m loadtests.retrain_loop

# The largest legal requests on every bulk route for 20 s: resident memory before, during and 10 s after
# (loadtests/memory.py; fails when it has not come back within [memory] of slo.toml).
memory: $(DEV_STAMP)
	$(BIN)/python -m loadtests.memory

# The lecture's two claims on our data (training/lecture.py): PNG + CSV in training/docs/.
scale-curve: $(TRAIN_STAMP)
	$(BIN)/python -m training.lecture scale

activation-curve: $(TRAIN_STAMP)
	$(BIN)/python -m training.lecture activation

# schemathesis against every operation of the OpenAPI document: 300 cases each (make test runs 25).
# Two dashboard panels (drift, outcome feedback) drawn from a live run scraped by a real Prometheus (~4 min).
dashboard-png: $(DEV_STAMP) $(PROMETHEUS)
	$(BIN)/python -m loadtests.dashboard --out docs/dashboard-drift.png

fuzz: $(DEV_STAMP)
	NNSERVE_FUZZ_EXAMPLES=300 $(BIN)/pytest tests/integration/test_fuzz.py tests/integration/test_grpc_fuzz.py

# The gRPC messages and stubs from service/protocol/rpc/proto/*.proto (a unit test checks they are current).
protos: $(DEV_STAMP)
	$(BIN)/python -m service.protocol.rpc.proto.generate

lint: $(DEV_STAMP)
	$(BIN)/ruff check service training tests loadtests
	$(BIN)/ruff format --check service training tests loadtests

format: $(DEV_STAMP)
	$(BIN)/ruff format service training tests loadtests
	$(BIN)/ruff check --fix service training tests loadtests

clean:
	rm -rf $(VENV) build reports .pytest_cache
