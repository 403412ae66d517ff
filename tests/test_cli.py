"""What a user sees from ``python train_hydra.py`` before any training: errors, --cfg, --help.

The messages are checked in this process: the config composed as the entry point composes it,
the error it raises, and the one line :func:`mvfoul.cli.explain` makes of it (what the entry point
prints). One test runs the real command, for the exit code and the single stderr line."""

from __future__ import annotations

import pytest
import yaml
from hydra.errors import HydraException

from conftest import CONF_DIR, compose_config, run_command, train_command
from mvfoul.cli import explain
from mvfoul.errors import MvfoulError
from mvfoul.help import describe


def assert_one_line_error(result, *expected: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mvfoul: error: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return errors[0]


def composition_error(*overrides: str, config: str = "quick_test") -> str:
    """The line the entry point prints for a config that does not compose."""
    with pytest.raises(HydraException) as info:
        compose_config(config, overrides)
    line = explain(info.value)
    assert line is not None and "\n" not in line, info.value
    return line


def startup_error(*overrides: str, config: str = "quick_test") -> str:
    """The line the entry point prints for a config that composes but fails validation."""
    from mvfoul.train import train

    with pytest.raises(MvfoulError) as info:
        train(compose_config(config, overrides))
    line = explain(info.value)
    assert line is not None
    return line


def test_type_error_fails_at_startup_in_one_line_naming_the_key(tmp_path, cache_dir):
    """The real command: a non-zero exit, one stderr line, no traceback, nothing run."""
    result = run_command(
        train_command("--config-name", "quick_test", "training.learning_rate=not_a_number"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    line = assert_one_line_error(result, "training.learning_rate", "not_a_number")
    assert "Float" in line
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_type_error_names_the_key_the_value_and_the_type():
    line = composition_error("training.learning_rate=not_a_number")
    assert line.startswith("training.learning_rate: ") and "not_a_number" in line
    assert "Float" in line


def test_unknown_key_suggests_the_close_match():
    line = composition_error("training.learnin_rate=0.1")
    assert line.startswith("training.learnin_rate: unknown key")
    assert "did you mean training.learning_rate?" in line


def test_unknown_group_option_lists_the_options():
    line = composition_error("model=resnet50", config="config")
    assert line.startswith("model=resnet50: no such option")
    assert "resnet3d" in line and "model_schema" not in line


def test_bad_values_are_all_listed_in_one_message(clean_process):
    message = startup_error(
        "training.optimizer=adamx",
        "loss.label_smoothing=1.5",
        "training.learning_rate=-0.1",
        "sampling.oversample_factor=0.5",
        "model.pooling=avg",
    )
    assert message.startswith("invalid configuration (5 problems)")
    for key in (
        "training.optimizer",
        "loss.label_smoothing",
        "training.learning_rate",
        "sampling.oversample_factor",
        "model.pooling",
    ):
        assert f"  - {key}:" in message


def test_naming_the_built_in_dataset_on_another_dataset_option_points_to_the_option(
    clean_process,
):
    line = startup_error("dataset=mvfouls", "dataset.name=synthetic", "dataset.data_dir=/data")
    assert line.startswith("invalid configuration: dataset.name: 'synthetic' set on another")
    assert "dataset=synthetic" in line


def test_cfg_job_prints_the_composed_config(run_in_process):
    result = run_in_process(train_command("--config-name", "quick_test", "--cfg", "job"))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert list(shown) == [
        "dataset",
        "model",
        "training",
        "loss",
        "sampling",
        "freezing",
        "system",
        "experiment",
    ]
    assert shown["model"]["backbone"] == "tiny" and shown["training"]["max_epochs"] == 2


def test_help_lists_every_group_option_and_preset_with_its_description(run_in_process):
    result = run_in_process(train_command("--help"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for path in sorted(CONF_DIR.glob("*/*.yaml")):
        if path.parent.name in ("hydra",):
            continue
        assert path.stem in out, f"--help misses {path.parent.name}/{path.stem}"
        assert describe(path) in out, f"--help misses the description of {path}"
    assert "--config-name" in out
    assert "_schema" not in out


def test_unreachable_pretrained_weights_fail_fast_in_one_line(tmp_path, cache_dir):
    # An empty torch hub cache and a proxy that refuses connections: no way to get the file.
    env = {
        "TORCH_HOME": str(tmp_path / "torch"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    result = run_command(
        train_command("--config-name", "quick_test", "model=resnet3d", "model.pretrained=true"),
        cwd=tmp_path,
        cache=cache_dir,
        env=env,
        timeout=120,
    )
    line = assert_one_line_error(result, "r3d_18")
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in line
    assert "model.weights_path" in line


def test_a_run_in_this_process_leaves_no_state_behind(tmp_path, cache_dir, small_synthetic_built):
    """What the in-process runs (here and in the end-to-end tests) change is put back."""
    import logging
    import os
    import sys

    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from conftest import SMALL_SYNTHETIC, clean_process_state, run_here

    def state():
        return (
            dict(os.environ),
            os.getcwd(),
            list(sys.argv),
            list(logging.getLogger().handlers),
            logging.getLogger().level,
            torch.get_num_threads(),
            torch.random.get_rng_state().numpy().tobytes(),
        )

    before = state()
    with clean_process_state():
        threads = before[5] + 1
        run = ["--config-name", "quick_test", *SMALL_SYNTHETIC, "experiment.fast_dev_run=true"]
        result = run_here(train_command(*run, f"system.num_threads={threads}"), tmp_path, cache_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        assert torch.get_num_threads() == threads
        error = run_here(train_command("model=resnet50"), tmp_path, cache_dir)
        assert error.returncode != 0 and os.environ.get("HYDRA_FULL_ERROR") == "1"
    assert state() == before
    assert not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()
    compose_config("quick_test")  # Hydra can be initialised again
