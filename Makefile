# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, installs vitlab, runs the demo
#   make test   creates .venv if missing, installs vitlab with its test oracles, runs lint + tests
# torch/torchvision are pinned to the builds this machine (and CI) has on local disk.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.vitlab-installed
DATA   ?= ../shared/data

.PHONY: demo test test-all lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vitlab models
	$(VENV)/bin/vitlab summary vit_base_patch16_224 --depth 2
	$(VENV)/bin/vitlab predict $(DATA)/photos --model vit_tiny_patch16_224 --topk 3

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(PY) -m pytest -m "not slow" -q

test-all: lint
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
