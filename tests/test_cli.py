"""What a user sees from ``python train_hydra.py`` before any training: errors, --cfg, --help."""

from __future__ import annotations

import pytest

from conftest import CONF_DIR, run_command, train_command
from mvfoul.help import describe


def assert_one_line_error(result, *expected: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mvfoul: error: ")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return errors[0]


@pytest.fixture
def run(tmp_path, cache_dir):
    return lambda *args: run_command(train_command(*args), cwd=tmp_path, cache=cache_dir)


def test_type_error_fails_at_startup_naming_the_key(run, tmp_path):
    result = run("--config-name", "quick_test", "training.learning_rate=not_a_number")
    line = assert_one_line_error(result, "training.learning_rate", "not_a_number")
    assert "Float" in line
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_unknown_key_suggests_the_close_match(run):
    result = run("--config-name", "quick_test", "training.learnin_rate=0.1")
    assert_one_line_error(
        result, "training.learnin_rate: unknown key", "did you mean training.learning_rate?"
    )


def test_unknown_group_option_lists_the_options(run):
    result = run("model=resnet50")
    line = assert_one_line_error(result, "model=resnet50: no such option")
    assert "resnet3d" in line and "model_schema" not in line


def test_bad_values_are_all_listed_in_one_message(run):
    result = run(
        "--config-name",
        "quick_test",
        "training.optimizer=adamx",
        "loss.label_smoothing=1.5",
        "training.learning_rate=-0.1",
        "sampling.oversample_factor=0.5",
        "model.pooling=avg",
    )
    assert_one_line_error(result, "invalid configuration (5 problems)")
    for key in (
        "training.optimizer",
        "loss.label_smoothing",
        "training.learning_rate",
        "sampling.oversample_factor",
        "model.pooling",
    ):
        assert f"  - {key}:" in result.stderr


def test_missing_data_dir_says_how_to_fix_it(run):
    result = run()
    line = assert_one_line_error(result)
    assert "dataset.data_dir: missing" in line
    assert "python train_hydra.py dataset.data_dir=" in line
    assert "--config-name quick_test" in line


def test_cfg_job_prints_the_composed_config(run):
    result = run("--config-name", "quick_test", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    for group in (
        "dataset:",
        "model:",
        "training:",
        "loss:",
        "sampling:",
        "freezing:",
        "system:",
        "experiment:",
    ):
        assert f"\n{group}" in "\n" + result.stdout
    assert "backbone: tiny" in result.stdout and "max_epochs: 2" in result.stdout


def test_help_lists_every_group_option_and_preset_with_its_description(run):
    result = run("--help")
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
