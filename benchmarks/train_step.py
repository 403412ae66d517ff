"""What does mvfoul's training stack cost per step over a bare PyTorch loop?

The same model, the same batches and the same optimiser and schedule run twice in one process:
through mvfoul's whole stack (``build_trainer``: Lightning's loop, mvfoul's callbacks — the
divergence guard, the epoch history, last.ckpt, checkpoints, LR monitor, progress bar — and its
CSV and TensorBoard loggers, logging every step) and through a plain loop (forward, loss,
backward, gradient clipping, optimiser and scheduler steps). The two alternate (A B A B ...) and
each step's time is taken from one step's start to the next's, in wall time and in the process's
CPU time. The overhead is the median over rounds of each round's ratio of median CPU times: on a
shared machine the wall time drifts by more than the effect measured (CPU time counts every
thread of the process, the loggers' included, and not the time the machine gave to others).

    python benchmarks/train_step.py                   # tiny at 8x64 and r3d_18 at 8x112, 2 views
    python benchmarks/train_step.py --rounds 9 --backbones tiny

The last line is JSON: ``{"mvfoul_step_s", "bare_step_s", "overhead", "overhead_wall"}`` for the
backbone with the largest overhead (mvfoul / bare): the step times are wall-time medians;
``overhead`` is the CPU-time ratio described above, ``overhead_wall`` the same with wall times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import mvfoul.config  # noqa: E402,F401
from mvfoul.data.dataset import collate_views  # noqa: E402
from mvfoul.paths import CONF_DIR  # noqa: E402
from mvfoul.rules import validate_config, with_schema  # noqa: E402
from mvfoul.training.module import MultiViewFoulModule, configure_optimization  # noqa: E402
from mvfoul.training.summary import EpochHistory  # noqa: E402
from mvfoul.training.trainer import build_trainer  # noqa: E402

# backbone -> (frames, frame size, steps per run); r3d_18 takes ~3 s a step on a 2-core CPU.
CASES = {"tiny": (8, 64, 120), "r3d_18": (8, 112, 12)}
WARMUP = 5  # steps per run left out of the medians
BATCH, VIEWS = 4, 2


def config(backbone: str, frames: int, size: int) -> Any:
    overrides = [
        f"model.backbone={backbone}",
        "model.pretrained=false",
        "sampling=none",
        "freezing=none",
        "loss.use_class_weights=false",
        "dataset.start_frame=67",
        "dataset.end_frame=83",
        "dataset.fps=12.5",
        f"dataset.frame_size={size}",
        f"dataset.batch_size={BATCH}",
        "training.max_epochs=1",
        "experiment.limit_val_batches=0",
        "experiment.test_after_fit=false",
        f"system.num_threads={torch.get_num_threads()}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = with_schema(compose("quick_test", overrides=overrides))
    resolved = validate_config(cfg)
    assert resolved.num_frames == frames
    cfg.dataset.mean, cfg.dataset.std = list(resolved.mean), list(resolved.std)
    return cfg


def batches(frames: int, size: int, steps: int) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(0)
    samples = [
        {
            "video": torch.randn(VIEWS, 3, frames, size, size, generator=generator),
            "offence_severity": i % 4,
            "action": i % 8,
            "severity_match": i % 4,
            "action_id": str(i),
            "num_padded_frames": 0,
            "faults": [],
        }
        for i in range(steps * BATCH)
    ]
    return [collate_views(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH)]


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def durations(starts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, cpu) of each step, from one step's start to the next's."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, starts[1:])]


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.starts.append(now())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(now())


def mvfoul_steps(cfg: Any, data: list[dict[str, Any]], run_dir: Path) -> list[tuple[float, float]]:
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    module = MultiViewFoulModule(config_dict)
    clock = StepClock()
    trainer = build_trainer(cfg, run_dir, config_dict, history=EpochHistory())
    trainer.callbacks.append(clock)
    loader = DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return durations(clock.starts)


def bare_steps(cfg: Any, data: list[dict[str, Any]]) -> list[tuple[float, float]]:
    torch.manual_seed(0)
    module = MultiViewFoulModule(OmegaConf.to_container(cfg, resolve=True))
    setup = configure_optimization(cfg, module.net, len(data))
    optimizer = setup["optimizer"]
    scheduler = setup["lr_scheduler"]["scheduler"]
    module.train()
    starts = []
    for batch in data:
        starts.append(now())
        logits = module(batch["video"], batch["view_mask"])
        loss, _ = module.criterion(
            logits, {"offence_severity": batch["offence_severity"], "action": batch["action"]}
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.training.gradient_clip_val)
        optimizer.step()
        scheduler.step()
    starts.append(now())
    return durations(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backbones", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    import logging

    logging.disable(logging.INFO)  # Lightning's and mvfoul's start-up lines, for every run
    results = {}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batches of {BATCH} actions x {VIEWS} views"
    )
    print(
        "| backbone | input | mvfoul step, wall (ms) | bare step, wall (ms) | overhead, CPU time (range of rounds) | overhead, wall |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            frames, size, steps = CASES[backbone]
            cfg = config(backbone, frames, size)
            data = batches(frames, size, steps)
            walls: dict[str, list[float]] = {"ours": [], "bare": []}
            cpu_ratios: list[float] = []
            wall_ratios: list[float] = []
            for n in range(args.rounds):
                ours = mvfoul_steps(cfg, data, Path(tmp) / f"{backbone}_{n}")[WARMUP:]
                bare = bare_steps(cfg, data)[WARMUP:]
                walls["ours"] += [w for w, _ in ours]
                walls["bare"] += [w for w, _ in bare]
                cpu_ratios.append(
                    statistics.median(c for _, c in ours) / statistics.median(c for _, c in bare)
                )
                wall_ratios.append(
                    statistics.median(w for w, _ in ours) / statistics.median(w for w, _ in bare)
                )
            m, b = statistics.median(walls["ours"]), statistics.median(walls["bare"])
            overhead, overhead_wall = statistics.median(cpu_ratios), statistics.median(wall_ratios)
            results[backbone] = {
                "mvfoul_step_s": m,
                "bare_step_s": b,
                "overhead": overhead,
                "overhead_wall": overhead_wall,
            }
            print(
                f"| {backbone} | {frames}x{size} | {m * 1e3:.2f} | {b * 1e3:.2f} | {overhead:.3f} "
                f"({min(cpu_ratios):.3f}-{max(cpu_ratios):.3f}) | {overhead_wall:.3f} |",
                flush=True,
            )
    worst = max(results.values(), key=lambda r: r["overhead"])
    print(json.dumps({k: round(v, 6) for k, v in worst.items()}))


if __name__ == "__main__":
    main()
