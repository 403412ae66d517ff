"""Clip transforms, the multi-view dataset and its padding collate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import REAL_SAMPLE
from mvfoul.data.annotations import Action, read_soccernet_split
from mvfoul.data.dataset import MultiViewClipDataset, collate_views
from mvfoul.data.frames import ClipLoader, LoadedClip
from mvfoul.data.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    ClipTransformConfig,
    build_clip_transform,
)
from mvfoul.data.video import window_frame_indices
from mvfoul.errors import DataError
from mvfoul.labels import OfficialLabels

WINDOW = window_frame_indices(63, 87, 17)


def _random_clip(frames: int = 4, height: int = 64, width: int = 112) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (frames, height, width, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


# --- transforms ----------------------------------------------------------------------------


def test_default_resize_is_eight_sevenths_of_the_frame():
    assert ClipTransformConfig(frame_size=224).effective_resize_size == 256
    assert ClipTransformConfig(frame_size=112).effective_resize_size == 128
    assert ClipTransformConfig(frame_size=224, resize_size=240).effective_resize_size == 240


@pytest.mark.parametrize("train", [False, True])
def test_output_shape_dtype_and_layout(train):
    cfg = ClipTransformConfig(frame_size=32, augment=True)
    out = build_clip_transform(cfg, train=train)(_random_clip(frames=5))
    assert out.shape == (3, 5, 32, 32)  # [C, T, H, W]
    assert out.dtype == torch.float32


def test_constant_clip_is_normalised_with_kinetics_statistics():
    rgb = (200, 100, 30)
    clip = torch.tensor(rgb, dtype=torch.uint8).expand(3, 48, 80, 3).contiguous()
    out = build_clip_transform(ClipTransformConfig(frame_size=32), train=False)(clip)
    for c in range(3):
        expected = (rgb[c] / 255 - KINETICS_MEAN[c]) / KINETICS_STD[c]
        assert torch.allclose(out[c], torch.full_like(out[c], expected), atol=1e-5)


def test_eval_is_a_centre_crop_of_the_short_side_resize():
    # Left half black, right half white: a centre square crop keeps both halves side by side
    # and does not squash the frame.
    clip = torch.zeros(2, 64, 128, 3, dtype=torch.uint8)
    clip[:, :, 64:] = 255
    cfg = ClipTransformConfig(frame_size=56, resize_size=64, mean=(0, 0, 0), std=(1, 1, 1))
    out = build_clip_transform(cfg, train=False)(clip)
    assert torch.all(out[:, :, :, :27] == 0) and torch.all(out[:, :, :, 29:] == 1)


def test_train_without_augment_is_the_eval_path():
    clip = _random_clip()
    cfg = ClipTransformConfig(frame_size=32, augment=False)
    torch.manual_seed(0)
    train_out = build_clip_transform(cfg, train=True)(clip)
    assert torch.equal(train_out, build_clip_transform(cfg, train=False)(clip))


def test_train_geometry_matches_eval_and_flip_mirrors_it():
    # Full-area crop, certain flip, no jitter: train = eval mirrored left-right.
    cfg = ClipTransformConfig(
        frame_size=32,
        resize_size=32,
        augment=True,
        hflip_prob=1.0,
        crop_scale_min=1.0,
        color_jitter=0.0,
    )
    clip = _random_clip()
    train_out = build_clip_transform(cfg, train=True)(clip)
    eval_out = build_clip_transform(cfg, train=False)(clip)
    assert torch.allclose(train_out, eval_out.flip(-1), atol=1e-6)


def test_augmentation_draws_once_per_clip_not_per_frame():
    cfg = ClipTransformConfig(frame_size=32, augment=True, color_jitter=0.4, crop_scale_min=0.5)
    transform = build_clip_transform(cfg, train=True)
    still = _random_clip(frames=1).expand(8, -1, -1, -1).contiguous()  # 8 identical frames

    outputs = []
    for seed in range(4):
        torch.manual_seed(seed)
        out = transform(still)
        # Same crop, flip and colour on every frame: the frames stay identical.
        assert torch.equal(out, out[:, :1].expand_as(out))
        outputs.append(out)
    # ... while the draws do differ between clips (the augmentation is really on).
    assert any(not torch.allclose(outputs[0], other) for other in outputs[1:])


def test_transform_rejects_channels_first_or_float_input():
    transform = build_clip_transform(ClipTransformConfig(frame_size=32), train=False)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        transform(_random_clip().permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="uint8"):
        transform(_random_clip().float())


# --- dataset and collate with a stand-in decoder (no I/O) ----------------------------------


class _FakeDecoder:
    """Frames filled with the clip's number (clip_<n>), so a sample shows which views it drew.
    Clips listed in ``broken`` fail as a damaged file would."""

    def __init__(self, padded: int = 0, broken: Sequence[str] = ()) -> None:
        self.calls = 0
        self.padded = padded
        self.broken = set(broken)

    def __call__(self, path: str | Path) -> LoadedClip:
        self.calls += 1
        if str(path) in self.broken:
            raise DataError(f"video {path} is empty (0 bytes); re-download it")
        value = int(Path(path).stem.split("_")[1])
        frames = torch.full((len(WINDOW), 8, 8, 3), value, dtype=torch.uint8)
        return LoadedClip(frames=frames, padded=self.padded, cached=False)


def _identity_transform(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(3, 0, 1, 2).float()  # [C, T, H, W], values kept readable


def _action(action_id: str, views: int, labelled: bool = True) -> Action:
    labels = OfficialLabels("Holding", "Offence", "3.0", 2, 3, 2) if labelled else None
    clips = tuple(Path(f"/nowhere/action_{action_id}/clip_{k}.mp4") for k in range(views))
    return Action(action_id, clips, labels)


def _views_drawn(sample: dict) -> list[int]:
    return [int(v) for v in sample["video"][:, 0, 0, 0, 0].tolist()]


def test_construction_reads_nothing():
    decoder = _FakeDecoder()
    dataset = MultiViewClipDataset([_action("0", 3)], decoder, _identity_transform, None)
    assert len(dataset) == 1 and decoder.calls == 0


def test_views_per_sample_draws_distinct_random_views_reproducibly():
    dataset = MultiViewClipDataset(
        [_action("0", 4)], _FakeDecoder(), _identity_transform, views_per_sample=2
    )
    torch.manual_seed(123)
    draws = [_views_drawn(dataset[0]) for _ in range(20)]
    assert all(len(d) == 2 and d[0] < d[1] for d in draws)  # distinct, in annotation order
    assert len({tuple(d) for d in draws}) > 1  # random, not always the same pair
    torch.manual_seed(123)
    assert [_views_drawn(dataset[0]) for _ in range(20)] == draws  # seeded -> same draws


def test_fewer_views_than_requested_uses_all_and_none_means_all():
    decoder = _FakeDecoder()
    few = MultiViewClipDataset([_action("0", 2)], decoder, _identity_transform, 3)
    assert _views_drawn(few[0]) == [0, 1]
    every = MultiViewClipDataset([_action("0", 4)], decoder, _identity_transform, None)
    assert _views_drawn(every[0]) == [0, 1, 2, 3]


def test_sample_carries_labels_padding_count_and_unlabelled_minus_one():
    decoder = _FakeDecoder(padded=2)
    actions = [_action("7", 3), _action("8", 2, labelled=False)]
    dataset = MultiViewClipDataset(actions, decoder, _identity_transform, None)
    labelled, unlabelled = dataset[0], dataset[1]
    assert (labelled["offence_severity"], labelled["action"], labelled["action_id"]) == (2, 3, "7")
    assert labelled["num_padded_frames"] == 6  # 2 per view, 3 views
    assert (unlabelled["offence_severity"], unlabelled["action"]) == (-1, -1)


def test_collate_pads_views_with_zeros_and_masks_them():
    actions = [_action("0", 2), _action("1", 4), _action("2", 3, labelled=False)]
    dataset = MultiViewClipDataset(actions, _FakeDecoder(1), _identity_transform, None)
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_views)
    batch = next(iter(loader))

    assert batch["video"].shape == (3, 4, 3, 16, 8, 8)  # [B, Vmax, C, T, H, W]
    assert batch["view_mask"].tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, True, True, False],
    ]
    assert torch.all(batch["video"][0, 2:] == 0) and torch.all(batch["video"][2, 3] == 0)
    assert batch["video"][1, 3].max() == 3  # the real 4th view of action 1 is not zeroed
    assert batch["offence_severity"].tolist() == [2, 2, -1]
    assert batch["action"].dtype == torch.long and batch["offence_severity"].dtype == torch.long
    assert batch["action_id"] == ["0", "1", "2"]
    assert batch["num_padded_frames"].tolist() == [2, 4, 3]


# --- the real fixture ----------------------------------------------------------------------


@pytest.fixture
def real_actions() -> list[Action]:
    split = REAL_SAMPLE / "Test"
    if not (split / "annotations.json").is_file():
        pytest.skip(f"real fixture absent: {split}")
    actions, _ = read_soccernet_split(split)
    return actions


def test_real_fixture_eval_batch(real_actions):
    transform = build_clip_transform(ClipTransformConfig(frame_size=32), train=False)
    dataset = MultiViewClipDataset(
        real_actions, ClipLoader(WINDOW, 36), transform, views_per_sample=None
    )
    batch = collate_views([dataset[i] for i in range(len(dataset))])

    view_counts = [len(a.clips) for a in real_actions]  # [3, 3, 3, 2, 3]
    assert batch["video"].shape == (5, max(view_counts), 3, 16, 32, 32)
    assert batch["video"].dtype == torch.float32
    assert batch["view_mask"].sum(dim=1).tolist() == view_counts
    for b, count in enumerate(view_counts):
        assert torch.all(batch["video"][b, count:] == 0)
        assert all(batch["video"][b, v].abs().sum() > 0 for v in range(count))  # real pixels
    assert batch["action_id"] == [a.action_id for a in real_actions]
    assert batch["offence_severity"].tolist() == [a.labels.offence_severity for a in real_actions]
    assert batch["action"].tolist() == [a.labels.action for a in real_actions]
    assert batch["num_padded_frames"].tolist() == [0] * 5


def test_real_fixture_train_draws_requested_views(real_actions):
    cfg = ClipTransformConfig(frame_size=32, augment=True)
    dataset = MultiViewClipDataset(
        real_actions[3:],
        ClipLoader(WINDOW, cfg.effective_resize_size),
        build_clip_transform(cfg, train=True),
        2,
    )
    torch.manual_seed(0)
    batch = collate_views([dataset[0], dataset[1]])
    assert batch["video"].shape == (2, 2, 3, 16, 32, 32)
    assert batch["view_mask"].all()


# --- unreadable views: raise, or skip and report ------------------------------------------


def test_a_broken_view_raises_by_default():
    decoder = _FakeDecoder(broken=["/nowhere/action_0/clip_1.mp4"])
    dataset = MultiViewClipDataset([_action("0", 3)], decoder, _identity_transform, None)
    with pytest.raises(DataError, match="clip_1.mp4"):
        dataset[0]


def test_skip_replaces_a_broken_view_with_another_view_of_the_same_action():
    broken = [f"/nowhere/action_0/clip_{k}.mp4" for k in (0, 1)]
    dataset = MultiViewClipDataset(
        [_action("0", 4)], _FakeDecoder(broken=broken), _identity_transform, 2, "skip"
    )
    for seed in range(10):
        torch.manual_seed(seed)
        sample = dataset[0]
        assert sorted(_views_drawn(sample)) == [2, 3]  # always two readable views
        assert all("clip_0" in f or "clip_1" in f for f in sample["faults"])


def test_skip_leaves_out_broken_views_in_evaluation_and_drops_an_action_with_none_left():
    decoder = _FakeDecoder(
        broken=[
            "/nowhere/action_0/clip_1.mp4",
            "/nowhere/action_1/clip_0.mp4",
            "/nowhere/action_1/clip_1.mp4",
        ]
    )
    dataset = MultiViewClipDataset(
        [_action("0", 3), _action("1", 2), _action("2", 2)],
        decoder,
        _identity_transform,
        None,
        "skip",
    )
    batch = collate_views([dataset[i] for i in range(3)])
    assert batch["action_id"] == ["0", "2"]  # action 1 had no readable view
    assert batch["dropped_action_ids"] == ["1"]
    assert batch["view_mask"].sum(dim=1).tolist() == [2, 2]
    assert len(batch["faults"]) == 3
    # A batch made only of dropped actions has no video: the training loop skips it.
    empty = collate_views([dataset[1]])
    assert empty["video"] is None and empty["dropped_action_ids"] == ["1"]


@pytest.mark.parametrize("height, width", [(224, 398), (720, 1280), (90, 160)])
def test_clips_of_any_resolution_become_the_same_training_square(height, width):
    from mvfoul.data.transforms import prepare_frames

    frames = _random_clip(frames=2, height=height, width=width)
    square = prepare_frames(frames, 64)
    assert square.shape == (2, 64, 64, 3) and square.dtype == torch.uint8
    out = build_clip_transform(ClipTransformConfig(frame_size=56, resize_size=64), train=False)(
        frames
    )
    assert out.shape == (3, 2, 56, 56)
