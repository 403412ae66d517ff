"""Data loading: the frame cache, its build command, loader seeding, the challenge split."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, compose_config, run_command
from mvfoul.data.annotations import read_soccernet_split
from mvfoul.data.dataset import MultiViewClipDataset, collate_views
from mvfoul.data.frames import ClipLoader
from mvfoul.data.transforms import ClipTransformConfig, build_clip_transform, prepare_frames
from mvfoul.data.video import decode_frames, window_frame_indices
from mvfoul.errors import DataError

WINDOW = tuple(window_frame_indices(63, 87, 17))
SQUARE = 64


@pytest.fixture
def clip(real_sample, tmp_path) -> Path:
    """A private copy of a real clip, so the test may change it."""
    target = tmp_path / "action_0" / "clip_0.mp4"
    target.parent.mkdir()
    shutil.copy(real_sample / "Test" / "action_0" / "clip_0.mp4", target)
    return target


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.npy"))


def test_cached_frames_equal_decoded_and_resized_frames(clip, tmp_path):
    loader = ClipLoader(WINDOW, SQUARE, decoder="pyav", cache_dir=tmp_path / "cache")
    first = loader(clip)
    again = loader(clip)
    expected = prepare_frames(decode_frames(clip, WINDOW, backend="pyav").frames, SQUARE)
    assert (first.cached, again.cached) == (False, True)
    assert first.frames.shape == (16, SQUARE, SQUARE, 3) and first.frames.dtype == torch.uint8
    assert torch.equal(first.frames, expected) and torch.equal(again.frames, expected)
    assert len(entries(tmp_path / "cache")) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave nothing behind


def test_a_changed_file_or_window_or_size_never_reads_stale_frames(clip, real_sample, tmp_path):
    cache_dir = tmp_path / "cache"
    ClipLoader(WINDOW, SQUARE, "pyav", cache_dir)(clip)

    other_window = tuple(window_frame_indices(40, 64, 17))
    assert not ClipLoader(other_window, SQUARE, "pyav", cache_dir)(clip).cached
    assert not ClipLoader(WINDOW, SQUARE + 16, "pyav", cache_dir)(clip).cached

    # Replace the file with another clip (new size and mtime): a miss, and the new pixels.
    shutil.copy(real_sample / "Test" / "action_1" / "clip_0.mp4", clip)
    reloaded = ClipLoader(WINDOW, SQUARE, "pyav", cache_dir)(clip)
    assert not reloaded.cached
    assert torch.equal(
        reloaded.frames, prepare_frames(decode_frames(clip, WINDOW, backend="pyav").frames, SQUARE)
    )

    # Same bytes, touched: the identity includes the modification time, so it misses too.
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not ClipLoader(WINDOW, SQUARE, "pyav", cache_dir)(clip).cached
    assert len(entries(cache_dir)) == 5


def test_padding_count_survives_the_cache(clip, tmp_path):
    past_the_end = tuple(range(120, 136))  # the clip has 126 frames
    loader = ClipLoader(past_the_end, SQUARE, "pyav", tmp_path / "cache")
    assert loader(clip).padded == loader(clip).padded == 10


def test_a_missing_clip_is_a_data_error_through_the_cache(tmp_path):
    loader = ClipLoader(WINDOW, SQUARE, "pyav", tmp_path / "cache")
    with pytest.raises(DataError, match="not found"):
        loader(tmp_path / "nope.mp4")


def test_training_with_and_without_the_cache_sees_the_same_tensors(real_sample, tmp_path):
    actions, _ = read_soccernet_split(real_sample / "Test")
    cfg = ClipTransformConfig(frame_size=48, augment=True, color_jitter=0.3)
    transform = build_clip_transform(cfg, train=True)
    square = cfg.effective_resize_size

    hits: list[bool] = []

    def batches(cache_dir):
        loader = ClipLoader(WINDOW, square, "pyav", cache_dir)

        def load(path):
            clip = loader(path)
            hits.append(clip.cached)
            return clip

        dataset = MultiViewClipDataset(actions, load, transform, 2)
        torch.manual_seed(7)  # the same view draws and augmentation in every call
        return [collate_views([dataset[i] for i in range(len(dataset))]) for _ in range(2)]

    plain = batches(None)
    filling = batches(tmp_path / "cache")  # decodes and stores what it draws
    hits.clear()
    cached = batches(tmp_path / "cache")  # the same draws: all read from the cache
    assert hits and all(hits)
    for a, b, c in zip(plain, filling, cached):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["video"], c["video"])


def test_build_cache_command_fills_the_cache_and_reports_its_size(real_sample, tmp_path, cache_dir):
    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "Valid")
    frames = tmp_path / "frames"
    args = [
        str(REPO_ROOT / "build_cache.py"),
        f"dataset.data_dir={data}",
        f"dataset.cache_dir={frames}",
        "model=tiny",
        "model.pretrained=false",
        "dataset.frame_size=32",
        "--workers",
        "2",
        "--no-progress",
    ]
    first = run_command(args, cwd=tmp_path, cache=cache_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "14 clips (14 decoded now, 0 already cached)" in first.stdout
    assert re.search(r"already cached\), [0-9.]+ [kMG]?B, ", first.stdout)
    second = run_command(args, cwd=tmp_path, cache=cache_dir)
    assert "14 clips (0 decoded now, 14 already cached)" in second.stdout
    assert len(entries(frames)) == 14
    missing = run_command(
        [str(REPO_ROOT / "build_cache.py"), f"dataset.data_dir={data}"],
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert missing.returncode != 0 and "dataset.cache_dir: not set" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_seeded_loaders_give_the_same_augmented_batches_across_workers(real_sample, tmp_path):
    from mvfoul.data.datamodule import MultiViewDataModule

    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "Valid")
    cfg = compose_config(
        "config",
        [
            f"dataset.data_dir={data}",
            "dataset.frame_size=32",
            "dataset.num_workers=2",
            "dataset.batch_size=5",
            "dataset.persistent_workers=false",
            "dataset.decoder=pyav",
        ],
    )

    def first_batch(seed: int) -> torch.Tensor:
        dm = MultiViewDataModule(cfg.dataset, WINDOW, sampling=None, seed=seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))["video"]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_the_unlabelled_challenge_split_loads_for_prediction(real_sample, tmp_path):
    from mvfoul.data.datamodule import MultiViewDataModule

    chall = tmp_path / "mvfouls" / "CHALL"
    for action in sorted((real_sample / "Test").glob("action_*")):  # clips only, no annotations
        shutil.copytree(action, chall / action.name)
    cfg = compose_config(
        "config",
        [
            f"dataset.data_dir={tmp_path / 'mvfouls'}",
            "dataset.frame_size=32",
            "dataset.num_workers=0",
            "dataset.eval_batch_size=5",
        ],
    )
    dm = MultiViewDataModule(cfg.dataset, WINDOW)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["action_id"] == ["0", "1", "2", "3", "4"]
    assert batch["offence_severity"].tolist() == [-1] * 5 and batch["action"].tolist() == [-1] * 5
    assert batch["view_mask"].sum(dim=1).tolist() == [3, 3, 3, 2, 3]


# --- damaged cache entries ---------------------------------------------------------------------------


def _damage(entry: Path, how: str) -> None:
    import numpy as np

    if how == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif how == "bit flip":  # same shape and dtype, one pixel changed: only the checksum sees it
        array = np.load(entry)
        array.flat[12345] ^= 0xFF
        np.save(entry, array)
    elif how == "wrong shape":
        np.save(entry, np.zeros((16, SQUARE, SQUARE // 2, 3), dtype=np.uint8))
    elif how == "wrong dtype":
        np.save(entry, np.zeros((16, SQUARE, SQUARE, 3), dtype=np.float32))
    elif how == "record gone":
        entry.with_suffix(".json").unlink()
    elif how == "array gone":
        entry.unlink()


@pytest.mark.parametrize(
    "how", ["truncated", "bit flip", "wrong shape", "wrong dtype", "array gone"]
)
def test_a_damaged_cache_entry_is_decoded_again_counted_and_never_read(clip, tmp_path, how):
    loader = ClipLoader(WINDOW, SQUARE, "pyav", tmp_path / "cache")
    expected = loader(clip).frames
    (entry,) = entries(tmp_path / "cache")
    _damage(entry, how)

    repaired = loader(clip)
    assert not repaired.cached and repaired.repaired is not None and str(clip) in repaired.repaired
    assert torch.equal(repaired.frames, expected)
    again = loader(clip)  # rewritten: a clean hit from now on
    assert again.cached and again.repaired is None and torch.equal(again.frames, expected)


def test_an_entry_without_its_record_is_an_incomplete_write_not_damage(clip, tmp_path):
    loader = ClipLoader(WINDOW, SQUARE, "pyav", tmp_path / "cache")
    loader(clip)
    (entry,) = entries(tmp_path / "cache")
    _damage(entry, "record gone")
    reloaded = loader(clip)
    assert not reloaded.cached and reloaded.repaired is None  # a plain miss


def test_repairs_travel_with_the_batch_and_are_reported_each_epoch(clip, tmp_path):
    from mvfoul.data.annotations import Action
    from mvfoul.training.metrics import DataFaultTally

    loader = ClipLoader(WINDOW, SQUARE, "pyav", tmp_path / "cache")
    loader(clip)
    _damage(entries(tmp_path / "cache")[0], "bit flip")
    transform = build_clip_transform(ClipTransformConfig(frame_size=32), train=False)
    dataset = MultiViewClipDataset([Action("0", (clip,), None)], loader, transform, None)
    tally = DataFaultTally()
    tally.add(collate_views([dataset[0]]))
    assert tally.metrics("train")["train/data_cache_repaired"] == 1.0
    assert "1 damaged frame-cache entr(y/ies) decoded again" in tally.summary("train", 3)


# --- the same draws whatever loads them ---------------------------------------------------------------


def test_a_draw_is_the_same_in_any_worker_count_and_any_epoch_order(real_sample, tmp_path):
    """Augmentation and view choice come from each draw's own seed: 0 or 2 workers, the epoch
    reached directly (as a resumed run does) or after another, give the same tensors."""
    from mvfoul.data.datamodule import MultiViewDataModule

    data = tmp_path / "mvfouls"
    data.mkdir()
    os.symlink(real_sample / "Test", data / "Train")
    os.symlink(real_sample / "Test", data / "Valid")

    def epoch_batches(workers: int, epochs: list[int], first_epoch: int = 0) -> list[torch.Tensor]:
        cfg = compose_config(
            "config",
            [
                f"dataset.data_dir={data}",
                "dataset.frame_size=32",
                f"dataset.num_workers={workers}",
                "dataset.batch_size=5",
                "dataset.decoder=pyav",
            ],
        )
        dm = MultiViewDataModule(
            cfg.dataset, WINDOW, sampling=cfg.sampling, seed=3, first_epoch=first_epoch
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for epoch in epochs:
            dm.train_sampler.set_epoch(epoch)
            out.append(next(iter(loader))["video"])
        return out

    in_order = epoch_batches(0, [0, 1])
    assert torch.equal(epoch_batches(2, [0, 1])[1], in_order[1])
    assert torch.equal(epoch_batches(2, [1], first_epoch=1)[0], in_order[1])
    assert not torch.equal(in_order[0], in_order[1])


def test_pinned_memory_follows_the_configured_accelerator_not_the_machine(real_sample, monkeypatch):
    import lightning as L
    import torch

    from mvfoul.data.datamodule import MultiViewDataModule

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine...
    cfg = compose_config(
        "config",
        [f"dataset.data_dir={real_sample}", "dataset.frame_size=32", "dataset.num_workers=0"],
    )
    dm = MultiViewDataModule(cfg.dataset, WINDOW)
    dm.setup("test")
    assert dm.test_dataloader().pin_memory is False  # ...with no trainer: nothing to pin for
    dm.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert dm.test_dataloader().pin_memory is False  # ...training on its CPU
