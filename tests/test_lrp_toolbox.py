"""The LRP rules against the original LRP implementation (LRP Toolbox, numpy) on its LeNet-5.

Runs ``scripts/compare_lrp_toolbox.py`` on 3 MNIST digits; needs the toolbox's ``python`` folder
(env ``LEARNROOT_LRP_TOOLBOX``, default the research copy) and the shared data, else skips.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOOLBOX = Path("/work/scratch/research/lrp_toolbox/python")


@pytest.fixture(scope="module")
def toolbox_dir() -> Path:
    folder = Path(os.environ.get("LEARNROOT_LRP_TOOLBOX", DEFAULT_TOOLBOX))
    if not ((folder / "model_io.py").is_file() or (folder / "python" / "model_io.py").is_file()):
        pytest.skip(f"LRP toolbox not found at {folder} (set LEARNROOT_LRP_TOOLBOX)")
    return folder


def load_script():
    spec = importlib.util.spec_from_file_location("compare_lrp_toolbox", REPO / "scripts" / "compare_lrp_toolbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shared_rule_matches_the_toolbox(toolbox_dir, shared_data):
    """The script as a command: exit 0, and each shared rule's printed difference <= 1e-5."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_lrp_toolbox.py"), str(toolbox_dir),
                           "--digits", "3", "--mnist", str(shared_data / "mnist"),
                           "--model", str(shared_data / "weights" / "lrp_toolbox_mnist_LeNet-5.txt")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for label, *_ in load_script().RULES:
        row = next(line for line in lines if line.startswith(label + " "))
        difference = float(row[len(label):].split()[0])
        assert math.isfinite(difference) and difference <= 1e-5, row
    assert any(line.startswith("flat (every layer)") and "not shared" in line for line in lines)


def test_toolbox_folder_is_found_from_the_repository_root(toolbox_dir):
    script = load_script()
    python = toolbox_dir if (toolbox_dir / "model_io.py").is_file() else toolbox_dir / "python"
    assert script.toolbox_folder(str(python.parent)) == python
    assert script.toolbox_folder(str(python)) == python
    with pytest.raises(SystemExit, match="no model_io.py"):
        script.toolbox_folder(str(REPO))
