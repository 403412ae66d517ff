"""Evaluation throughput: batched multi-view evaluation vs the baseline's batch-size-1 loop.

The official VARS baseline evaluates one action per step (its views differ in number, so it
never batches). mvfoul pads views to the batch's largest count and carries a mask. Same model
(the tiny backbone, quick_test settings), same data (the built-in dataset's validation split),
every action's views decoded in the loop; actions per second, median of interleaved passes:

  (a) batch size 1, decoding in the loop        the baseline's way
  (b) batched, decoding in the loop             batching alone
  (c) batched, 2 DataLoader workers             mvfoul's evaluation path on a 2-core machine
  (d) batch size 1, frames from the cache       the baseline's loop without the decoding cost
  (e) batched, frames from the cache            with dataset.cache_dir

    python benchmarks/evaluation_throughput.py [--batch-size 16] [--repeats 3] [overrides ...]

Overrides apply to the quick_test preset (e.g. dataset.frame_size=112 dataset.start_frame=63
dataset.end_frame=87 dataset.fps=17 for 16 frames of 112 px). The last line printed is one JSON
object with the rates and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the quick_test preset")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir
    from torch.utils.data import DataLoader

    from mvfoul.data.datamodule import MultiViewDataModule
    from mvfoul.data.dataset import collate_views
    from mvfoul.models.net import MultiViewNet
    from mvfoul.paths import CONF_DIR
    from mvfoul.rules import validate_config, with_schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = with_schema(compose("quick_test", overrides=args.overrides))
    frames = validate_config(cfg).frame_indices
    torch.manual_seed(0)
    net = MultiViewNet("tiny", shared_dim=cfg.model.shared_dim).eval()

    def build(cache_dir: str | None):
        dataset_cfg = cfg.dataset.copy()
        dataset_cfg.cache_dir = cache_dir
        dm = MultiViewDataModule(dataset_cfg, frames)
        dm.prepare_data()
        dm.setup("validate")
        return dm.datasets["valid"]

    def rate(dataset, batch_size: int, workers: int) -> float:
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_views
        )
        started = time.perf_counter()
        with torch.inference_mode():
            for batch in loader:
                net(batch["video"], batch["view_mask"])
        return len(dataset) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="mvfoul-eval-cache-") as cache_dir:
        plain, cached = build(None), build(cache_dir)
        rate(cached, args.batch_size, 0)  # fills the cache (not timed)
        methods = {
            "(a) batch size 1 (baseline)": lambda: rate(plain, 1, 0),
            f"(b) batch size {args.batch_size}": lambda: rate(plain, args.batch_size, 0),
            f"(c) batch size {args.batch_size}, 2 workers": lambda: rate(plain, args.batch_size, 2),
            "(d) batch size 1, frame cache": lambda: rate(cached, 1, 0),
            f"(e) batch size {args.batch_size}, frame cache": lambda: rate(
                cached, args.batch_size, 0
            ),
        }
        runs: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, measure in methods.items():
                runs[name].append(measure())

    a, b, c, d, e = (statistics.median(r) for r in runs.values())
    print(
        f"{len(plain)} validation actions of the built-in dataset, tiny backbone, "
        f"{len(frames)} frames of {cfg.dataset.frame_size} px, median of {args.repeats} interleaved passes"
    )
    print(f"{'method':<36} {'actions/s':>10} {'vs (a)':>8}")
    for name, value in zip(runs, (a, b, c, d, e)):
        print(f"{name:<36} {value:>10.1f} {value / a:>7.1f}x")
    print(f"batching alone, decoding removed: (e)/(d) = {e / d:.1f}x")
    result = {
        "batch1_actions_per_s": round(a, 2),
        "batched_actions_per_s": round(b, 2),
        "batched_workers_actions_per_s": round(c, 2),
        "batch1_cache_actions_per_s": round(d, 2),
        "batched_cache_actions_per_s": round(e, 2),
        "batched_vs_batch1": round(b / a, 2),
        "batched_workers_vs_batch1": round(c / a, 2),
        "batched_vs_batch1_cached": round(e / d, 2),
        "batched_cache_vs_batch1": round(e / a, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
