"""DDP, for real: two CPU processes talking over gloo (``system=cpu_ddp``), run as a user runs them."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, REPORT_FILES, SMALL_SYNTHETIC, run_command, train_command
from mvfoul.data.sampling import ClassBalancedSampler, EpochShuffleSampler
from mvfoul.data.sharding import RankShare, evaluation_share

SCRIPTS = Path(__file__).parent / "scripts"
DDP = ["--config-name", "quick_test", "system=cpu_ddp", *SMALL_SYNTHETIC, "dataset.num_workers=0"]


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml"))


# --- each rank's share -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClassBalancedSampler(
            np.repeat(np.arange(4), [30, 140, 117, 3]), 4, 2.0, num_samples=101, seed=5
        ),
        lambda: EpochShuffleSampler(101, seed=5),
    ],
    ids=["balanced", "uniform"],
)
def test_ranks_take_disjoint_shares_of_one_draw_whatever_the_world_size(make):
    reference = make()
    reference.set_epoch(3)
    draw = list(reference)
    for world_size in (1, 2, 3, 4):
        shares = []
        for rank in range(world_size):
            share = RankShare(make(), rank, world_size)
            share.set_epoch(3)
            shares.append(list(share))
        usable = len(draw) - len(draw) % world_size
        assert all(
            len(s) == usable // world_size == len(RankShare(make(), 0, world_size)) for s in shares
        )
        interleaved = [shares[i % world_size][i // world_size] for i in range(usable)]
        assert interleaved == draw[:usable]  # the same draw, cut into disjoint shares
        seeds = [d.seed for s in shares for d in s]
        assert len(set(seeds)) == len(seeds)  # every rank's views and augmentation differ


def test_evaluation_shares_cover_every_action_exactly_once():
    for size in (7, 8, 30):
        for world_size in (1, 2, 3):
            shares = [list(evaluation_share(size, rank, world_size)) for rank in range(world_size)]
            assert sorted(i for s in shares for i in s) == list(
                range(size)
            )  # nothing padded, nothing twice


# --- two processes -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_in_one_folder_and_validate_like_one_process(tmp_path, cache_dir):
    # 7 validation actions: a padding sampler would count one of them twice.
    result = run_command(
        train_command(
            *DDP, "dataset.synthetic.num_valid=7", "training.max_epochs=2", "experiment.name=ddp"
        ),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "world size 2: 2 CPU process(es) per node x 1 node(s), strategy ddp (gloo)" in output
    assert output.count("Validation metrics") == 1  # rank zero speaks

    (run,) = run_folders(tmp_path / "outputs" / "ddp")
    written = sorted(p.name for p in run.iterdir())
    assert written == sorted(
        [
            ".hydra",
            ".mvfoul.lock",
            "checkpoints",
            "csv",
            "tensorboard",
            "summary.json",
            "training_curves.png",
            "train_hydra.log",
            "train_ddp_process_1.log",  # each process's own console log
            *[f.format(s="test") for f in REPORT_FILES],
        ]
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2
    with open(run / "csv" / "metrics.csv", newline="") as f:
        assert (
            len([r for r in csv.DictReader(f) if r.get("val/sev_acc")]) == 2
        )  # one row per epoch, not per rank

    # One process evaluating the final weights on the same split gives the metrics the two logged.
    evaluated = run_command(
        [
            str(REPO_ROOT / "evaluate_hydra.py"),
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "split=valid",
            "hydra.run.dir=evaluated",
        ],
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "valid: 7 actions predicted" in evaluated.stdout
    metrics = json.loads((tmp_path / "evaluated" / "metrics_valid.json").read_text())
    logged = summary["history"]["1"]
    for ours, theirs in [
        ("accuracy_offence_severity", "val/sev_acc"),
        ("accuracy_action", "val/action_acc"),
        ("balanced_accuracy_offence_severity", "val/sev_bacc"),
        ("balanced_accuracy_action", "val/action_bacc"),
        ("leaderboard_value", "val/leaderboard"),
    ]:
        if (
            metrics[ours] is None
        ):  # a class absent from the split: null in strict JSON, NaN when logged
            assert logged[theirs] is None or math.isnan(logged[theirs]), theirs
        else:
            assert metrics[ours] == pytest.approx(logged[theirs], abs=1e-3), theirs


@pytest.mark.slow
def test_unfreezing_keeps_the_replicas_identical(tmp_path, cache_dir):
    """Blocks unfrozen after DDP wrapped the model still have their gradients averaged: the two
    processes hold the same parameters after every unfreeze and at the end."""
    env = {**os.environ, "MVFOUL_CACHE_DIR": str(cache_dir)}
    args = [
        sys.executable,
        str(SCRIPTS / "unfreeze_ddp.py"),
        str(tmp_path),
        "system=cpu_ddp",
        "freezing=progressive",
        "freezing.unfreeze_schedule=[1,2]",
        "freezing.unfreeze_blocks=2",
        "training.max_epochs=3",
        "dataset.num_workers=0",
        "experiment.test_after_fit=false",
        *SMALL_SYNTHETIC,
    ]
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert [line.split()[0] for line in ranks[0]] == ["epoch0", "epoch1", "epoch2", "end"]
    assert ranks[0] == ranks[1]
    assert len({line.split()[1] for line in ranks[0]}) == 4  # and they did train


@pytest.mark.slow
def test_a_batch_with_every_action_dropped_on_one_rank_does_not_hang(
    tmp_path, cache_dir, real_sample
):
    data = tmp_path / "mvfouls"
    shutil.copytree(real_sample / "Test", data / "Train")
    for clip in (data / "Train" / "action_0").glob("clip_*.mp4"):
        clip.write_bytes(b"")  # every view of action 0 unreadable
    os.symlink(real_sample / "Test", data / "Valid")
    result = run_command(
        train_command(
            f"dataset.data_dir={data}",
            "model=tiny",
            "system=cpu_ddp",
            "sampling=none",
            "freezing=none",
            "dataset.frame_size=32",
            "dataset.batch_size=1",
            "dataset.num_workers=0",
            "dataset.on_decode_error=skip",
            "training.max_epochs=3",
            "training.warmup_epochs=0",
            "experiment.name=real",
        ),
        cwd=tmp_path,
        cache=cache_dir,
        timeout=420,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path / "outputs" / "real")
    with open(run / "csv" / "metrics.csv", newline="") as f:
        dropped = [
            float(r["train/data_dropped_actions"])
            for r in csv.DictReader(f)
            if r.get("train/data_dropped_actions")
        ]
    assert sum(dropped) >= 1  # one rank met the empty batch while the other trained on


@pytest.mark.slow
def test_a_multirun_with_ddp_runs_every_job_exactly_once(tmp_path, cache_dir):
    result = run_command(
        train_command(
            "--multirun",
            *DDP,
            "training.max_epochs=1",
            "experiment.test_after_fit=false",
            "training.learning_rate=1e-3,2e-3",
            "experiment.name=sweep",
        ),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = run_folders(tmp_path / "multirun")
    assert [j.name for j in jobs] == ["0", "1"] and len(
        {j.parent for j in jobs}
    ) == 1  # one sweep, two jobs
    rates = []
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["epochs_completed"] == 1
        assert (job / "train_ddp_process_1.log").is_file()  # its second process ran in its folder
        rates.append(
            yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["training"][
                "learning_rate"
            ]
        )
    assert sorted(rates) == [1e-3, 2e-3]
