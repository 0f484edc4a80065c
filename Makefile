# A newcomer runs `make demo` or `make test`. Both install the locked dependency set
# (requirements.lock) into one virtual environment outside the clone, with uv: pip's resolver
# backtracks for many minutes over this set, uv syncs it in under a minute.
VENV ?= $(HOME)/.cache/backpack-dist/venv
SHARED ?= $(abspath ../shared)
PYTHON := $(VENV)/bin/python
# uv lives in its own small environment beside the project's (a sync would remove it from there).
UV_ENV := $(VENV)-uv
UV := $(UV_ENV)/bin/uv
UV_VERSION := 0.13.9
LOCK := requirements.lock
PYTEST_ARGS ?=

# Bytecode is compiled at install: without it every process recompiles where PYTHONDONTWRITEBYTECODE
# is set (`import streaming` 18 s instead of 7). A site mirror: set UV_INDEX_URL.
UV_PIP := $(UV) pip --quiet

# The tiktoken cache from shared/ (GPT-2's BPE, which tiktoken would otherwise download).
TIKTOKEN_CACHE := $(if $(wildcard $(SHARED)/tools/tiktoken-cache),eval "$$($(SHARED)/tools/tiktoken-cache)" &&)

.PHONY: install test demo lint lock check-shared

$(UV):
	python3 -m venv $(UV_ENV)
	$(UV_ENV)/bin/pip install --quiet uv==$(UV_VERSION)

$(PYTHON): | $(UV)
	$(UV) venv --quiet --python python3 $(VENV)

# DeepSpeed ships only as an sdist whose setup imports torch (DeepSpeed #4984), so torch goes in
# first and the sync builds without isolation, against the installed torch.
install: $(PYTHON)
	$(UV_PIP) install --python $(PYTHON) --compile-bytecode -c $(LOCK) torch setuptools
	$(UV_PIP) sync --python $(PYTHON) --compile-bytecode --no-build-isolation $(LOCK)
	$(UV_PIP) install --python $(PYTHON) --no-deps --no-build-isolation -e .
	$(PYTHON) -m backpack_dist.eval install_lm_eval > /dev/null

# Re-resolve the lock after changing pyproject.toml's dependencies (torch is capped at the
# release tested here, lock-constraints.txt).
lock: $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --universal --python-version 3.10 \
		-c lock-constraints.txt -o $(LOCK)

check-shared:
	@test -x $(SHARED)/tools/tiktoken-cache -a -d $(SHARED)/data || { echo "make test: $(SHARED) (test data and the GPT-2 BPE cache) not found; clone next to shared/ or pass SHARED=/path/to/shared" >&2; exit 2; }

test: check-shared install
	$(TIKTOKEN_CACHE) BACKPACK_SHARED=$(SHARED) $(PYTHON) -m pytest $(PYTEST_ARGS)

# The demo generates its own corpus and tokenizer: it needs nothing beside the clone.
demo: install
	$(TIKTOKEN_CACHE) $(PYTHON) -m backpack_dist.demo

lint: install
	$(VENV)/bin/ruff check backpack_dist data_prep tests
