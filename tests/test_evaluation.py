"""Evaluation as a user runs it: after training, evaluate_hydra.py on a checkpoint, the
challenge split, and agreement with the official SoccerNet evaluator."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SMALL_SYNTHETIC, run_command, train_command

pytestmark = pytest.mark.slow

REPORT_FILES = [
    "predictions_{s}.json", "metrics_{s}.json", "per_class_{s}.csv", "per_class_{s}.md",
    "confusion_offence_severity_{s}.png", "confusion_offence_severity_{s}.csv",
    "confusion_action_{s}.png", "confusion_action_{s}.csv",
]


def evaluate_command(*overrides: str) -> list[str]:
    return [str(REPO_ROOT / "evaluate_hydra.py"), *overrides]


def only_run(root: Path) -> Path:
    (run,) = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir) -> Path:
    """A tiny quick_test run on the small built-in dataset, tested after fit."""
    workdir = tmp_path_factory.mktemp("trained")
    result = run_command(
        train_command("--config-name", "quick_test", *SMALL_SYNTHETIC, "training.max_epochs=2", "experiment.name=tiny"),
        cwd=workdir,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(workdir / "outputs" / "tiny")


def test_a_run_tests_its_best_checkpoint_and_draws_its_curves(trained_run):
    for name in REPORT_FILES:
        assert (trained_run / name.format(s="test")).is_file(), name
    assert (trained_run / "training_curves.png").stat().st_size > 10_000
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["test"]["checkpoint"] == summary["best"]["checkpoint"]
    assert set(summary["test"]["metrics"]) >= {"leaderboard_value", "balanced_accuracy_action"}
    predictions = json.loads((trained_run / "predictions_test.json").read_text())["Actions"]
    assert len(predictions) == 8  # SMALL_SYNTHETIC has 8 test actions
    for entry in predictions.values():
        assert (entry["Offence"], entry["Severity"]) in {("No offence", ""), ("Offence", "1.0"), ("Offence", "3.0"), ("Offence", "5.0")}


def test_evaluate_hydra_writes_every_file_and_matches_training_and_the_official_evaluator(trained_run, tmp_path, cache_dir):
    last = trained_run / "checkpoints" / "last.ckpt"
    result = run_command(
        evaluate_command(f"ckpt_path={last}", "split=valid", "dataset.eval_batch_size=3"), cwd=tmp_path, cache=cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary_line = result.stdout.strip().splitlines()[-1]
    assert summary_line.startswith("valid: 8 actions predicted") and "leaderboard" in summary_line

    out = only_run(tmp_path / "outputs" / "evaluate")
    for name in REPORT_FILES:
        assert (out / name.format(s="valid")).is_file(), name
    metrics = json.loads((out / "metrics_valid.json").read_text())

    # The validation metrics logged in training's last epoch: same weights, same data.
    history = json.loads((trained_run / "summary.json").read_text())["history"]
    last_epoch = history[max(history, key=int)]
    for ours, logged in [("leaderboard_value", "val/leaderboard"), ("balanced_accuracy_action", "val/action_bacc"),
                         ("accuracy_offence_severity", "val/sev_acc")]:
        assert metrics[ours] == pytest.approx(last_epoch[logged], abs=1e-3) or (
            math.isnan(metrics[ours]) and math.isnan(last_epoch[logged])
        )

    # And the official SoccerNet evaluator on the same files.
    official = pytest.importorskip("SoccerNet.Evaluation.MV_FoulRecognition", reason="SoccerNet not installed")
    expected = official.evaluate(metrics["ground_truth"], str(out / "predictions_valid.json"))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, nan_ok=True)


def test_evaluate_refuses_a_group_option_and_a_bad_checkpoint_in_one_line(trained_run, tmp_path, cache_dir):
    last = trained_run / "checkpoints" / "last.ckpt"
    group = run_command(evaluate_command(f"ckpt_path={last}", "model=resnet3d"), cwd=tmp_path, cache=cache_dir)
    missing = run_command(evaluate_command(f"ckpt_path={tmp_path / 'nope.ckpt'}"), cwd=tmp_path, cache=cache_dir)
    for result, text in ((group, "a group option cannot change a trained model"), (missing, "is not a file")):
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert text in result.stderr


def test_the_challenge_split_gets_predictions_and_no_metrics(tmp_path, cache_dir, real_sample):
    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "Valid")
    for action in sorted((real_sample / "Test").glob("action_*")):  # clips only, no labels
        shutil.copytree(action, data / "Chall" / action.name)
    train = run_command(
        train_command(f"dataset.data_dir={data}", "model=tiny", "system=cpu", "sampling=none", "freezing=none",
                      "dataset.frame_size=32", "dataset.batch_size=2", "training.max_epochs=1",
                      "training.warmup_epochs=0", "experiment.name=real"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    run = only_run(tmp_path / "outputs" / "real")
    assert not (run / "predictions_test.json").exists()  # no Test split: nothing to test after fit

    result = run_command(evaluate_command(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "split=chall"),
                         cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(no labels: no metrics)" in result.stdout
    out = only_run(tmp_path / "outputs" / "evaluate")
    predictions = json.loads((out / "predictions_chall.json").read_text())
    assert sorted(predictions["Actions"], key=int) == ["0", "1", "2", "3", "4"]
    assert not list(out.glob("metrics_*")) and not list(out.glob("confusion_*"))
