"""Evaluation as a user runs it: after training, evaluate_hydra.py on a checkpoint, the
challenge split, and agreement with the official SoccerNet evaluator.

One evaluation runs as a real command; the others run the same scripts in this process
(``run_here``: the script as ``__main__``, with Hydra and the one-line error reporting), which
checks the same behaviour without starting a new interpreter for each."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from conftest import (
    REAL_TINY_RUN,
    REPO_ROOT,
    REPORT_FILES,
    SMALL_SYNTHETIC,
    clean_process_state,
    run_command,
    run_here,
    train_command,
)

pytestmark = pytest.mark.slow


def evaluate_command(*overrides: str) -> list[str]:
    return [str(REPO_ROOT / "evaluate_hydra.py"), *overrides]


def only_run(root: Path) -> Path:
    (run,) = sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir, small_synthetic_built) -> Path:
    """A tiny quick_test run on the small built-in dataset, tested after fit."""
    workdir = tmp_path_factory.mktemp("trained")
    with clean_process_state():
        result = run_here(
            train_command(
                "--config-name",
                "quick_test",
                *SMALL_SYNTHETIC,
                "training.max_epochs=2",
                "experiment.name=tiny",
            ),
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
        assert (entry["Offence"], entry["Severity"]) in {
            ("No offence", ""),
            ("Offence", "1.0"),
            ("Offence", "3.0"),
            ("Offence", "5.0"),
        }


def test_evaluate_hydra_writes_every_file_and_matches_training_and_the_official_evaluator(
    trained_run, tmp_path, cache_dir
):
    last = trained_run / "checkpoints" / "last.ckpt"
    result = run_command(
        evaluate_command(f"ckpt_path={last}", "split=valid", "dataset.eval_batch_size=3"),
        cwd=tmp_path,
        cache=cache_dir,
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
    for ours, logged in [
        ("leaderboard_value", "val/leaderboard"),
        ("balanced_accuracy_action", "val/action_bacc"),
        ("accuracy_offence_severity", "val/sev_acc"),
    ]:
        assert metrics[ours] == pytest.approx(last_epoch[logged], abs=1e-3) or (
            math.isnan(metrics[ours]) and math.isnan(last_epoch[logged])
        )

    # And the official SoccerNet evaluator on the same files.
    official = pytest.importorskip(
        "SoccerNet.Evaluation.MV_FoulRecognition", reason="SoccerNet not installed"
    )
    expected = official.evaluate(metrics["ground_truth"], str(out / "predictions_valid.json"))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, nan_ok=True)


def test_evaluate_refuses_a_group_option_and_a_bad_checkpoint_in_one_line(
    trained_run, tmp_path, run_in_process
):
    last = trained_run / "checkpoints" / "last.ckpt"
    group = run_in_process(evaluate_command(f"ckpt_path={last}", "model=resnet3d"))
    missing = run_in_process(evaluate_command(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    for result, text in (
        (group, "a group option cannot change a trained model"),
        (missing, "is not a file"),
    ):
        assert text in one_error_line(result)


def test_the_challenge_split_gets_predictions_and_no_metrics(tmp_path, real_sample, run_in_process):
    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "Valid")
    for action in sorted((real_sample / "Test").glob("action_*")):  # clips only, no labels
        shutil.copytree(action, data / "Chall" / action.name)
    train = run_in_process(
        train_command(
            f"dataset.data_dir={data}",
            *REAL_TINY_RUN,
        )
    )
    assert train.returncode == 0, train.stderr[-3000:]
    run = only_run(tmp_path / "outputs" / "real")
    assert not (run / "predictions_test.json").exists()  # no Test split: nothing to test after fit

    result = run_in_process(
        evaluate_command(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "split=chall")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(no labels: no metrics)" in result.stdout
    out = only_run(tmp_path / "outputs" / "evaluate")
    predictions = json.loads((out / "predictions_chall.json").read_text())
    assert sorted(predictions["Actions"], key=int) == ["0", "1", "2", "3", "4"]
    assert not list(out.glob("metrics_*")) and not list(out.glob("confusion_*"))


# --- the usual mistakes: one line each, never a traceback, never a misapplied override --------------


def one_error_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mvfoul: error: ")
    return lines[0]


def test_evaluate_without_a_checkpoint_says_how_to_give_one(run_in_process):
    line = one_error_line(run_in_process(evaluate_command()))
    assert "ckpt_path: missing" in line and "python evaluate_hydra.py ckpt_path=" in line


def damaged_checkpoints(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its one line must say)."""
    import pickle

    import torch

    class Payload:  # unpickling it would run code
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'unpickled'}",))

    files = {
        "empty": (folder / "empty.ckpt", "is empty (0 bytes)"),
        "truncated": (folder / "truncated.ckpt", "is truncated or damaged"),
        "random": (folder / "random.ckpt", "is not a checkpoint"),
        "unsafe": (folder / "unsafe.ckpt", "will not unpickle it (unsafe"),
        "plain pickle": (folder / "pickle.ckpt", "is a plain pickle"),
    }
    files["empty"][0].write_bytes(b"")
    files["truncated"][0].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["random"][0].write_bytes(os.urandom(4096))
    torch.save({"state_dict": {}, "hyper_parameters": {"config": Payload()}}, files["unsafe"][0])
    files["plain pickle"][0].write_bytes(pickle.dumps({"state_dict": {}}))
    return files


def test_damaged_or_unsafe_checkpoints_are_one_line_and_never_unpickled(
    trained_run, tmp_path, run_in_process
):
    from mvfoul.errors import MvfoulError
    from mvfoul.evaluation.evaluate import load_checkpoint

    files = damaged_checkpoints(tmp_path, trained_run / "checkpoints" / "last.ckpt")
    for name, (path, expected) in files.items():
        with pytest.raises(MvfoulError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert expected in message and str(path) in message, name
        assert "weights_only=False" not in message and "\n" not in message
    # As a user meets it: one line, nothing executed.
    result = run_in_process(evaluate_command(f"ckpt_path={files['unsafe'][0]}"))
    assert "will not unpickle it" in one_error_line(result)
    assert not (tmp_path / "unpickled").exists()


def rewritten(checkpoint: Path, target: Path, change) -> Path:
    import torch

    data = torch.load(checkpoint, weights_only=True)
    change(data)
    torch.save(data, target)
    return target


def test_an_older_schema_or_a_config_that_disagrees_with_its_weights_is_one_line(
    trained_run, tmp_path, run_in_process
):
    last = trained_run / "checkpoints" / "last.ckpt"
    no_window = rewritten(
        last,
        tmp_path / "old.ckpt",
        lambda d: d["hyper_parameters"]["config"]["dataset"].pop("start_frame"),
    )
    no_config = rewritten(last, tmp_path / "bare.ckpt", lambda d: d.pop("hyper_parameters"))
    other_net = rewritten(
        last,
        tmp_path / "wider.ckpt",
        lambda d: d["hyper_parameters"]["config"]["model"].update(shared_dim=64),
    )
    expectations = {
        no_window: f"ckpt_path: {no_window}: its config has no dataset.start_frame (written by an older mvfoul)",
        no_config: f"ckpt_path: {no_config} has no 'hyper_parameters.config'",
        other_net: f"ckpt_path: {other_net}: its weights do not fit the model its config describes (model.backbone=tiny)",
    }
    for path, expected in expectations.items():
        line = one_error_line(run_in_process(evaluate_command(f"ckpt_path={path}")))
        assert expected in line, line


def test_model_overrides_are_refused_and_input_overrides_warned_about(trained_run, run_in_process):
    last = trained_run / "checkpoints" / "last.ckpt"
    refused = one_error_line(
        run_in_process(evaluate_command(f"ckpt_path={last}", "model.pooling=mean"))
    )
    assert "model.pooling=mean: a model key cannot change a trained model" in refused

    result = run_in_process(
        evaluate_command(f"ckpt_path={last}", "split=valid", "dataset.frame_size=32")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [
        ln
        for ln in (result.stdout + result.stderr).splitlines()
        if "another input than the model was trained on" in ln
    ]
    assert len(warnings) == 1 and "dataset.frame_size=32 (trained with 48)" in warnings[0]


def test_a_built_in_data_checkpoint_reads_real_clips_from_the_folder_given(
    trained_run, tmp_path, real_sample, run_in_process
):
    data = tmp_path / "real"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Test")
    before = sorted(p.name for p in data.iterdir())
    result = run_in_process(
        evaluate_command(
            f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", f"dataset.data_dir={data}"
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test: 5 actions predicted" in result.stdout  # the five real actions, not generated ones
    assert (
        sorted(p.name for p in data.iterdir()) == before
    )  # nothing generated into the user's folder


def test_metrics_files_are_strict_json(trained_run):
    text = (trained_run / "metrics_test.json").read_text()

    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    metrics = json.loads(text, parse_constant=refuse)
    assert set(metrics) >= {"leaderboard_value", "balanced_accuracy_action"}
    json.loads((trained_run / "summary.json").read_text(), parse_constant=refuse)


def test_a_checkpoint_records_its_input_normalisation_and_evaluation_feeds_the_same(
    trained_run, caplog
):
    import torch

    from mvfoul.data.transforms import KINETICS_MEAN, KINETICS_STD
    from mvfoul.evaluation.evaluate import checkpoint_config

    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    recorded = checkpoint["hyper_parameters"]["config"]["dataset"]
    assert (recorded["mean"], recorded["std"]) == (
        list(KINETICS_MEAN),
        list(KINETICS_STD),
    )  # the tiny backbone's

    recorded.update(
        mean=[0.1, 0.2, 0.3], std=[0.3, 0.2, 0.1]
    )  # whatever a run used is what evaluation uses
    config = checkpoint_config(checkpoint, Path("run.ckpt"))
    assert (config["dataset"]["mean"], config["dataset"]["std"]) == (
        [0.1, 0.2, 0.3],
        [0.3, 0.2, 0.1],
    )

    del recorded["mean"], recorded["std"]  # a run from before per-backbone statistics
    with caplog.at_level("INFO"):
        config = checkpoint_config(checkpoint, Path("old.ckpt"))
    assert (config["dataset"]["mean"], config["dataset"]["std"]) == (
        list(KINETICS_MEAN),
        list(KINETICS_STD),
    )
    assert "records no input normalisation (an older run)" in caplog.text
