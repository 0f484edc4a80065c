"""Makes `lm_eval --model backpack` work from the shell.

lm-evaluation-harness 0.4 has no plugin entry points for models: its registry holds only what
has been imported. `install()` (python -m backpack_dist.eval install_lm_eval) writes a one-line
.pth file into site-packages that calls `activate()` at interpreter start-up; activate() only
adds an import hook, which, once lm_eval has imported its own models, registers "backpack" as a
lazy placeholder (module path). Nothing of lm_eval or torch is imported until lm_eval itself is."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

MODEL_NAME = "backpack"
TARGET = "backpack_dist.eval.lm_eval_model:BackpackLMEval"
TRIGGER = "lm_eval.models"  # lm_eval's module that registers its built-in models
PTH_NAME = "backpack_dist_lm_eval.pth"
PTH_LINE = ("import sys; exec('try:\\n import backpack_dist.eval.lm_eval_hook as h; h.activate()\\n"
            "except ImportError:\\n pass')\n")


def register() -> None:
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        register()

    def __getattr__(self, name):  # get_source, is_package, ... of the real loader
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TRIGGER or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def activate() -> None:
    if TRIGGER in sys.modules:
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def install(site_dir=None):
    """Write the .pth file into site_dir (default: this environment's site-packages)."""
    import sysconfig
    from pathlib import Path

    site_dir = Path(site_dir or sysconfig.get_paths()["purelib"])
    path = site_dir / PTH_NAME
    path.write_text(PTH_LINE)
    return path
