"""How fast clips become frames: the official baseline's way vs mvfoul's decoder vs the cache.

One process, the baseline's default window (frames 63..86 sampled at 17 fps -> 16 frames):

  (a) baseline  decode every frame of the clip to RGB with PyAV, then index the window
  (b) decode    mvfoul's decoder (stops at the window's end, seeks to the keyframe before it,
                converts only kept frames), per available backend
  (c) cache     mvfoul's frame cache (frames at training resolution, memory-mapped .npy)

and whether (b) gives exactly (a)'s pixels, and (c) exactly (a) put through the same resize.
Passes are interleaved (a, b, c, a, b, c, ...) so that machine noise hits every method alike;
the median pass counts.

    python benchmarks/data_loading.py                      # the real fixture beside the project
    python benchmarks/data_loading.py --data /data/mvfouls --limit 200

The last line printed is one JSON object with baseline_clips_per_s, decode_clips_per_s,
cache_clips_per_s and frames_equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "fixtures" / "mvfouls-real-sample"


def find_clips(data: Path, limit: int | None) -> list[Path]:
    clips = sorted(data.glob("*/action_*/clip_*.mp4")) or sorted(data.glob("action_*/clip_*.mp4"))
    if not clips:
        raise SystemExit(f"no clips under {data} (expected <split>/action_N/clip_K.mp4)")
    return clips[:limit] if limit else clips


def timed_pass(load, clips: list[Path]) -> tuple[float, list[torch.Tensor]]:
    """Clips per second of one pass over ``clips``, and what each load returned."""
    started = time.perf_counter()
    out = [load(path) for path in clips]
    return len(clips) / (time.perf_counter() - started), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="dataset folder (default: the real fixture)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use at most this many clips")
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved passes per method (median counts)"
    )
    parser.add_argument(
        "--frame-size", type=int, default=224, help="training crop; the cache keeps the 8/7 square"
    )
    args = parser.parse_args()

    from mvfoul.data.frames import ClipLoader
    from mvfoul.data.transforms import ClipTransformConfig, prepare_frames
    from mvfoul.data.video import (
        available_decoders,
        decode_all_frames,
        decode_frames,
        window_frame_indices,
    )

    torch.set_num_threads(1)
    indices = window_frame_indices(63, 87, 17)
    square = ClipTransformConfig(frame_size=args.frame_size).effective_resize_size
    clips = find_clips(args.data, args.limit)
    backends = ["pyav"] + [b for b in ("torchcodec",) if b in available_decoders()]

    def baseline(path: Path) -> torch.Tensor:
        return decode_all_frames(path)[indices]

    methods = {"baseline (full decode, PyAV)": baseline}
    for backend in backends:
        methods[f"mvfoul decoder ({backend})"] = lambda p, b=backend: (
            decode_frames(p, indices, backend=b).frames
        )
    with tempfile.TemporaryDirectory(prefix="mvfoul-bench-cache-") as cache_dir:
        cached = ClipLoader(indices, square, decoder=backends[0], cache_dir=cache_dir)
        for path in clips:  # fill the cache (not timed: that is the one-off build)
            cached(path)
        methods["mvfoul cache (memory-mapped)"] = lambda p: cached(p).frames

        rates: dict[str, list[float]] = {name: [] for name in methods}
        outputs: dict[str, list[torch.Tensor]] = {}
        for _ in range(args.repeats):
            for name, load in methods.items():
                rate, out = timed_pass(load, clips)
                rates[name].append(rate)
                outputs[name] = out

    reference = outputs["baseline (full decode, PyAV)"]
    equal = {}
    for backend in backends:
        decoded = outputs[f"mvfoul decoder ({backend})"]
        equal[backend] = all(torch.equal(a, b) for a, b in zip(reference, decoded))
    resized = [prepare_frames(frames, square) for frames in reference]
    equal["cache"] = all(
        torch.equal(a, b) for a, b in zip(resized, outputs["mvfoul cache (memory-mapped)"])
    )

    median = {name: statistics.median(r) for name, r in rates.items()}
    base = median["baseline (full decode, PyAV)"]
    print(
        f"{len(clips)} clips from {args.data}, window 63..86 at 17 fps ({len(indices)} frames), "
        f"cache at {square}x{square}, median of {args.repeats} interleaved passes, one process"
    )
    print(f"{'method':<32} {'clips/s':>9} {'vs baseline':>12} {'same frames':>12}")
    for name, rate in median.items():
        if name.startswith("baseline"):
            same = "reference"
        elif name.startswith("mvfoul cache"):
            same = str(equal["cache"])
        else:
            same = str(equal[name.split("(")[1].rstrip(")")])
        print(f"{name:<32} {rate:>9.1f} {rate / base:>11.1f}x {same:>12}")

    result = {
        "baseline_clips_per_s": round(base, 2),
        "decode_clips_per_s": round(median["mvfoul decoder (pyav)"], 2),
        "cache_clips_per_s": round(median["mvfoul cache (memory-mapped)"], 2),
        "frames_equal": all(equal.values()),
    }
    if "torchcodec" in backends:
        result["torchcodec_clips_per_s"] = round(median["mvfoul decoder (torchcodec)"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
