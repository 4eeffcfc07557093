# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, installs vitlab, runs the demo
#   make test   creates .venv if missing, installs vitlab with its test oracles, runs lint + tests
# torch/torchvision are pinned to the builds this machine (and CI) has on local disk.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.vitlab-installed
# The data directory: ../shared/data where it holds MNIST, else data/ in the checkout (git-ignored), which
# `vitlab data mnist` fills on first use (torchvision's download, checksums verified). MNIST_MIRROR=URL
# downloads from another server holding the four idx .gz files.
DATA   ?= $(if $(wildcard ../shared/data/mnist.npz),../shared/data,data)
MNIST_MIRROR ?=

.PHONY: demo test test-all lint format clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The demo: train a small ViT on MNIST (a few minutes on 2 cores), evaluate it on the official test set,
# predict a few test digits, draw their attention and the paper's analysis figures; everything lands in runs/demo.
demo: $(STAMP)
	$(VENV)/bin/vitlab data mnist --out $(DATA)$(if $(MNIST_MIRROR), --mirror $(MNIST_MIRROR))
	$(VENV)/bin/vitlab train --config configs/mnist_quick.yaml data.path=$(DATA)/mnist.npz run.out_dir=runs/demo
	$(VENV)/bin/vitlab eval --model runs/demo/best.safetensors --data $(DATA)/mnist.npz --out runs/demo
	$(PY) examples/export_test_images.py $(DATA)/mnist.npz runs/demo/digits --count 8
	$(VENV)/bin/vitlab predict runs/demo/digits --model runs/demo/best.safetensors --topk 2
	$(VENV)/bin/vitlab attention runs/demo/digits --model runs/demo/best.safetensors --method rollout --out runs/demo/attention
	$(VENV)/bin/vitlab inspect --model runs/demo/best.safetensors --data $(DATA)/mnist.npz --no-accuracy --out runs/demo/inspect
	@echo "demo output: runs/demo (report.md, curves.png, confusion.png, best.safetensors, attention/, inspect/report.html)"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

# The page's browser test drives Debian's chromium (Playwright cannot download browsers here). Best effort:
# installed when missing and possible (root, apt-get); never fails the build, and the test skips with the
# reason when chromium is still missing.
browser:
	@if [ -x /usr/bin/chromium ]; then echo "browser: /usr/bin/chromium is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "browser: installing Debian's chromium for the page test (apt-get update && apt-get install -y chromium)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    && echo "browser: chromium installed" || echo "browser: could not install chromium; the browser test will skip"; \
	else echo "browser: chromium is missing and cannot be installed here (needs root and apt-get); the browser test will skip"; fi

test: lint browser
	$(PY) -m pytest -m "not slow" -q

test-all: lint browser
	$(PY) -m pytest -q

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
