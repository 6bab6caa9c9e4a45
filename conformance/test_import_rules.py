"""The import rules that need a fresh interpreter (docs/architecture.md, "Import rules"):
engine.core and the sampling parameters load without torch, and the torch-free
conformance runs where torch cannot be imported at all. import-linter checks the
rest statically (pyproject.toml, `make test`)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_FREE = ["engine.core.scheduler", "engine.core.block.block_manager",
              "engine.core.kv_memory", "engine.entrypoints.cli_memory"]
# Importing torch raises ImportError once sys.modules maps it to None.
NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("module", TORCH_FREE + ["engine.sampling.sampling_params"])
def test_module_leaves_torch_unloaded(module: str) -> None:
    if module.startswith("engine.sampling") and importlib.util.find_spec("engine.sampling") is None:
        pytest.skip("engine.sampling does not exist yet")
    done = _python(f"import sys, {module}\n"
                   f"assert 'torch' not in sys.modules, '{module} loaded torch'\n")
    assert done.returncode == 0, done.stderr


def test_a_planted_torch_import_is_caught() -> None:
    """The check above can fail: a module that imports torch is reported."""
    done = _python("import sys, json\nassert 'torch' not in sys.modules, 'json loaded torch'\n"
                   "import torch\nassert 'torch' not in sys.modules, 'loaded torch'\n")
    assert done.returncode != 0 and "loaded torch" in done.stderr


def test_torch_free_conformance_runs_without_torch() -> None:
    """conftest.py and a scheduler test collect and pass with torch unimportable."""
    code = NO_TORCH + (
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', "
        "'conformance/test_scheduler_examples.py', '-k', 'infeasible or stop_rules']))\n")
    done = _python(code)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
