"""The built-in dataset: real mp4 clips in the SoccerNet-MVFoul layout, with learnable labels.

``dataset=synthetic`` lets every entry point run end to end without the NDA data. Instead of
faking the reader, this module writes what the real dataset looks like on disk -- ``Train/``,
``Valid/``, ``Test/``, each with an ``annotations.json`` in the official structure and
``action_N/clip_K.mp4`` files -- so the same reader, decoder and label rules run on it.

The labels can be learned from the pixels, and every view of an action carries the same cues:

* **action class** -> the attacker's shape and motion (8 distinct patterns, see
  :data:`ACTION_PATTERNS`). None depends on left/right direction, because the views are
  mirrored and training flips clips horizontally.
* **offence + severity** -> a card raised next to the players while the foul happens (frames
  :data:`CARD_FIRST_FRAME`..:data:`CARD_LAST_FRAME`, around the foul at frame
  :data:`EVENT_FRAME`): none (No offence), white (Offence + No card), yellow, red. Hue is the cue,
  so brightness/contrast/saturation jitter keeps it readable.

Each view is a different camera on the same scene (zoom, offset, slow pan, mirror, colour gain)
over a striped grass pitch with mild sensor noise. The class balance copies the real training
split (Standing tackling common; Dive and red cards rare), yet every class of both tasks appears
at least once in every split of 8 or more actions, so per-class metrics are defined.

Labels and scene parameters are drawn first (:func:`draw_split_actions`, cheap, no video); frames
are then rendered from them (:func:`render_indexed`, vectorised numpy; :func:`render_clip` gives
RGB) and encoded with PyAV's ``mpeg4`` (:func:`encode_clip`). Everything is a pure function of the spec, so the same spec gives
the same labels and the same pixels.

:func:`ensure_synthetic_dataset` caches the result under a folder named after a fingerprint of
the spec and marks it complete only after the last file is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import av
import numpy as np

from mvfoul.config import SyntheticConfig
from mvfoul.errors import ConfigError, DataError
from mvfoul.labels import ACTION_CLASSES, NUM_ACTION, NUM_OFFENCE_SEVERITY, prediction_strings
from mvfoul.paths import default_cache_dir

logger = logging.getLogger(__name__)

# Bump when the rendering or the labels change: it is part of the fingerprint, so caches made by
# an older generator are never mistaken for the current one.
GENERATOR_VERSION = 1

SPLITS: tuple[str, ...] = ("Train", "Valid", "Test")
_SET_NAMES = {"Train": "train", "Valid": "valid", "Test": "test"}
MARKER_NAME = ".mvfoul-synthetic.json"

FPS = 25
# The foul happens at frame 75, as in the real clips; the default training window is frames
# 63..86 and a CPU quick test may use 67..82, so the card is shown over a span covering both.
EVENT_FRAME = 75
CARD_FIRST_FRAME = 60
CARD_LAST_FRAME = 91
MIN_CLIP_FRAMES = CARD_LAST_FRAME + 1

# Raw counts of the real training split: the synthetic splits copy these proportions.
REAL_ACTION_COUNTS: dict[str, int] = {
    "Standing tackling": 1264,
    "Tackling": 448,
    "Challenge": 383,
    "Holding": 361,
    "Elbowing": 178,
    "High leg": 103,
    "Pushing": 88,
    "Dive": 28,
}
# Offence+severity among the actions that are not dives (No offence 324 in all, minus the 28
# dives, which are always "No offence" here), No card, Yellow, Red.
REAL_SEVERITY_COUNTS_NO_DIVE: tuple[int, ...] = (324 - 28, 1402, 1172, 27)
DIVE = ACTION_CLASSES.index("Dive")

# ---------------------------------------------------------------------------------------------
# Scene vocabulary. Scene units: the main camera at zoom 1 sees a 1 x 1 square around the foul.
# ---------------------------------------------------------------------------------------------

# Attacker pattern per action class: (shape, motion). Both differ between classes, so the class
# is readable from one frame (shape) and from a few frames (motion); see _attacker_track.
ACTION_PATTERNS: dict[str, tuple[str, str]] = {
    "Tackling": ("flat_ellipse", "fast horizontal sweep, low"),
    "Standing tackling": ("upright_rect", "slow horizontal drift"),
    "High leg": ("triangle", "fast vertical hops"),
    "Holding": ("ring", "circles around the defender"),
    "Pushing": ("square", "diagonal back and forth"),
    "Elbowing": ("cross", "rapid horizontal jitter"),
    "Challenge": ("diamond", "slow large vertical swing"),
    "Dive": ("bar", "spins in place"),
}
ATTACKER_SIZE = 0.095  # half-extent of the attacker shape, scene units
DEFENDER_RADIUS = 0.075
CARD_HALF_W, CARD_HALF_H = 0.065, 0.09  # ~13 x 18 % of the frame at zoom 1
CARD_OFFSET_X, CARD_OFFSET_Y = 0.25, -0.235  # beside and above the players, clear of their paths

CARD_COLOURS: dict[int, tuple[int, int, int] | None] = {
    0: None,  # No offence: no card
    1: (245, 245, 245),  # Offence + No card: white
    2: (250, 215, 20),  # Yellow card
    3: (215, 20, 30),  # Red card
}
# Kits avoid white, yellow, red and green so a kit is never mistaken for a card or the grass.
KIT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (35, 75, 205),  # blue
    (25, 35, 100),  # navy
    (20, 20, 25),  # black
    (120, 45, 160),  # purple
    (0, 160, 200),  # cyan
)
GRASS_COLOUR = np.array([62, 128, 52], dtype=np.float32)
# Rendering codes (see render_indexed): grass brightness (0.9..1.1) times _CODES_PER_UNIT, plus
# noise in 0..2*_NOISE_OFFSET, stays below _GRASS_LEVELS (220 + 16 < 240); one code is ~0.7 grey
# level. The codes above are the objects.
_GRASS_LEVELS = 240
_CODES_PER_UNIT = 200
_NOISE_SIGMA, _NOISE_OFFSET = 4.0, 8  # sensor noise: sigma ~2.5 grey levels, clipped at 2 sigma
_CODE_DEFENDER, _CODE_ATTACKER, _CODE_CARD = 250, 251, 252

MAIN_CAMERAS = (
    "Main camera center",
    "Main camera left",
    "Main camera right",
    "Main behind the goal",
)
CLOSE_UP_CAMERAS = (
    "Close-up player or field referee",
    "Close-up behind the goal",
    "Close-up side staff",
)


# ---------------------------------------------------------------------------------------------
# Spec handling
# ---------------------------------------------------------------------------------------------


def _coerce_spec(spec: Any) -> SyntheticConfig:
    """A :class:`SyntheticConfig` from the dataclass, a mapping or a Hydra ``DictConfig`` node.

    Callers often hold ``cfg.dataset.synthetic`` (a DictConfig); accepting it avoids a
    conversion at every call site. Missing keys take the schema defaults.
    """
    if isinstance(spec, SyntheticConfig):
        return spec
    values: dict[str, int] = {}
    for f in fields(SyntheticConfig):
        if isinstance(spec, Mapping) or hasattr(spec, "keys"):
            present = f.name in spec
            raw = spec[f.name] if present else None
        else:
            present = hasattr(spec, f.name)
            raw = getattr(spec, f.name, None)
        if present and raw is not None:
            values[f.name] = int(raw)
    return SyntheticConfig(**values)


def _validate_spec(spec: SyntheticConfig) -> None:
    """Reject specs the generator cannot honour, naming the key (``mvfoul.validate`` also checks
    ranges when a config is composed; this guards direct callers and the CLI)."""
    problems = []
    for key in ("num_train", "num_valid", "num_test"):
        if getattr(spec, key) < 1:
            problems.append(f"dataset.synthetic.{key}={getattr(spec, key)} must be >= 1")
    if spec.resolution < 16:
        problems.append(f"dataset.synthetic.resolution={spec.resolution} must be >= 16 (px)")
    if spec.clip_frames < MIN_CLIP_FRAMES:
        problems.append(
            f"dataset.synthetic.clip_frames={spec.clip_frames} is too short: the synthetic foul is "
            f"shown in frames {CARD_FIRST_FRAME}..{CARD_LAST_FRAME}, so clips need >= {MIN_CLIP_FRAMES} frames"
        )
    if not 1 <= spec.min_views <= spec.max_views <= 4:
        problems.append(
            f"dataset.synthetic.min_views={spec.min_views}, max_views={spec.max_views}: "
            "expected 1 <= min_views <= max_views <= 4"
        )
    if problems:
        raise ConfigError(problems)


def _spec_dict(spec: SyntheticConfig) -> dict[str, int]:
    return {k: int(v) for k, v in asdict(spec).items()}


def spec_fingerprint(spec: SyntheticConfig) -> str:
    """Short, stable hash of the spec and the generator version (names the cache folder)."""
    payload = json.dumps({"generator": GENERATOR_VERSION, **_spec_dict(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def synthetic_dataset_dir(spec: SyntheticConfig, root: str | Path | None = None) -> Path:
    """Where the dataset for ``spec`` lives: ``<root>/<readable summary>-<fingerprint>``.

    ``root`` defaults to ``mvfoul.paths.default_cache_dir() / "synthetic"``. The name carries a
    hash of the whole spec, so two specs never share a folder; the readable part is for people
    browsing the cache.
    """
    spec = _coerce_spec(spec)
    base = Path(root).expanduser() if root is not None else default_cache_dir() / "synthetic"
    summary = f"{spec.num_train}-{spec.num_valid}-{spec.num_test}_{spec.resolution}px_{spec.clip_frames}f_seed{spec.seed}"
    return base / f"{summary}_{spec_fingerprint(spec)}"


# ---------------------------------------------------------------------------------------------
# Labels and scene parameters (no video)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticView:
    """One camera on the scene of an action."""

    camera_type: str
    zoom: float  # > 1 zooms in
    offset_x: float  # camera centre relative to the foul point, scene units
    offset_y: float
    pan_x: float  # camera drift over the whole clip, scene units
    pan_y: float
    mirror: bool  # horizontally mirrored view (the other side of the pitch)
    gain: tuple[float, float, float]  # per-channel colour balance of this camera
    timestamp: int  # ms, as in the real annotations
    noise_seed: int


@dataclass(frozen=True)
class SyntheticAction:
    """One synthetic incident: its two labels and everything needed to render its views."""

    index: int
    action: int  # index into ACTION_CLASSES
    offence_severity: int  # index into OFFENCE_SEVERITY_CLASSES
    attacker_kit: tuple[int, int, int]
    defender_kit: tuple[int, int, int]
    card_side: int  # +1 / -1: which side of the players the card is raised
    grass_gain: float  # lighting of this match
    stripe_phase: float
    defender_phase: float
    touch_ball: bool  # cosmetic annotation field
    views: tuple[SyntheticView, ...]


def _quota(
    n: int, weights: Sequence[float], required: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Split ``n`` items over classes in proportion to ``weights``, each ``required`` class >= 1.

    Deterministic largest-remainder rounding (rather than sampling) keeps every split's balance
    close to the real one whatever the seed. With fewer items than required classes, a random
    subset of the required classes gets one item each.
    """
    w = np.asarray(weights, dtype=np.float64)
    counts = np.zeros(len(w), dtype=np.int64)
    required = list(required)
    if n <= len(required):
        counts[rng.choice(required, size=n, replace=False)] = 1
        return counts
    counts[required] = 1
    extra = n - len(required)
    share = w / w.sum() * extra
    base = np.floor(share).astype(np.int64)
    counts += base
    leftover = extra - int(base.sum())
    order = np.argsort(-(share - base), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def _draw_labels(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Action and offence+severity classes of ``n`` actions, imbalanced like the real split."""
    action_weights = [REAL_ACTION_COUNTS[name] for name in ACTION_CLASSES]
    action_counts = _quota(n, action_weights, range(NUM_ACTION), rng)
    actions = rng.permutation(np.repeat(np.arange(NUM_ACTION), action_counts))

    # Dives are simulations: always "No offence" (the official rules keep a Dive whatever its
    # severity, and "No offence" maps it to class 0). The other classes go to the rest; class 0
    # needs a non-dive only when no dive covers it.
    severities = np.zeros(n, dtype=np.int64)
    not_dive = np.flatnonzero(actions != DIVE)
    required = [1, 2, 3] if (actions == DIVE).any() else [0, 1, 2, 3]
    sev_counts = _quota(len(not_dive), REAL_SEVERITY_COUNTS_NO_DIVE, required, rng)
    severities[not_dive] = rng.permutation(np.repeat(np.arange(NUM_OFFENCE_SEVERITY), sev_counts))
    return actions, severities


def _draw_views(rng: np.random.Generator, spec: SyntheticConfig) -> tuple[SyntheticView, ...]:
    n_views = int(rng.integers(spec.min_views, spec.max_views + 1))
    timestamp = int(rng.integers(60_000, 2_700_000))
    views = []
    for k in range(n_views):
        # The first clip is the live main camera, as in the real data; replays follow.
        close_up = k > 0 and rng.random() < 0.6
        camera = (
            MAIN_CAMERAS[0]
            if k == 0
            else str(rng.choice(CLOSE_UP_CAMERAS if close_up else MAIN_CAMERAS[1:]))
        )
        zoom = float(rng.uniform(1.05, 1.25) if close_up else rng.uniform(0.8, 1.0))
        views.append(
            SyntheticView(
                camera_type=camera,
                zoom=zoom,
                offset_x=float(rng.uniform(-0.04, 0.04)),
                offset_y=float(rng.uniform(-0.04, 0.04)),
                pan_x=float(rng.uniform(-0.05, 0.05)),
                pan_y=float(rng.uniform(-0.02, 0.02)),
                mirror=bool(k > 0 and rng.random() < 0.5),
                gain=(lambda r, g, b: (float(r), float(g), float(b)))(
                    *rng.uniform(0.92, 1.08, size=3)
                ),
                timestamp=timestamp,
                noise_seed=int(rng.integers(2**31)),
            )
        )
        timestamp += int(rng.integers(5_000, 30_000))
    return tuple(views)


def draw_split_actions(spec: SyntheticConfig, split: str) -> list[SyntheticAction]:
    """Labels and scene parameters of every action of ``split``; renders nothing (fast).

    Each split and each action has its own random stream derived from ``spec.seed``, so changing
    ``num_valid`` does not change Train, and rendering an action never depends on the others.
    """
    spec = _coerce_spec(spec)
    _validate_spec(spec)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    split_index = SPLITS.index(split)
    n = {"Train": spec.num_train, "Valid": spec.num_valid, "Test": spec.num_test}[split]
    actions, severities = _draw_labels(n, np.random.default_rng([spec.seed, split_index, 0]))
    out = []
    for i in range(n):
        rng = np.random.default_rng([spec.seed, split_index, 1, i])
        kits = rng.choice(len(KIT_COLOURS), size=2, replace=False)
        out.append(
            SyntheticAction(
                index=i,
                action=int(actions[i]),
                offence_severity=int(severities[i]),
                attacker_kit=KIT_COLOURS[kits[0]],
                defender_kit=KIT_COLOURS[kits[1]],
                card_side=int(rng.choice([-1, 1])),
                grass_gain=float(rng.uniform(0.88, 1.12)),
                stripe_phase=float(rng.uniform(0, 1)),
                defender_phase=float(rng.uniform(0, 2 * math.pi)),
                touch_ball=bool(rng.random() < 0.2),
                views=_draw_views(rng, spec),
            )
        )
    return out


def annotation_entry(action: SyntheticAction) -> dict[str, Any]:
    """The ``Actions[id]`` entry of ``annotations.json``, with the real raw strings."""
    strings = prediction_strings(action.offence_severity, action.action)
    name = strings["Action class"]
    upper = name in ("Holding", "Pushing", "Elbowing")
    return {
        "UrlLocal": f"synthetic\\match_{action.index:04d}",
        "Offence": strings["Offence"],  # "No offence" or "Offence"
        "Contact": "Without contact" if name == "Dive" else "With contact",
        "Bodypart": "Upper body" if upper else "Under body",
        "Upper body part": ("Use of shoulder" if name == "Pushing" else "Use of arms")
        if upper
        else "",
        "Action class": name,
        "Severity": strings["Severity"],  # "" for No offence, else "1.0" / "3.0" / "5.0"
        "Multiple fouls": "No",
        "Try to play": "No" if name in ("Dive", "Holding", "Elbowing") else "Yes",
        "Touch ball": "Yes" if action.touch_ball else "No",
        "Handball": "No handball",
        "Handball offence": "",
        "Clips": [
            {
                "Url": f"Dataset/action_{action.index}/clip_{k}",
                "Camera type": view.camera_type,
                "Timestamp": view.timestamp,
                "Replay speed": 1.0,  # clips are rendered in real time
            }
            for k, view in enumerate(action.views)
        ],
    }


def split_annotations(actions: Sequence[SyntheticAction], split: str) -> dict[str, Any]:
    """The whole ``annotations.json`` of a split, structured like the official files."""
    return {
        "Set": _SET_NAMES[split],
        "Number of actions": len(actions),
        "Actions": {str(a.index): annotation_entry(a) for a in actions},
    }


# ---------------------------------------------------------------------------------------------
# Rendering (vectorised over frames and pixels)
# ---------------------------------------------------------------------------------------------


def _attacker_track(action: int, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attacker centre (x, y) relative to the foul point and rotation angle, per frame.

    ``tau`` is the frame index minus EVENT_FRAME, so every pattern is at its contact phase at
    the foul. Periods are in frames at 25 fps; all stay visible when sampled at 12.5 fps.
    """
    zero = np.zeros_like(tau)
    two_pi = 2 * np.pi
    name = ACTION_CLASSES[action]
    if name == "Tackling":
        return 0.25 * np.sin(two_pi * tau / 36), zero + 0.05, zero
    if name == "Standing tackling":
        return -0.05 + 0.1 * np.sin(two_pi * tau / 120), zero, zero
    if name == "High leg":
        return zero - 0.06, 0.02 - 0.16 * np.abs(np.sin(np.pi * tau / 12)), zero
    if name == "Holding":
        return 0.12 * np.cos(two_pi * tau / 40), 0.12 * np.sin(two_pi * tau / 40), zero
    if name == "Pushing":
        s = 0.13 * np.sin(two_pi * tau / 30)
        return s, s, zero
    if name == "Elbowing":
        return -0.07 + 0.05 * np.sin(two_pi * tau / 7), zero - 0.02, zero
    if name == "Challenge":
        return zero + 0.06, 0.17 * np.sin(two_pi * tau / 50), zero
    if name == "Dive":
        return 0.04 * np.sin(two_pi * tau / 80), zero, two_pi * tau / 24
    raise AssertionError(f"no pattern for {name!r}")


def _shape_mask(shape: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inside test of a unit shape; ``p``, ``q`` are coordinates in units of ATTACKER_SIZE."""
    ap, aq = np.abs(p), np.abs(q)
    if shape == "flat_ellipse":
        return (p / 1.5) ** 2 + (q / 0.55) ** 2 <= 1
    if shape == "upright_rect":
        return (ap <= 0.55) & (aq <= 1.15)
    if shape == "triangle":  # apex up
        return (q <= 1.0) & (ap <= 0.55 * (q + 1.1))
    if shape == "ring":
        r2 = p * p + q * q
        return (r2 <= 1.15) & (r2 >= 0.35)
    if shape == "square":
        return (ap <= 0.8) & (aq <= 0.8)
    if shape == "cross":
        return ((ap <= 0.3) & (aq <= 1.15)) | ((ap <= 1.15) & (aq <= 0.3))
    if shape == "diamond":
        return ap + aq <= 1.2
    if shape == "bar":
        return (ap <= 0.25) & (aq <= 1.35)
    raise AssertionError(f"unknown shape {shape!r}")


def render_indexed(
    spec: SyntheticConfig, action: SyntheticAction, view_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """One view of an action as an indexed picture: codes ``[T, R, R]`` uint8 and an RGB palette
    ``[256, 3]`` uint8 (the colour of pixel ``(t, y, x)`` is ``palette[codes[t, y, x]]``).

    Speed matters (hundreds of clips per build), so: the camera has no rotation, hence scene x
    depends only on (frame, column) and scene y only on (frame, row) -- the grids are
    ``[T, 1, R]`` and ``[T, R, 1]``; the picture is one uint8 code per pixel (a quantised grass
    brightness, or an object's id), so colour conversions run on the 256-entry palette instead
    of on every pixel (numpy's float -> uint8 conversion of interleaved RGB is slow, and the
    encoder can take YUV planes straight from a YUV palette).
    """
    spec = _coerce_spec(spec)
    view = action.views[view_index]
    T, R = spec.clip_frames, spec.resolution
    tau = np.arange(T, dtype=np.float32) - EVENT_FRAME

    # Camera: pixel centre -> scene coordinates (foul point at the origin).
    pix = (np.arange(R, dtype=np.float32) + 0.5) / R - 0.5
    cam_x = view.offset_x + view.pan_x * tau / T
    cam_y = view.offset_y + view.pan_y * tau / T
    sign = -1.0 if view.mirror else 1.0
    X = (cam_x[:, None, None] + sign * pix[None, None, :] / view.zoom).astype(np.float32)  # [T,1,R]
    Y = (cam_y[:, None, None] + pix[None, :, None] / view.zoom).astype(np.float32)  # [T,R,1]

    # Grass brightness: mowing stripes and soft blotches fixed on the pitch (they move with the
    # camera), in [0.9, 1.1], quantised to codes; plus mild per-frame sensor noise, added in
    # code units from a small bank of uint8 noise frames cycled over the clip (drawing and
    # converting fresh float noise for every frame would dominate the cost).
    stripes = np.where(
        np.floor(X * 7 + action.stripe_phase) % 2 == 0, np.float32(1.06), np.float32(0.94)
    )
    blotches = np.float32(0.04) * np.sin(9.0 * X + 1.3) * np.sin(7.0 * Y + 0.4)
    code = ((stripes + blotches) * np.float32(_CODES_PER_UNIT)).astype(np.uint8)
    noise = np.random.default_rng(view.noise_seed).standard_normal((8, R, R), dtype=np.float32)
    noise = np.clip(np.rint(noise * _NOISE_SIGMA + _NOISE_OFFSET), 0, 2 * _NOISE_OFFSET).astype(
        np.uint8
    )
    code += noise[np.arange(T) % 8]

    # Defender: a disc swaying a little around the foul point.
    dx = 0.03 * np.sin(2 * np.pi * tau / 70 + action.defender_phase)
    dy = 0.01 * np.sin(2 * np.pi * tau / 45 + action.defender_phase)
    defender = (X - dx[:, None, None]) ** 2 + (Y - dy[:, None, None]) ** 2 <= DEFENDER_RADIUS**2
    np.putmask(code, defender, _CODE_DEFENDER)

    # Attacker: the action-class pattern, drawn over the defender (it is the one acting).
    shape = ACTION_PATTERNS[ACTION_CLASSES[action.action]][0]
    ax, ay, angle = _attacker_track(action.action, tau)
    u = (X - ax[:, None, None].astype(np.float32)) / ATTACKER_SIZE
    v = (Y - ay[:, None, None].astype(np.float32)) / ATTACKER_SIZE
    if np.any(angle):
        c = np.cos(angle)[:, None, None].astype(np.float32)
        s = np.sin(angle)[:, None, None].astype(np.float32)
        u, v = c * u + s * v, c * v - s * u
    np.putmask(code, _shape_mask(shape, u, v), _CODE_ATTACKER)

    # Card: the severity cue, raised in front of everything during the foul only.
    colour = CARD_COLOURS[action.offence_severity]
    if colour is not None:
        span = slice(CARD_FIRST_FRAME, CARD_LAST_FRAME + 1)
        card_x = action.card_side * CARD_OFFSET_X
        card = (np.abs(X[span] - card_x) <= CARD_HALF_W) & (
            np.abs(Y[span] - CARD_OFFSET_Y) <= CARD_HALF_H
        )
        np.putmask(code[span], card, _CODE_CARD)

    # Palette: grass levels in this match's light, then the objects; all through the camera's
    # colour balance, so views differ in colour as real cameras do.
    palette = np.zeros((256, 3), dtype=np.float32)
    levels = (np.arange(_GRASS_LEVELS, dtype=np.float32) + 0.5 - _NOISE_OFFSET) / _CODES_PER_UNIT
    palette[:_GRASS_LEVELS] = levels[:, None] * GRASS_COLOUR * action.grass_gain
    palette[_CODE_DEFENDER] = action.defender_kit
    palette[_CODE_ATTACKER] = action.attacker_kit
    palette[_CODE_CARD] = colour if colour is not None else 0
    palette *= np.asarray(view.gain, dtype=np.float32)
    palette = np.clip(np.rint(palette), 0, 255).astype(np.uint8)
    return code, palette


def render_clip(spec: SyntheticConfig, action: SyntheticAction, view_index: int) -> np.ndarray:
    """RGB frames ``[clip_frames, resolution, resolution, 3]`` (uint8) of one view of an action,
    before encoding (handy to inspect the scene; the build encodes :func:`render_indexed`)."""
    codes, palette = render_indexed(spec, action, view_index)
    return np.take(palette, codes, axis=0)


def _rgb_to_yuv601(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB -> limited-range BT.601 YUV, the convention FFmpeg's scaler uses
    by default for yuv420p both ways, so decoded colours match the palette (within ~2 levels)."""
    m = (
        np.array(
            [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
            dtype=np.float64,
        )
        / 255.0
    )
    yuv = rgb.astype(np.float64) @ m.T + np.array([16.0, 128.0, 128.0])
    return np.clip(np.rint(yuv), 0, 255).astype(np.uint8)


def _yuv420_frames(codes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Indexed frames -> yuv420p arrays ``[T, 3*H/2, W]`` laid out as PyAV's ``from_ndarray``
    expects (Y rows, then the U plane, then the V plane). Needs even H and W.

    Chroma takes the top-left pixel of each 2x2 block (no averaging): objects are flat colours
    several pixels wide, so only their edges differ from a box filter, and it costs nothing.
    """
    T, H, W = codes.shape
    yuv = _rgb_to_yuv601(palette)
    y = np.take(yuv[:, 0], codes)
    sub = codes[:, ::2, ::2]
    u = np.take(yuv[:, 1], sub)
    v = np.take(yuv[:, 2], sub)
    flat = np.concatenate([y.reshape(T, -1), u.reshape(T, -1), v.reshape(T, -1)], axis=1)
    return flat.reshape(T, 3 * H // 2, W)


def encode_clip(frames: np.ndarray, path: str | Path, pixel_format: str = "rgb24") -> None:
    """Write frames as an mpeg4 (yuv420p) mp4 at 25 fps.

    ``frames`` is ``[T, H, W, 3]`` uint8 RGB (``pixel_format="rgb24"``, converted by FFmpeg) or
    ``[T, 3*H/2, W]`` uint8 yuv420p planes (``pixel_format="yuv420p"``, written as they are).
    ``mpeg4`` encodes ~9x faster than libx264 in PyAV's wheels. Quantiser limits keep colours
    and edges intact at small sizes; one encoder thread keeps the bitstream deterministic.
    """
    if pixel_format == "yuv420p":
        height, width = frames.shape[1] * 2 // 3, frames.shape[2]
    else:
        height, width = frames.shape[1], frames.shape[2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.qmin, ctx.qmax = 2, 6
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=pixel_format)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _encode_view(
    spec: SyntheticConfig, action: SyntheticAction, view_index: int, path: Path
) -> None:
    codes, palette = render_indexed(spec, action, view_index)
    if (
        spec.resolution % 2 == 0
    ):  # yuv420p planes straight from the palette: skips a per-pixel conversion
        encode_clip(_yuv420_frames(codes, palette), path, pixel_format="yuv420p")
    else:
        encode_clip(np.take(palette, codes, axis=0), path)


def _write_action(spec: SyntheticConfig, action: SyntheticAction, split_dir: Path) -> list[str]:
    """Render and encode every view of one action; returns paths relative to ``split_dir``."""
    folder = split_dir / f"action_{action.index}"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(len(action.views)):
        _encode_view(spec, action, k, folder / f"clip_{k}.mp4")
        written.append(f"action_{action.index}/clip_{k}.mp4")
    return written


def _write_action_job(args: tuple[dict[str, int], SyntheticAction, str]) -> list[str]:
    """Process-pool entry point (top level so it pickles)."""
    spec_values, action, split_dir = args
    return _write_action(SyntheticConfig(**spec_values), action, Path(split_dir))


def generate_splits(
    spec: SyntheticConfig, out_dir: str | Path, splits: Sequence[str] = SPLITS, workers: int = 1
) -> list[str]:
    """Write ``<out_dir>/<split>/`` (annotations.json and every clip) for each split; returns the
    written paths relative to ``out_dir``.

    Writes into ``out_dir`` as it is; callers wanting atomicity build into a temporary folder (as
    :func:`ensure_synthetic_dataset` does). With ``workers > 1`` one process pool renders the
    actions of all splits (one pool, not one per split: starting workers costs more than a
    small split takes). The output does not depend on ``workers``.
    """
    spec = _coerce_spec(spec)
    out_dir = Path(out_dir)
    plan = [(split, draw_split_actions(spec, split)) for split in splits]
    jobs = [
        (_spec_dict(spec), action, str(out_dir / split))
        for split, actions in plan
        for action in actions
    ]
    for split, _ in plan:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            clip_lists = list(
                pool.map(_write_action_job, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
            )
    else:
        clip_lists = [_write_action_job(job) for job in jobs]

    written: list[str] = []
    clip_iter = iter(clip_lists)
    for split, actions in plan:
        with open(out_dir / split / "annotations.json", "w", encoding="utf-8") as fh:
            json.dump(split_annotations(actions, split), fh, indent=4)
        written.append(f"{split}/annotations.json")
        for _ in actions:
            written += [f"{split}/{rel}" for rel in next(clip_iter)]
    return written


def generate_split(
    spec: SyntheticConfig, split: str, out_dir: str | Path, workers: int = 1
) -> list[str]:
    """:func:`generate_splits` for one split (``"Train"``, ``"Valid"`` or ``"Test"``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return generate_splits(spec, out_dir, (split,), workers=workers)


# ---------------------------------------------------------------------------------------------
# The cached dataset folder
# ---------------------------------------------------------------------------------------------


def _marker_content(spec: SyntheticConfig, files: dict[str, int]) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "spec": _spec_dict(spec), "files": files}


def _is_complete(folder: Path, spec: SyntheticConfig) -> bool:
    """True when ``folder`` holds a finished build of ``spec`` with every file intact.

    The marker lists every file with its size: a deleted or truncated clip makes the folder
    incomplete, so the next call rebuilds it instead of failing mid-training.
    """
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict):
        return False
    if marker.get("generator_version") != GENERATOR_VERSION or marker.get("spec") != _spec_dict(
        spec
    ):
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, size in files.items():
        try:
            if (folder / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _remove_leftovers(target: Path, max_age_s: float = 3600.0) -> None:
    """Delete build or stale folders of ``target`` left by killed processes.

    Only ones untouched for an hour: a build of the default spec takes seconds, so a younger one
    may belong to a process still running.
    """
    now = time.time()
    for pattern in (f"{target.name}.building-*", f"{target.name}.stale-*"):
        for path in target.parent.glob(pattern):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _install(build: Path, target: Path, spec: SyntheticConfig) -> None:
    """Rename the finished ``build`` folder to ``target``.

    A rename is atomic, so readers see either nothing or a complete dataset. If ``target``
    exists: when it is complete (another process won the race) ours is simply dropped by the
    caller; when it is incomplete it is renamed aside first, then deleted.
    """
    for _ in range(10):
        try:
            os.rename(build, target)
            return
        except OSError:
            if _is_complete(target, spec):
                return
            aside = target.with_name(f"{target.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue  # someone else moved it aside already; retry our rename
            except OSError as exc:
                raise DataError(
                    f"cannot replace the incomplete synthetic dataset {target}: {exc}; delete it and retry"
                ) from exc
            shutil.rmtree(aside, ignore_errors=True)
    raise DataError(
        f"cannot install the synthetic dataset at {target}: another process keeps replacing it; retry"
    )


def ensure_synthetic_dataset(
    spec: SyntheticConfig, root: str | Path | None = None, workers: int = 1
) -> Path:
    """The folder (with ``Train/ Valid/ Test/``) of the synthetic dataset for ``spec``, built if needed.

    A complete folder (marker present, same spec and generator, every listed file intact) is
    reused untouched. Otherwise the dataset is built into a temporary sibling and renamed into
    place, so an interrupted build never looks complete and racing processes both end with a
    valid folder. ``workers > 1`` renders and encodes in that many processes.
    """
    spec = _coerce_spec(spec)
    _validate_spec(spec)
    target = synthetic_dataset_dir(spec, root)
    if _is_complete(target, spec):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {target.parent} for the synthetic dataset: {exc}; set MVFOUL_CACHE_DIR"
        ) from exc
    _remove_leftovers(target)

    started = time.perf_counter()
    build = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
    try:
        written = generate_splits(spec, build, SPLITS, workers=workers)
        files = {rel: (build / rel).stat().st_size for rel in written}
        # The marker is written last: its presence means every file before it is complete.
        (build / MARKER_NAME).write_text(
            json.dumps(_marker_content(spec, files), indent=1), encoding="utf-8"
        )
        _install(build, target, spec)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    size_mb = sum(files.values()) / 1e6
    logger.info(
        "generated the synthetic dataset (%d/%d/%d actions, %d clips, %.1f MB) in %s in %.1f s",
        spec.num_train,
        spec.num_valid,
        spec.num_test,
        len(files) - len(SPLITS),
        size_mb,
        target,
        time.perf_counter() - started,
    )
    return target


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mvfoul.data.synthetic --out DIR [--num-train N ...]``: generate, print the folder."""
    parser = argparse.ArgumentParser(
        prog="python -m mvfoul.data.synthetic",
        description="Generate the built-in synthetic SoccerNet-MVFoul-style dataset (real mp4 clips) and print its folder.",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="root folder; the dataset goes into a sub-folder named after the spec "
        "(default: $MVFOUL_CACHE_DIR or ~/.cache/mvfoul, then synthetic/)",
    )
    defaults = SyntheticConfig()
    for f in fields(SyntheticConfig):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, f.name),
            help=f"default: {getattr(defaults, f.name)}",
        )
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes rendering clips"
    )
    args = parser.parse_args(argv)
    spec = SyntheticConfig(**{f.name: getattr(args, f.name) for f in fields(SyntheticConfig)})
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        folder = ensure_synthetic_dataset(spec, root=args.out, workers=args.workers)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
