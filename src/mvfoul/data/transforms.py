"""Frames of one view (uint8 ``[T, H, W, 3]``) -> a normalised float32 clip ``[C, T, S, S]``.

On a ``tv_tensors.Video`` torchvision.transforms.v2 draws its random parameters once per call:
every frame of a clip gets the same crop, flip and colour change. Training random-resized-crops
inside the centre square evaluation sees: on a whole 16:9 frame no square-ish crop covers >= 80%
(torchvision would fall back to a centre crop), and a squashed 16:9 crop distorts the players.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torchvision import tv_tensors
from torchvision.transforms import v2

from mvfoul.validate import Problems, cross_key_rule

# torchvision's R3D/R(2+1)D/MC3/S3D Kinetics-400 statistics: the default when a caller names none.
# Each backbone's own come from its weights (mvfoul.models.backbones.BACKBONES[name].mean/.std).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass
class ClipTransformConfig:
    frame_size: int
    resize_size: int | None = None  # None -> round(frame_size * 8 / 7): 256 for 224
    mean: tuple[float, ...] = KINETICS_MEAN
    std: tuple[float, ...] = KINETICS_STD
    augment: bool = False
    hflip_prob: float = 0.5
    crop_scale_min: float = 0.8  # smallest crop area, as a fraction of the centre square
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; 0 disables

    @property
    def effective_resize_size(self) -> int:
        return self.resize_size if self.resize_size is not None else round(self.frame_size * 8 / 7)


def prepare_frames(frames: torch.Tensor, resize_size: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> ``[T, R, R, 3]``: the short side resized to ``R``, then the centre
    square, whatever the clip's resolution; this is what the frame cache stores."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
        )
    if frames.shape[1] == resize_size and frames.shape[2] == resize_size:
        return frames
    video = frames.permute(0, 3, 1, 2)  # [T, C, H, W]
    video = v2.functional.resize(video, [resize_size], antialias=True)  # short side
    video = v2.functional.center_crop(video, [resize_size, resize_size])
    return video.permute(0, 2, 3, 1).contiguous()


def build_clip_transform(
    cfg: ClipTransformConfig, train: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[T, H, W, 3]`` (raw or prepared) -> normalised float32 ``[3, T, S, S]``; augmented
    when ``train`` and ``cfg.augment``."""
    resize = cfg.effective_resize_size
    steps: list[v2.Transform]
    if train and cfg.augment:
        # torchvision's default aspect ratios (3/4..4/3), relative to the square the crop is
        # cut from: resizing back to a square makes them a mild stretch.
        steps = [
            v2.RandomResizedCrop(cfg.frame_size, scale=(cfg.crop_scale_min, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=cfg.hflip_prob),
        ]
        if cfg.color_jitter > 0:
            jitter = cfg.color_jitter
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    else:
        steps = [v2.CenterCrop(cfg.frame_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=cfg.mean, std=cfg.std)]
    pipeline = v2.Compose(steps)

    def transform(frames: torch.Tensor) -> torch.Tensor:
        square = prepare_frames(frames, resize)
        out = pipeline(tv_tensors.Video(square.permute(0, 3, 1, 2)))  # [T, C, R, R]
        return out.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # [C, T, S, S]

    return transform


@cross_key_rule("dataset")
def check_input_shape(cfg: DictConfig, p: Problems) -> None:
    """The crop fits inside the resize, and normalisation has one value per RGB channel."""
    dataset = cfg.dataset
    if dataset.resize_size is not None:
        p.check(
            dataset.resize_size >= dataset.frame_size,
            "dataset.resize_size",
            dataset.resize_size,
            f">= dataset.frame_size ({dataset.frame_size}) or null",
        )
    for key in ("mean", "std"):
        values = dataset.get(key)
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            expected = "null (the backbone's own) or 3 per-channel values (RGB)"
            if key == "std":
                expected += ", each > 0"
            p.add(f"dataset.{key}", f"{list(values)} is not allowed: expected {expected}")
