"""The CI rule in conftest.py: with CI set a skip fails, naming what is missing, unless the test is a
GPU test; without CI the same tests skip. Run on probe tests in a separate pytest process."""

import os
import shutil
import subprocess
import sys

from common import REPO

PROBES = '''
import pytest

def test_needs_a_widget():
    pytest.skip("no widget installed")

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("needs a CUDA GPU")

@pytest.mark.xfail(reason="known")
def test_known_failure():
    assert False
'''


MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_module_xyz")\n'


def run_probes(tmp_path, ci: bool, probes: str = PROBES):
    for name in ("conftest.py", "common.py"):
        shutil.copy(REPO / "tests" / name, tmp_path / name)
    (tmp_path / "test_probes.py").write_text(probes)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "1"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_under_ci_a_skip_fails_naming_what_is_missing_but_a_gpu_skip_stays(tmp_path):
    result = run_probes(tmp_path, ci=True)
    out = result.stdout
    assert result.returncode == 1, out
    assert "FAILED test_probes.py::test_needs_a_widget" in out and "no widget installed" in out
    assert "SKIPPED [1] test_probes.py" in out and "needs a CUDA GPU" in out
    assert "1 failed, 1 skipped, 1 xfailed" in out


def test_under_ci_a_module_that_would_skip_is_an_error(tmp_path):
    result = run_probes(tmp_path, ci=True, probes=MODULE_SKIP)
    assert result.returncode != 0 and "ERROR test_probes.py" in result.stdout
    assert "no_such_module_xyz" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


def test_without_ci_the_same_tests_skip(tmp_path):
    result = run_probes(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout and "1 xfailed" in result.stdout
    module = run_probes(tmp_path, ci=False, probes=MODULE_SKIP)
    assert module.returncode == 5 and "1 skipped" in module.stdout  # 5: no tests ran
