"""Shared fixtures: an isolated cache with the shapes benchmark's validation split, and CLI helpers."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learnroot.openmp import prefer_passive_wait

prefer_passive_wait()  # before any test module imports torch: idle OpenMP threads sleep on busy cores

REPO = Path(__file__).resolve().parents[1]
#: The real weights and images (``LEARNROOT_SHARED_DATA``, default ``<repo>/../shared/data``); tests that need
#: them skip when the folder is absent.
SHARED_DATA = Path(os.environ.get("LEARNROOT_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_SAMPLES = SHARED_DATA / "imagenet-samples"
SCRIPTS = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of an installed console script of this environment (not ``python -m``)."""
    path = SCRIPTS / name
    if not path.exists():
        pytest.fail(f"console script {name} is not installed next to {sys.executable}: pip install -e .")
    return str(path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (:data:`SHARED_DATA`); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("real data not found (set LEARNROOT_SHARED_DATA to the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_cache() -> Path:
    """A cache folder for the tests (``LEARNROOT_TEST_CACHE`` or ``<repo>/.cache/tests``), holding the
    shapes benchmark's validation split (the small CNN's weights ship with the package)."""
    from learnroot.models import cached_small_cnn
    from learnroot.options import DatasetOptions, ModelOptions

    path = Path(os.environ.get("LEARNROOT_TEST_CACHE", REPO / ".cache" / "tests"))
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as lock:  # pytest-xdist's workers fill the cache one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached_small_cnn(ModelOptions(), DatasetOptions(), str(path))
    return path


@pytest.fixture(scope="session")
def learnroot_env(test_cache) -> dict:
    """Environment for CLI subprocesses: the test cache, no inherited output root."""
    env = dict(os.environ, LEARNROOT_CACHE=str(test_cache), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    env.pop("LEARNROOT_OUTPUT_ROOT", None)
    return env


@pytest.fixture
def run_cli(learnroot_env, tmp_path):
    """Run an installed console script in a subprocess from a temporary cwd."""
    def run(*args: str, name: str = "learnroot-run", cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([script(name), *args], cwd=cwd or tmp_path, env=env or learnroot_env,
                              capture_output=True, text=True, timeout=timeout)
    return run


def image_folder(root: Path, count: int = 6, classes=("circle", "ring")) -> Path:
    """An ImageNet-style folder of ``count`` small random PNGs, round robin over shape-class folders."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for index in range(count):
        path = root / classes[index % len(classes)] / f"img_{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return root
