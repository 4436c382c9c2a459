"""The benchmark scripts still import: a rename in the package must not silently break ``bench/``.

Each script is loaded as a module (its ``main()`` stays behind ``if __name__ == "__main__"``), so
every import it makes at the top is resolved against today's package. ``scripts/gpu_check.sh``
(run only where a GPU is lent) must name test files and benchmarks that exist.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from tests.paths import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "bench").glob("*.py"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    spec = importlib.util.spec_from_file_location(f"bench_under_test_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)) or script.name == "common.py"


def test_gpu_check_names_existing_tests_and_benchmarks():
    script = (REPO_ROOT / "scripts" / "gpu_check.sh").read_text()
    paths = re.findall(r"\b((?:tests|bench)/[\w/]+\.py)\b", script)
    assert any(p.startswith("tests/") for p in paths) and any(p.startswith("bench/") for p in paths)
    assert [p for p in paths if not (REPO_ROOT / p).is_file()] == []
