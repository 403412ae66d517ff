"""Shared test helpers: composing configs in-process, running the real commands, fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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

# A one-epoch tiny run on real clips (the real sample linked as a dataset folder).
REAL_TINY_RUN = [
    "model=tiny",
    "system=cpu",
    "sampling=none",
    "freezing=none",
    "dataset.frame_size=32",
    "dataset.batch_size=2",
    "training.max_epochs=1",
    "training.warmup_epochs=0",
    "experiment.name=real",
]

# The files an evaluation writes per split (format with s=<split>).
REPORT_FILES = [
    "predictions_{s}.json",
    "metrics_{s}.json",
    "per_class_{s}.csv",
    "per_class_{s}.md",
    "confusion_offence_severity_{s}.png",
    "confusion_offence_severity_{s}.csv",
    "confusion_action_{s}.png",
    "confusion_action_{s}.csv",
]

# 4 epochs of quick_test on the full built-in dataset (25 steps an epoch): long enough to kill
# mid-run, deterministic so that two runs can be compared to the last digit.
LONG = [
    "--config-name",
    "quick_test",
    "system.deterministic=true",
    "training.max_epochs=4",
    "experiment.test_after_fit=false",
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


# --- running an entry point in this process -------------------------------------------------------


def _logging_state() -> dict[str, tuple]:
    import logging

    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {
        lg.name: (lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled, list(lg.filters))
        for lg in loggers
    }


def _restore_logging(saved: dict[str, tuple]) -> None:
    """Put every logger that existed back as it was (Hydra configures the root logger and may
    disable others); a logger made meanwhile (a module imported for the first time) keeps its
    own set-up, less any file handler. Handlers dropped are closed (Hydra's run log file)."""
    import logging

    kept = {id(h) for _, handlers, *_ in saved.values() for h in handlers}
    for name, (lg, *_) in _logging_state().items():
        if name in saved:
            _, handlers, level, propagate, disabled, filters = saved[name]
        else:
            handlers = [h for h in lg.handlers if not isinstance(h, logging.FileHandler)]
            level, propagate, disabled, filters = lg.level, lg.propagate, False, lg.filters
        for handler in list(lg.handlers):
            if id(handler) not in kept and handler not in handlers:
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
        lg.filters[:] = filters
    logging.root.manager._clear_cache()


def _reset_hydra() -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@contextmanager
def clean_process_state() -> Iterator[None]:
    """Undo what an in-process run leaves behind: Hydra's global state and run config, logging
    handlers and levels, environment variables, cwd, sys.argv, signal handlers, torch's thread
    count, determinism flags and random states, run-folder locks and the CLI's deferred error."""
    import random
    import signal

    import numpy as np
    import torch

    from mvfoul import cli, run_folder

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv = list(sys.argv)
    saved_logging = _logging_state()
    saved_locks = set(run_folder._HELD_LOCKS)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    saved_signals = {sig: signal.getsignal(sig) for sig in signals}
    saved_threads = torch.get_num_threads()
    saved_flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    saved_random = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    _reset_hydra()
    try:
        yield
    finally:
        _reset_hydra()
        cli._DEFERRED.clear()
        for folder in set(run_folder._HELD_LOCKS) - saved_locks:
            run_folder.unlock_run_folder(folder)
        _restore_logging(saved_logging)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        if torch.get_num_threads() != saved_threads:
            torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        torch.backends.cudnn.benchmark = saved_flags[2]
        random.setstate(saved_random[0])
        np.random.set_state(saved_random[1])
        torch.random.set_rng_state(saved_random[2])
        sys.argv[:] = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def clean_process():
    """For a test that runs an entry point (or its task function) in this process."""
    with clean_process_state():
        yield


def run_here(
    args: Sequence[str],
    cwd: Path,
    cache: Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Like :func:`run_command`, in this process: ``python <script> <args>`` becomes the script run
    as ``__main__`` (its own ``if __name__ == "__main__"`` line: Hydra, the one-line error
    reporting, run folders), without a new interpreter importing torch again. Returns a
    ``CompletedProcess`` with the exit code and what was printed. Call it inside
    :func:`clean_process_state` (the ``clean_process`` fixture).

    Not for a command that starts a process pool (``build_cache.py --workers``, a first
    generation of the built-in dataset): forking this multi-threaded process can deadlock."""
    import io
    import runpy
    from contextlib import redirect_stderr, redirect_stdout

    from mvfoul import cli

    script, *rest = (str(a) for a in args)
    os.chdir(cwd)
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update({"MVFOUL_CACHE_DIR": str(cache), **(env or {})})
    sys.argv[:] = [script, *rest]
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    finally:
        _reset_hydra()
        cli._DEFERRED.clear()
    if not isinstance(code, int):
        err.write("" if code is None else f"{code}\n")
        code = 0 if code is None else 1
    return subprocess.CompletedProcess([script, *rest], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def small_synthetic_built(cache_dir, tmp_path_factory) -> Path:
    """The SMALL_SYNTHETIC dataset in the session's cache, generated by a real command.

    Generation renders clips in a process pool; forking this (multi-threaded) test process for
    it can deadlock, so the in-process runs that train on it find it already built."""
    workdir = tmp_path_factory.mktemp("small-synthetic")
    args = ["--config-name", "quick_test", *SMALL_SYNTHETIC, "experiment.fast_dev_run=true"]
    result = run_command(train_command(*args), cwd=workdir, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return cache_dir


@pytest.fixture
def run_in_process(clean_process, tmp_path, cache_dir, request):
    """``run_in_process(args, cwd=tmp_path, cache=cache_dir, env=None)``: :func:`run_here` with
    this test's folders, the process state restored afterwards. A run on SMALL_SYNTHETIC gets it
    built first (see ``small_synthetic_built``)."""

    def run(
        args: Sequence[str],
        cwd: Path | None = None,
        cache: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        if cache is None and set(SMALL_SYNTHETIC) <= {str(a) for a in args}:
            request.getfixturevalue("small_synthetic_built")
        return run_here(args, cwd or tmp_path, cache or cache_dir, env)

    return run
