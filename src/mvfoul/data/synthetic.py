"""The built-in dataset: real mp4 clips in the SoccerNet-MVFoul layout, with learnable labels, so
the same reader, decoder and label rules run without the NDA data.

Every view (a different camera on one scene) shows both labels: the action class as the attacker's
shape and motion, the offence + severity as a card (none, white, yellow, red) beside the players.
The class balance copies the real training split, yet every class of both tasks appears in every
split of 8 or more actions. Everything is a pure function of the spec.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import av
import numpy as np
from omegaconf import DictConfig

from mvfoul.config import SyntheticConfig
from mvfoul.data.video import configured_window
from mvfoul.errors import ConfigError, DataError
from mvfoul.labels import ACTION_CLASSES, NUM_ACTION, NUM_OFFENCE_SEVERITY, prediction_strings
from mvfoul.paths import default_cache_dir
from mvfoul.validate import Problems, cross_key_rule

logger = logging.getLogger(__name__)

# Part of the cache fingerprint and marker: bump it whenever pixels or labels change.
GENERATOR_VERSION = 2
SPLITS: tuple[str, ...] = ("Train", "Valid", "Test")
MARKER_NAME = ".mvfoul-synthetic.json"
FPS = 25
# The foul is at frame 75, as in the real clips; the card spans both the default training window
# (63..86) and the CPU quick test's (67..82).
EVENT_FRAME = 75
CARD_FIRST_FRAME = 60
CARD_LAST_FRAME = 91
MIN_CLIP_FRAMES = CARD_LAST_FRAME + 1

# The real training split's counts, in ACTION_CLASSES order, and its offence+severity counts of
# non-dives (dives are always No offence here, so 28 of No offence's 324 go to them).
REAL_ACTION_COUNTS = (448, 1264, 103, 361, 88, 178, 383, 28)
REAL_SEVERITY_COUNTS_NO_DIVE = (324 - 28, 1402, 1172, 27)
DIVE = ACTION_CLASSES.index("Dive")
CAMERAS = ("Main camera center", "Main camera left", "Main camera right", "Main behind the goal")
CLOSE_UPS = ("Close-up player or field referee", "Close-up behind the goal", "Close-up side staff")

# Scene units: the main camera at zoom 1 sees a 1 x 1 square around the foul point.
ATTACKER_SIZE, DEFENDER_RADIUS = 0.095, 0.075
CARD_CENTRE, CARD_HALF = (0.25, -0.235), (0.065, 0.09)  # beside and above the players' paths
CARD_COLOURS = (None, (245, 245, 245), (250, 215, 20), (215, 20, 30))
# No kit is white, yellow, red or green, so none passes for a card or the grass.
KITS = ((35, 75, 205), (25, 35, 100), (20, 20, 25), (120, 45, 160), (0, 160, 200))
GRASS = np.array([62, 128, 52], dtype=np.float32)
# Pixel codes: grass brightness (~0.9..1.1, ~0.7 grey level a code) x 200 plus noise stays below
# _GRASS_CODES (brightness 1.0 at code 200 + _GRASS_OFFSET); the codes above are objects.
_GRASS_CODES = 240
_GRASS_OFFSET = 10
_DEFENDER, _ATTACKER, _CARD = 250, 251, 252
_BODY_PARTS = {"Holding": "Use of arms", "Pushing": "Use of shoulder", "Elbowing": "Use of arms"}


def _box(p: Any, q: Any, w: float, h: float) -> Any:
    return (abs(p) <= w) & (abs(q) <= h)


# Attacker per action class: its shape (in ATTACKER_SIZE units) tells the class from one frame, its
# track (x, y, rotation against frames from the foul) from a few. Neither depends on left/right,
# since views are mirrored and training flips clips.
SHAPES = {
    "Tackling": lambda p, q: (p / 1.5) ** 2 + (q / 0.55) ** 2 <= 1,
    "Standing tackling": lambda p, q: _box(p, q, 0.55, 1.15),
    "High leg": lambda p, q: (q <= 1.0) & (abs(p) <= 0.55 * (q + 1.1)),
    "Holding": lambda p, q: abs(p * p + q * q - 0.75) <= 0.4,
    "Pushing": lambda p, q: _box(p, q, 0.8, 0.8),
    "Elbowing": lambda p, q: _box(p, q, 0.3, 1.15) | _box(p, q, 1.15, 0.3),
    "Challenge": lambda p, q: abs(p) + abs(q) <= 1.2,
    "Dive": lambda p, q: _box(p, q, 0.25, 1.35),
}
_W = 2 * np.pi
TRACKS = {
    "Tackling": lambda t: (0.25 * np.sin(_W * t / 36), 0.05, 0),
    "Standing tackling": lambda t: (-0.05 + 0.1 * np.sin(_W * t / 120), 0, 0),
    "High leg": lambda t: (-0.06, 0.02 - 0.16 * np.abs(np.sin(np.pi * t / 12)), 0),
    "Holding": lambda t: (0.12 * np.cos(_W * t / 40), 0.12 * np.sin(_W * t / 40), 0),
    "Pushing": lambda t: (0.13 * np.sin(_W * t / 30), 0.13 * np.sin(_W * t / 30), 0),
    "Elbowing": lambda t: (-0.07 + 0.05 * np.sin(_W * t / 7), -0.02, 0),
    "Challenge": lambda t: (0.06, 0.17 * np.sin(_W * t / 50), 0),
    "Dive": lambda t: (0.04 * np.sin(_W * t / 80), 0, _W * t / 24),
}


@dataclass(frozen=True)
class SyntheticAction:
    """One incident: its labels, its views' (camera type, timestamp ms) and its scene's seed."""

    index: int
    action: int  # index into ACTION_CLASSES
    offence_severity: int  # index into OFFENCE_SEVERITY_CLASSES
    views: tuple[tuple[str, int], ...]
    touch_ball: bool
    seed: tuple[int, ...]


def _coerce_spec(spec: Any) -> SyntheticConfig:
    """Accept a Hydra node or mapping (``cfg.dataset.synthetic``) too; absent keys take defaults."""
    return spec if isinstance(spec, SyntheticConfig) else SyntheticConfig(**spec)


def _validate_spec(spec: SyntheticConfig) -> None:
    """``mvfoul.validate`` checks composed configs; this guards direct callers and the CLI."""
    lows = dict(num_train=1, num_valid=1, num_test=1, resolution=16, clip_frames=MIN_CLIP_FRAMES)
    notes = {"clip_frames": f" (the foul is shown up to frame {CARD_LAST_FRAME})"}
    problems = [
        f"dataset.synthetic.{key}={getattr(spec, key)} must be >= {low}{notes.get(key, '')}"
        for key, low in lows.items()
        if getattr(spec, key) < low
    ]
    if not 1 <= spec.min_views <= spec.max_views <= 4:
        problems.append(
            f"dataset.synthetic.min_views={spec.min_views}, max_views={spec.max_views}: "
            "expected 1 <= min_views <= max_views <= 4"
        )
    if problems:
        raise ConfigError(problems)


def synthetic_dataset_dir(spec: Any, root: str | Path | None = None) -> Path:
    """``<root>/<readable summary>_<hash of spec and generator>``; ``root`` defaults to
    ``default_cache_dir() / "synthetic"``."""
    spec = _coerce_spec(spec)
    payload = json.dumps({"generator": GENERATOR_VERSION, **asdict(spec)}, sort_keys=True)
    fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:10]
    base = Path(root).expanduser() if root is not None else default_cache_dir() / "synthetic"
    return base / (
        f"{spec.num_train}-{spec.num_valid}-{spec.num_test}_{spec.resolution}px"
        f"_{spec.clip_frames}f_seed{spec.seed}_{fingerprint}"
    )


def _quota(n: int, weights: Sequence[int], required: Sequence[int], rng: Any) -> np.ndarray:
    """Split ``n`` items over classes by ``weights``, each ``required`` class at least once (with
    too few items, a random subset of them). Largest-remainder rounding rather than sampling keeps
    every split's balance close to the real one whatever the seed."""
    counts = np.zeros(len(weights), dtype=np.int64)
    if n <= len(required):
        counts[rng.choice(required, size=n, replace=False)] = 1
        return counts
    counts[required] = 1
    share = np.asarray(weights) / sum(weights) * (n - len(required))
    counts += np.floor(share).astype(np.int64)
    leftover = n - int(counts.sum())
    counts[np.argsort(np.floor(share) - share, kind="stable")[:leftover]] += 1
    return counts


def draw_split_actions(spec: Any, split: str) -> list[SyntheticAction]:
    """Labels and cameras of every action of ``split``; renders nothing. Each split and each action
    has its own random stream derived from the seed, so changing ``num_valid`` leaves Train alone."""
    spec = _coerce_spec(spec)
    _validate_spec(spec)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    split_index = SPLITS.index(split)
    n = (spec.num_train, spec.num_valid, spec.num_test)[split_index]
    rng = np.random.default_rng([spec.seed, split_index, 0])
    counts = _quota(n, REAL_ACTION_COUNTS, list(range(NUM_ACTION)), rng)
    actions = rng.permutation(np.repeat(np.arange(NUM_ACTION), counts))
    # Dives are simulations, always No offence (class 0); the non-dives take the other classes,
    # and class 0 too unless a dive already covers it.
    severities = np.zeros(n, dtype=np.int64)
    not_dive = np.flatnonzero(actions != DIVE)
    required = [1, 2, 3] if (actions == DIVE).any() else [0, 1, 2, 3]
    counts = _quota(len(not_dive), REAL_SEVERITY_COUNTS_NO_DIVE, required, rng)
    severities[not_dive] = rng.permutation(np.repeat(np.arange(NUM_OFFENCE_SEVERITY), counts))
    out = []
    for i in range(n):
        rng = np.random.default_rng([spec.seed, split_index, 1, i])
        n_replays = int(rng.integers(spec.min_views, spec.max_views + 1)) - 1
        # The first clip is the live main camera, as in the real data; replays follow.
        replays = [
            rng.choice(CLOSE_UPS if rng.random() < 0.6 else CAMERAS[1:]) for _ in range(n_replays)
        ]
        times = np.cumsum(
            [rng.integers(60_000, 2_700_000), *rng.integers(5_000, 30_000, n_replays)]
        )
        views = tuple(zip([CAMERAS[0], *map(str, replays)], times.tolist()))
        touch_ball = bool(rng.random() < 0.2)
        seed = (spec.seed, split_index, i)
        out.append(SyntheticAction(i, int(actions[i]), int(severities[i]), views, touch_ball, seed))
    return out


def annotation_entry(action: SyntheticAction) -> dict[str, Any]:
    """The ``Actions[id]`` entry of ``annotations.json``, with the real raw strings."""
    strings = prediction_strings(action.offence_severity, action.action)
    name = strings["Action class"]
    part = _BODY_PARTS.get(name, "")
    url = f"Dataset/action_{action.index}/clip_"
    return {
        "UrlLocal": f"synthetic\\match_{action.index:04d}",
        "Offence": strings["Offence"],
        "Contact": "Without contact" if name == "Dive" else "With contact",
        "Bodypart": "Upper body" if part else "Under body",
        "Upper body part": part,
        "Action class": name,
        "Severity": strings["Severity"],  # "" for No offence, else "1.0" / "3.0" / "5.0"
        "Multiple fouls": "No",
        "Try to play": "No" if name in ("Dive", "Holding", "Elbowing") else "Yes",
        "Touch ball": "Yes" if action.touch_ball else "No",
        "Handball": "No handball",
        "Handball offence": "",
        "Clips": [
            {"Url": f"{url}{k}", "Camera type": cam, "Timestamp": ms, "Replay speed": 1.0}
            for k, (cam, ms) in enumerate(action.views)
        ],
    }


def split_annotations(actions: Sequence[SyntheticAction], split: str) -> dict[str, Any]:
    entries = {str(a.index): annotation_entry(a) for a in actions}
    return {"Set": split.lower(), "Number of actions": len(actions), "Actions": entries}


def render_clip(spec: Any, action: SyntheticAction, view_index: int) -> np.ndarray:
    """RGB frames ``[clip_frames, resolution, resolution, 3]`` (uint8) of one view of an action."""
    return _render_rgba(_coerce_spec(spec), action, view_index)[..., :3]


def _render_rgba(spec: SyntheticConfig, action: SyntheticAction, view_index: int) -> np.ndarray:
    """RGBA frames of one view (the encoder takes RGBA as it is). The camera does not rotate, so
    scene x depends on (frame, column) only and y on (frame, row) only; each pixel is one uint8
    code (grass brightness or an object) coloured at the end through a palette of 4-byte words
    (one 4-byte gather is ~3x faster than 3-byte rows)."""
    T, R = spec.clip_frames, spec.resolution  # T frames of R x R pixels
    # The match (kits, light, card side) is shared by all views; each camera has its own stream.
    match = np.random.default_rng(action.seed)
    kits = match.choice(len(KITS), size=2, replace=False)
    side, grass_gain, stripe_phase, defender_phase = match.uniform(
        [-1, 0.88, 0, 0], [1, 1.12, 1, _W]
    ).tolist()
    # This camera: zoom (close-ups nearer), offset, pan over the clip, mirror (the other side of
    # the pitch; never the live main camera), colour balance. Python floats keep maths in float32.
    cam = np.random.default_rng([*action.seed, view_index + 1])
    near = action.views[view_index][0] in CLOSE_UPS
    low = [1.05 if near else 0.8, -0.04, -0.04, -0.05, -0.02, 0]
    high = [1.25 if near else 1.0, 0.04, 0.04, 0.05, 0.02, 1]
    zoom, offset_x, offset_y, pan_x, pan_y, flip = cam.uniform(low, high).tolist()
    mirror = -1.0 if view_index > 0 and flip < 0.5 else 1.0
    gain = cam.uniform(0.92, 1.08, size=3).astype(np.float32)

    tau = np.arange(T, dtype=np.float32) - EVENT_FRAME
    pix = (np.arange(R, dtype=np.float32) + 0.5) / R - 0.5
    X = ((offset_x + pan_x * tau / T)[:, None, None] + mirror * pix / zoom).astype(np.float32)
    Y = ((offset_y + pan_y * tau / T)[:, None, None] + pix[:, None] / zoom).astype(np.float32)
    # Grass codes: mowing stripes and waves fixed on the pitch plus sensor noise cycled from 8
    # frames; columns and rows apart and integer noise, as float maths per pixel would dominate.
    columns = np.where(np.floor(X * 7 + stripe_phase) % 2, 190, 210) + 4 * np.sin(9 * X + 1.3)
    rows = 4 + 4 * np.sin(7 * Y + 0.4)
    noise = cam.integers(0, 13, (8, R, R), dtype=np.uint8)
    code = columns.astype(np.uint8) + rows.astype(np.uint8) + noise[np.arange(T) % 8]
    # Defender: a disc swaying about the foul point; the attacker (the one acting) over it.
    dx = 0.03 * np.sin(_W * tau / 70 + defender_phase)[:, None, None]
    dy = 0.01 * np.sin(_W * tau / 45 + defender_phase)[:, None, None]
    half_width = np.sqrt(np.maximum(DEFENDER_RADIUS**2 - (Y - dy) ** 2, 0))  # per row: no 3-D sum
    np.putmask(code, abs(X - dx) <= half_width, _DEFENDER)
    name = ACTION_CLASSES[action.action]
    ax, ay, angle = (np.broadcast_to(np.float32(v), (T,))[:, None, None] for v in TRACKS[name](tau))
    u, v = (X - ax) / ATTACKER_SIZE, (Y - ay) / ATTACKER_SIZE
    if np.any(angle):
        u, v = np.cos(angle) * u + np.sin(angle) * v, np.cos(angle) * v - np.sin(angle) * u
    np.putmask(code, SHAPES[name](u, v), _ATTACKER)
    # Card: in front of everything, during the foul only.
    colour = CARD_COLOURS[action.offence_severity]
    if colour is not None:
        span = slice(CARD_FIRST_FRAME, CARD_LAST_FRAME + 1)
        card_x = CARD_CENTRE[0] if side > 0 else -CARD_CENTRE[0]
        card = _box(X[span] - card_x, Y[span] - CARD_CENTRE[1], *CARD_HALF)
        np.putmask(code[span], card, _CARD)

    # Palette: grass levels in this match's light and the objects, through the camera's gain.
    palette = np.full((256, 4), 255, dtype=np.float32)
    levels = (np.arange(_GRASS_CODES, dtype=np.float32) + 0.5 - _GRASS_OFFSET) / 200
    palette[:_GRASS_CODES, :3] = levels[:, None] * GRASS * grass_gain
    palette[[_DEFENDER, _ATTACKER, _CARD], :3] = KITS[kits[1]], KITS[kits[0]], colour or (0, 0, 0)
    palette[:, :3] *= gain
    words = np.clip(np.rint(palette), 0, 255).astype(np.uint8).view(np.uint32)[:, 0]
    return np.take(words, code).view(np.uint8).reshape(*code.shape, 4)


def encode_clip(frames: np.ndarray, path: str | Path) -> None:
    """Write RGB or RGBA frames ``[T, H, W, 3 or 4]`` as an mpeg4 (yuv420p) mp4 at 25 fps.
    ``mpeg4`` encodes ~9x faster than libx264 in PyAV's wheels; quantiser limits keep colours and
    edges intact at small sizes; one thread keeps the bytes deterministic."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "mpeg4", rate=FPS, width=frames.shape[2], height=frames.shape[1], pix_fmt="yuv420p"
        )
        stream.codec_context.thread_count = 1
        stream.codec_context.qmin, stream.codec_context.qmax = 2, 6
        pixel_format = "rgba" if frames.shape[-1] == 4 else "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format=pixel_format)))
        container.mux(stream.encode())


def _write_action(job: tuple[SyntheticConfig, SyntheticAction, Path]) -> None:
    spec, action, folder = job
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(len(action.views)):
        encode_clip(_render_rgba(spec, action, k), folder / f"clip_{k}.mp4")


def generate_splits(spec: SyntheticConfig, out_dir: str | Path, workers: int = 1) -> None:
    """Write ``<out_dir>/<split>/`` (annotations.json and every clip) of every split. One process
    pool renders all splits (starting workers costs more than a small split)."""
    jobs = []
    for split in SPLITS:
        actions = draw_split_actions(spec, split)
        (Path(out_dir) / split).mkdir(parents=True, exist_ok=True)
        text = json.dumps(split_annotations(actions, split), indent=4)
        (Path(out_dir) / split / "annotations.json").write_text(text, encoding="utf-8")
        jobs += [(spec, a, Path(out_dir) / split / f"action_{a.index}") for a in actions]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            list(pool.map(_write_action, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        for job in jobs:
            _write_action(job)


def _is_complete(folder: Path, spec: SyntheticConfig) -> bool:
    """A finished build of ``spec`` by this generator, every listed file at its recorded size (a
    damaged clip makes the next call rebuild rather than training fail midway)."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        if (marker["generator_version"], marker["spec"]) != (GENERATOR_VERSION, asdict(spec)):
            return False
        files = marker["files"].items()
        return bool(files) and all((folder / f).stat().st_size == n for f, n in files)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False


def _install(build: Path, target: Path, spec: SyntheticConfig) -> None:
    """Rename ``build`` to ``target``: atomic, so readers see nothing or a whole dataset. A
    complete ``target`` (a racing process won) stays; an incomplete one is deleted first."""
    for _ in range(10):
        try:
            os.rename(build, target)
            return
        except OSError:
            if _is_complete(target, spec):
                return
        shutil.rmtree(target, ignore_errors=True)
    raise DataError(f"cannot install the synthetic dataset at {target}; delete it and retry")


def ensure_synthetic_dataset(spec: Any, root: str | Path | None = None, workers: int = 1) -> Path:
    """The folder (``Train/ Valid/ Test/``) of the synthetic dataset for ``spec``, built if needed:
    in a temporary sibling renamed into place, so an interrupted build never looks complete and
    racing processes both end with a valid folder. A complete folder is reused untouched."""
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
    for old in target.parent.glob(f"{target.name}.building-*"):  # killed builds' leftovers
        with contextlib.suppress(OSError):  # an hour old: a younger one may be a live build
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old)
    started = time.perf_counter()
    build = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
    try:
        generate_splits(spec, build, workers=workers)
        files = {
            p.relative_to(build).as_posix(): p.stat().st_size
            for p in build.rglob("*")
            if p.is_file()
        }
        # Written last: its presence means every file it lists is complete.
        marker = {"generator_version": GENERATOR_VERSION, "spec": asdict(spec), "files": files}
        (build / MARKER_NAME).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        _install(build, target, spec)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    logger.info(
        "generated the synthetic dataset (%d/%d/%d actions, %d clips, %.1f MB) in %s in %.1f s",
        spec.num_train,
        spec.num_valid,
        spec.num_test,
        len(files) - len(SPLITS),  # every file but the splits' annotations.json
        sum(files.values()) / 1e6,
        target,
        time.perf_counter() - started,
    )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mvfoul.data.synthetic",
        description="Generate the built-in synthetic SoccerNet-MVFoul-style dataset (real mp4 clips) and print its folder.",
    )
    parser.add_argument(
        "--out",
        help="root folder; the dataset goes into a sub-folder named after the spec "
        "(default: $MVFOUL_CACHE_DIR or ~/.cache/mvfoul, then synthetic/)",
    )
    for f in fields(SyntheticConfig):
        flag = f"--{f.name.replace('_', '-')}"
        parser.add_argument(flag, type=int, default=f.default, help=f"default: {f.default}")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes rendering clips"
    )
    args = parser.parse_args(argv)
    spec = SyntheticConfig(**{f.name: getattr(args, f.name) for f in fields(SyntheticConfig)})
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        print(ensure_synthetic_dataset(spec, root=args.out, workers=args.workers))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


@cross_key_rule("dataset")
def check_generation_settings(cfg: DictConfig, p: Problems) -> None:
    """Every clip is long enough for the foul and the window."""
    dataset = cfg.dataset
    if dataset.name != "synthetic":
        return
    settings = dataset.synthetic
    p.check(
        1 <= settings.min_views <= settings.max_views <= 4,
        "dataset.synthetic.min_views",
        settings.min_views,
        "1 <= min_views <= max_views <= 4",
    )
    p.check(
        settings.clip_frames >= MIN_CLIP_FRAMES,
        "dataset.synthetic.clip_frames",
        settings.clip_frames,
        f">= {MIN_CLIP_FRAMES}",
    )
    indices = configured_window(dataset)
    if indices is not None and indices[-1] >= settings.clip_frames:
        p.add(
            "dataset.end_frame",
            f"{dataset.end_frame} reaches past the generated clips ({settings.clip_frames} frames): "
            "lower it or raise dataset.synthetic.clip_frames",
        )
