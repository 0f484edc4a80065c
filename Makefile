# A newcomer runs `make demo` or `make test`; both create (or reuse) one virtual environment
# outside the clone so that repeated runs and CI do not reinstall torch.
VENV ?= $(HOME)/.cache/backpack-dist/venv
SHARED ?= $(abspath ../shared)
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo lint check-shared

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip

install: $(PYTHON)
	$(PYTHON) -m pip install -q -e '.[dev]'
	$(PYTHON) -m backpack_dist.eval install_lm_eval > /dev/null

check-shared:
	@test -x $(SHARED)/tools/tiktoken-cache || { echo "make: $(SHARED) has no tools/tiktoken-cache; clone next to shared/ or pass SHARED=/path/to/shared" >&2; exit 2; }

test: check-shared install
	eval "$$($(SHARED)/tools/tiktoken-cache)" && BACKPACK_SHARED=$(SHARED) $(PYTHON) -m pytest $(PYTEST_ARGS)

demo: check-shared install
	eval "$$($(SHARED)/tools/tiktoken-cache)" && BACKPACK_SHARED=$(SHARED) $(PYTHON) -m backpack_dist.demo

lint: install
	$(VENV)/bin/ruff check backpack_dist data_prep tests
