# The whole set-up for a newcomer is two commands:
#   make book   build the HTML book into _build/html
#   make test   run every check that CI runs
# Both create .venv with the pinned requirements on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline data: LLM_DATA_DIR names a mirror folder that is searched before the
# network. It defaults to ../shared/data when that folder exists, as on the
# project's own machines, and is made absolute because chapters run in chapters/.
LLM_DATA_DIR ?= $(wildcard $(CURDIR)/../shared/data)
ifneq ($(strip $(LLM_DATA_DIR)),)
  override LLM_DATA_DIR := $(abspath $(LLM_DATA_DIR))
  export LLM_DATA_DIR
endif

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg
CHAPTERS ?=

# A second environment that holds only what a chapter's Colab install cell gets
# (the package and the dependencies its metadata declares), plus what Colab
# already has (torch, the Jupyter kernel) and the notebook test runner. The
# chapters are checked here, so a dependency missing from pyproject.toml fails.
COLAB := .venv-colab

.PHONY: book test bench tangle format execute clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(COLAB)/.installed: requirements.txt pyproject.toml $(wildcard llm/*.py)
	test -x $(COLAB)/bin/python || $(PYTHON) -m venv $(COLAB)
	$(COLAB)/bin/python -m pip install --quiet --upgrade pip
	$(COLAB)/bin/python -m pip install --quiet -c requirements.txt torch ipykernel
	$(COLAB)/bin/python -m pip install --quiet -c requirements.txt --force-reinstall --no-deps .
	$(COLAB)/bin/python -m pip install --quiet -c requirements.txt ".[book]" pytest nbval
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

LINTED := llm tools bench tests

test: $(STAMP) $(COLAB)/.installed
	$(BIN)/python tools/nbclean.py --check
	$(BIN)/python tools/tangle.py --check
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m pytest tests --ignore=tests/browser
	$(COLAB)/bin/python -m pytest $(NBVAL) chapters
	$(MAKE) book
	$(BIN)/python -m pytest tests/browser

# Benchmarks against peers (not part of the tests): ratios next to their targets,
# results in bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# Write llm/ from the chapters (after editing an exported cell).
tangle: $(STAMP)
	$(BIN)/python tools/tangle.py

# Bring the code to the project's style: comments on their own line, ruff's
# formatting and fixes. The package is formatted through the chapters' cells
# and then tangled again, since llm/ is generated from them.
format: $(STAMP)
	$(BIN)/python tools/comments.py --fix chapters tools bench tests
	$(BIN)/ruff format chapters tools bench tests
	$(BIN)/python tools/tangle.py
	$(BIN)/ruff check --fix tools bench tests

# Re-execute chapters and save their outputs: `make execute` for all of them,
# `make execute CHAPTERS=chapters/ch02_text_data.ipynb` for one.
execute: tangle
	$(BIN)/python tools/execute.py $(CHAPTERS)

clean:
	rm -rf _build .pytest_cache .hypothesis $(COLAB)
