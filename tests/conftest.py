"""Shared test helpers: composing configs in-process, running the real commands, fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import mvfoul.config  # noqa: F401  (registers the schemas)
from mvfoul.paths import CONF_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = (REPO_ROOT / ".." / "shared" / "fixtures" / "mvfouls-real-sample").resolve()

# A small built-in dataset for end-to-end runs: same generator, fewer and smaller clips.
SMALL_SYNTHETIC = [
    "dataset.synthetic.num_train=16",
    "dataset.synthetic.num_valid=8",
    "dataset.synthetic.num_test=8",
    "dataset.synthetic.resolution=64",
    "dataset.synthetic.clip_frames=100",
    "dataset.frame_size=48",
]


def compose_config(config_name: str = "config", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose like ``train_hydra.py`` does, without running it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def real_sample() -> Path:
    """The real SoccerNet-MVFoul sample (five actions); skipped where it is absent."""
    if not (REAL_SAMPLE / "Test" / "annotations.json").is_file():
        pytest.skip(f"real fixture absent: {REAL_SAMPLE} (it ships beside the project, not in it)")
    return REAL_SAMPLE


@pytest.fixture
def real_test_split(real_sample) -> Path:
    """The real sample's split folder (Test/: annotations.json and action_N/clip_K.mp4)."""
    return real_sample / "Test"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session, so the built-in dataset is generated once."""
    return tmp_path_factory.mktemp("mvfoul-cache")


def run_command(
    args: Sequence[str],
    cwd: Path,
    cache: Path,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the project the way a user does; outputs land under ``cwd``."""
    full_env = {**os.environ, "MVFOUL_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_command(*overrides: str) -> list[str]:
    return [str(REPO_ROOT / "train_hydra.py"), *overrides]
