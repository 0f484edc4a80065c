# A newcomer runs `make demo` or `make test`; both create (or reuse) one virtual environment
# outside the clone so that repeated runs and CI do not reinstall torch.
VENV ?= $(HOME)/.cache/backpack-dist/venv
SHARED ?= $(abspath ../shared)
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo lint

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip

install: $(PYTHON)
	$(PYTHON) -m pip install -q -e '.[dev]'
	$(PYTHON) -m backpack_dist.eval install_lm_eval > /dev/null

test: install
	eval "$$($(SHARED)/tools/tiktoken-cache)" && BACKPACK_SHARED=$(SHARED) $(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	eval "$$($(SHARED)/tools/tiktoken-cache)" && BACKPACK_SHARED=$(SHARED) $(PYTHON) -m backpack_dist.demo

lint: install
	$(VENV)/bin/ruff check backpack_dist data_prep tests
