"""Frames of one view -> a normalised clip tensor, with optional training augmentation.

Frames arrive as uint8 ``[T, H, W, 3]`` and leave as float32 ``[C, T, S, S]`` (``S`` =
``frame_size``), the layout torchvision's video backbones take. The transforms run on a
``tv_tensors.Video`` (``[T, C, H, W]``): torchvision.transforms.v2 draws its random parameters
once per call, so every frame of a clip gets the same crop, flip and colour change — a clip
whose frames jittered independently would show motion that never happened.

Geometry: evaluation resizes the short side to ``resize_size`` and centre-crops a square
``frame_size`` (the backbones' recipe). Training keeps that field of view: it takes the centre
square of the resized frame and random-resized-crops inside it. Applying RandomResizedCrop to the
whole 16:9 frame would not work: a square-ish crop covering >= 80% of a 16:9 frame does not
exist, so torchvision falls back to one fixed centre crop (no augmentation at all), while a
16:9-shaped crop squashed into a square distorts the players unlike evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# torchvision's R3D/R(2+1)D/MC3/S3D Kinetics-400 statistics: the default when a caller names none.
# Each backbone's own come from its weights (mvfoul.models.BACKBONES[name].mean/.std).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# Aspect-ratio range of the random crop, relative to the (square) region it is cut from:
# torchvision's default, which resizing back to a square turns into a mild stretch.
_CROP_RATIO = (3 / 4, 4 / 3)


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
    """The deterministic first stage: uint8 ``[T, H, W, 3]`` -> uint8 ``[T, R, R, 3]``.

    Resizes the short side to ``R = resize_size`` (antialiased bilinear) and keeps the centre
    square: every later step (eval's centre crop, training's random resized crop) cuts inside
    that square, so it is all a clip needs to keep. Clips of any resolution (the dataset also
    ships 720p) end up the same size here; this is what the frame cache stores. Frames already
    ``R x R`` are returned as they are.
    """
    _check_frames(frames)
    if frames.shape[1] == resize_size and frames.shape[2] == resize_size:
        return frames
    video = frames.permute(0, 3, 1, 2)  # [T, C, H, W]
    video = v2.functional.resize(video, [resize_size], antialias=True)  # short side
    video = v2.functional.center_crop(video, [resize_size, resize_size])
    return video.permute(0, 2, 3, 1).contiguous()


def build_clip_transform(
    cfg: ClipTransformConfig, train: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[3, T, frame_size, frame_size]``, normalised.

    Accepts raw frames or frames already through :func:`prepare_frames` (cached ones).
    ``train=True`` augments only when ``cfg.augment`` is set; otherwise it is the eval path.
    """
    resize = cfg.effective_resize_size
    if resize < cfg.frame_size:
        raise ValueError(f"resize_size ({resize}) must be >= frame_size ({cfg.frame_size})")
    steps: list[v2.Transform] = []
    if train and cfg.augment:
        steps += [
            v2.RandomResizedCrop(
                cfg.frame_size, scale=(cfg.crop_scale_min, 1.0), ratio=_CROP_RATIO, antialias=True
            ),
            v2.RandomHorizontalFlip(p=cfg.hflip_prob),
        ]
        if cfg.color_jitter > 0:
            jitter = cfg.color_jitter
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    else:
        steps.append(v2.CenterCrop(cfg.frame_size))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=cfg.mean, std=cfg.std)]
    pipeline = v2.Compose(steps)

    def transform(frames: torch.Tensor) -> torch.Tensor:
        square = prepare_frames(frames, resize)
        video = tv_tensors.Video(square.permute(0, 3, 1, 2))  # [T, C, R, R]
        out = pipeline(video)
        return out.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # [C, T, S, S]

    return transform


def _check_frames(frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
        )
