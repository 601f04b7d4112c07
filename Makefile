# entroprune: two commands for a newcomer on a fresh machine.
#   make demo   set everything up, then compress the shipped VGG (the main job)
#   make test   set everything up, then lint and run the test suite (CI runs this)

VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test lint bench

setup: $(VENV)/.installed data

# torch first, from the pinned CPU wheel, so nothing later pulls a CUDA build
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data:
	@test -f $(FMNIST) || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

demo: setup
	$(VENV)/bin/entroprune demo

lint: setup
	$(VENV)/bin/ruff check entroprune tests benchmarks

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py --suite l1 --commit
