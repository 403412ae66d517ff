"""The real commands, run as a user runs them: training, multirun, real video, checkpoints.

The quick_test run (and the offline W&B run, whose environment is the point) start
``python train_hydra.py``; the others run the same script in this process (``run_in_process``:
the script as ``__main__``, Hydra, run folders and the one-line errors included)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import REAL_TINY_RUN, SMALL_SYNTHETIC, compose_config, run_command, train_command

pytestmark = pytest.mark.slow

# quick_test on a smaller built-in dataset, so each run takes seconds.
QUICK = ["--config-name", "quick_test", *SMALL_SYNTHETIC]


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_quick_test_trains_validates_and_checkpoints(tmp_path, cache_dir):
    result = run_command(train_command(*QUICK), cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation metrics" in result.stdout and "val/leaderboard" in result.stdout

    (run_dir,) = run_folders(tmp_path / "outputs" / "quick_test")
    # The run folder holds the composed config and the overrides.
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "tiny" and saved["training"]["max_epochs"] == 2
    assert "dataset.frame_size=48" in yaml.safe_load(
        (run_dir / ".hydra" / "overrides.yaml").read_text()
    )

    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    names = [c.name for c in checkpoints]
    assert "last.ckpt" in names and "best.ckpt" in names
    assert any(n.startswith("epoch") and "-val_sev_acc-" in n for n in names)
    assert not any("=" in n for n in names)  # pasteable as a Hydra override
    # last.ckpt is the state after the latest epoch (for resuming), whichever epoch scored best.
    assert (
        torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    )  # epochs done

    rows = read_metrics(run_dir)
    val_rows = [r for r in rows if r.get("val/sev_acc")]
    assert len(val_rows) == 2  # one per epoch
    assert all(0.0 <= float(r["val/leaderboard"]) <= 100.0 for r in val_rows)
    assert any(r.get("train/loss") for r in rows) and any(r.get("train/loss_step") for r in rows)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    # The run can be reproduced exactly, and kept as a named config that composes the same.
    from mvfoul.paths import USER_CONFIGS_DIR
    from mvfoul.runs import keep_run, rerun_command

    assert rerun_command(run_dir) == "python train_hydra.py --config-name quick_test " + " ".join(
        SMALL_SYNTHETIC
    )
    name = f"kept_{os.getpid()}"
    kept = keep_run(run_dir, name)
    try:
        assert kept.parent == USER_CONFIGS_DIR
        assert OmegaConf.to_container(compose_config(name)) == saved
    finally:
        kept.unlink()

    # A checkpoint alone rebuilds the model: it carries the whole config.
    from mvfoul.training.module import MultiViewFoulModule

    best = run_dir / "checkpoints" / "best.ckpt"
    module = MultiViewFoulModule.from_checkpoint(best)
    assert module.cfg.dataset.frame_size == 48
    video = torch.zeros(1, 2, 3, 8, 48, 48)
    out = module.eval()(video, torch.tensor([[True, False]]))
    assert out["offence_severity"].shape == (1, 4) and out["action"].shape == (1, 8)


def test_multirun_runs_one_job_per_value_in_its_own_folder(tmp_path, run_in_process):
    result = run_in_process(
        train_command(
            "--multirun",
            *QUICK,
            "model=tiny,resnet3d",
            "model.pretrained=false",
            "training.max_epochs=1",
            "experiment.limit_train_batches=2",
            "experiment.limit_val_batches=1",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folders = run_folders(tmp_path / "multirun")
    assert len(folders) == 2
    backbones = sorted(
        yaml.safe_load((f / ".hydra" / "config.yaml").read_text())["model"]["backbone"]
        for f in folders
    )
    assert backbones == ["r3d_18", "tiny"]
    for folder in folders:
        assert (folder / "checkpoints" / "last.ckpt").is_file()


def test_single_gpu_preset_falls_back_to_cpu_with_one_warning(tmp_path, run_in_process):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: there is nothing to fall back from")
    result = run_in_process(
        train_command(*QUICK, "system=single_gpu", "experiment.fast_dev_run=true"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("no CUDA device") == 1


def real_layout(tmp_path: Path, real_sample: Path) -> Path:
    """A SoccerNet data folder whose Train and Valid are the five real actions."""
    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "valid")  # any case is found
    return data


def test_training_on_the_real_clips_in_the_soccernet_layout(tmp_path, run_in_process, real_sample):
    """The real reader and decoder inside a training run: the five real actions serve as both
    Train and Valid; the listed-but-missing clip is reported once per split, not fatal."""
    data = real_layout(tmp_path, real_sample)
    result = run_in_process(
        train_command(f"dataset.data_dir={data}", *REAL_TINY_RUN, "dataset.num_workers=0"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("kept 5 of 5 actions") == 2
    assert output.count("1 of 15 listed clips missing") == 2
    (run_dir,) = run_folders(tmp_path / "outputs" / "real")
    assert [r for r in read_metrics(run_dir) if r.get("val/sev_acc")]


def test_a_broken_clip_stops_the_run_with_one_line_naming_it(tmp_path, run_in_process, real_sample):
    """Decoding happens in a DataLoader worker; its error still reaches the user as one line."""
    data = tmp_path / "mvfouls"
    for split in ("Train", "Valid"):
        copy = data / split
        shutil.copytree(real_sample / "Test", copy)
        (copy / "action_0" / "clip_1.mp4").write_bytes(b"")  # a zero-byte download
    result = run_in_process(
        train_command(f"dataset.data_dir={data}", *REAL_TINY_RUN, "dataset.num_workers=1"),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("mvfoul: error: ")]
    assert "action_0/clip_1.mp4" in line and "empty (0 bytes)" in line


def test_a_run_with_every_optimisation_on_completes_and_records_them(tmp_path, run_in_process):
    result = run_in_process(
        train_command(
            *QUICK,
            "sampling=progressive",
            "freezing=progressive",
            "loss=focal",
            "loss.use_class_weights=true",
            "loss.label_smoothing=0.1",
            "freezing.unfreeze_schedule=[1,2]",
            "freezing.unfreeze_blocks=2",
            "sampling.progressive_end_epoch=2",
            "training.max_epochs=3",
            "experiment.name=all_on",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "class weights (offence_severity):" in output
    assert output.count("backbone LR boost") == 1
    assert output.count("loss.label_smoothing=0.1 switched off") == 1

    (run_dir,) = run_folders(tmp_path / "outputs" / "all_on")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["effective"]["loss.label_smoothing"]["effective"] == 0.0
    assert summary["epochs_completed"] == 3 and summary["best"]["epoch"] in (0, 1, 2)

    rows = read_metrics(run_dir)
    by_epoch = {}
    for row in rows:
        for key, value in row.items():
            if value and key.startswith(("sampling/", "freezing/")):
                by_epoch.setdefault(int(row["epoch"]), {})[key] = float(value)
    # The ramp: natural at epoch 0, halfway at 1, the capped target from epoch 2.
    assert [by_epoch[e]["sampling/balance_fraction"] for e in range(3)] == [0.0, 0.5, 1.0]
    red = [by_epoch[e]["sampling/sev/offence_red_card"] for e in range(3)]
    assert red[0] < red[1] < red[2]
    # Unfreezing: 0 blocks, then 2 (half: the boost), then all 4.
    assert [by_epoch[e]["freezing/trainable_blocks"] for e in range(3)] == [0.0, 2.0, 4.0]
    assert [by_epoch[e]["freezing/backbone_lr_boost"] for e in range(3)] == [0.0, 1.0, 0.0]


def test_skipping_a_broken_clip_trains_on_and_reports_it_every_epoch(
    tmp_path, run_in_process, real_sample
):
    data = tmp_path / "mvfouls"
    for split in ("Train", "Valid"):
        shutil.copytree(real_sample / "Test", data / split)
        (data / split / "action_0" / "clip_1.mp4").write_bytes(b"")  # a zero-byte download
    result = run_in_process(
        train_command(
            f"dataset.data_dir={data}",
            *REAL_TINY_RUN,
            "dataset.num_workers=1",
            "dataset.on_decode_error=skip",
            "training.max_epochs=2",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # Validation uses every view, so the broken one is met (and reported) in each epoch.
    assert output.count("val epoch 0: 1 unreadable view(s) skipped") == 1
    assert output.count("val epoch 1: 1 unreadable view(s) skipped") == 1
    assert "action_0/clip_1.mp4" in output
    (run_dir,) = run_folders(tmp_path / "outputs" / "real")
    skipped = [
        float(r["val/data_skipped_views"])
        for r in read_metrics(run_dir)
        if r.get("val/data_skipped_views")
    ]
    assert skipped == [1.0, 1.0]


def test_training_from_csv_annotations_with_a_frame_cache(tmp_path, run_in_process, real_sample):
    from mvfoul.data.csv_annotations import split_to_csv

    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Test")
    split_to_csv(data / "Test", data / "actions.csv")
    frames = tmp_path / "frames"
    result = run_in_process(
        train_command(
            f"dataset.data_dir={data}",
            *REAL_TINY_RUN,
            "dataset.train_csv=actions.csv",
            "dataset.val_csv=actions.csv",
            f"dataset.cache_dir={frames}",
            "dataset.num_workers=0",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("actions.csv: kept 5 of 5 actions") == 2
    assert len(list(frames.rglob("*.npy"))) == 14  # validation met every view


def test_weights_and_biases_logs_offline_without_credentials_or_network(tmp_path, cache_dir):
    pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[wandb]')")
    home = tmp_path / "home"  # no ~/.netrc, no cached login
    home.mkdir()
    env = {
        "HOME": str(home),
        "WANDB_API_KEY": "",
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "WANDB_DIR": "",
        "WANDB_MODE": "",
    }
    result = run_command(
        train_command(
            *QUICK,
            "experiment.use_wandb=true",
            "training.max_epochs=1",
            "experiment.limit_train_batches=2",
            "experiment.test_after_fit=false",
            "experiment.name=wandb",
        ),
        cwd=tmp_path,
        cache=cache_dir,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_folders(tmp_path / "outputs" / "wandb")
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
