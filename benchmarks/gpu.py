"""Training throughput on a CUDA GPU, and whether the data loader keeps up. One command, one table.

    python benchmarks/gpu.py                      # MViT-v2-S and r3d_18, 16x224, 2 views, batch 8
    python benchmarks/gpu.py --batch 16 --steps 30 --no-compile

For each backbone (random weights: no download) and each precision (32-true, 16-mixed, bf16-mixed),
with and without ``channels_last_3d`` (``system.channels_last``) and ``torch.compile``
(``system.compile``; ``--no-compile`` skips it, compiling takes minutes): training steps per second
of the multi-view network (forward, loss, backward, AdamW step; fp16 with a gradient scaler), after
warm-up, CUDA-synchronised, and the clips per second that makes. Then the loader: batches per second
that ``dataset.num_workers`` DataLoader workers deliver at the same size, decoding the built-in
dataset's mp4 clips and reading the frame cache, set against the fastest training step: below 1.0x
the GPU waits for data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mvfoul.losses import MultiTaskLoss  # noqa: E402
from mvfoul.models.net import MultiViewNet  # noqa: E402

PRECISIONS = {"32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def train_rate(
    backbone: str,
    precision: str,
    channels_last: bool,
    compile_: bool,
    batch: int,
    views: int,
    steps: int,
) -> float:
    """Training steps per second (median of per-step times after warm-up)."""
    device = torch.device("cuda")
    net = MultiViewNet(backbone, pretrained=False, channels_last=channels_last).to(device)
    if compile_:
        net.backbone.compile()
    criterion = MultiTaskLoss(function="focal", focal_gamma=2.0).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    video = torch.randn(batch, views, 3, 16, 224, 224, device=device)
    mask = torch.ones(batch, views, dtype=torch.bool, device=device)
    targets = {
        "offence_severity": torch.randint(0, 4, (batch,), device=device),
        "action": torch.randint(0, 8, (batch,), device=device),
    }
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = criterion(net(video, mask), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize()
        if step >= 5:  # warm-up (and compilation)
            times.append(time.perf_counter() - start)
    del net, optimizer
    torch.cuda.empty_cache()
    return 1.0 / statistics.median(times)


def loader_rate(batch: int, workers: int, cache: bool, batches: int) -> float:
    """Training batches per second from the DataLoader (built-in data, 16 frames of 224 px)."""
    from hydra import compose, initialize_config_dir

    from mvfoul.data.datamodule import MultiViewDataModule
    from mvfoul.paths import CONF_DIR
    from mvfoul.rules import validate_config, with_schema

    with tempfile.TemporaryDirectory() as cache_dir:
        overrides = [
            "dataset=synthetic",
            f"dataset.batch_size={batch}",
            f"dataset.num_workers={workers}",
            "dataset.frame_size=224",
            "model=tiny",
            "model.pretrained=false",
            "system=cpu",
            *([f"dataset.cache_dir={cache_dir}"] if cache else []),
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = with_schema(compose("config", overrides=overrides))
        resolved = validate_config(cfg)
        dm = MultiViewDataModule(cfg.dataset, resolved.frame_indices, cfg.sampling, seed=0)
        dm.prepare_data()
        dm.setup("fit")
        rates = []
        for epoch in range(2 if cache else 1):  # with the cache: the first epoch fills it
            dm.train_sampler.set_epoch(epoch)
            loader = dm.train_dataloader()
            start, count = time.perf_counter(), 0
            for count, _ in enumerate(loader, start=1):
                if count == batches:
                    break
            rates.append(count / (time.perf_counter() - start))
        return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["mvit_v2_s", "r3d_18"])
    parser.add_argument(
        "--batch", type=int, default=8, help="actions per batch (each with --views clips)"
    )
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="leave out torch.compile (compiling takes minutes)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU; this machine has none")
    print(
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; batch {args.batch} actions x {args.views} views, 16x224\n"
    )
    print("| backbone | precision | channels_last_3d | compile | steps/s | clips/s |")
    print("|---|---|---|---|---|---|")
    best: dict[str, float] = {}
    for backbone in args.backbones:
        for precision in PRECISIONS:
            for channels_last in (False, True):
                for compile_ in (False,) if args.no_compile else (False, True):
                    try:
                        rate = train_rate(
                            backbone,
                            precision,
                            channels_last,
                            compile_,
                            args.batch,
                            args.views,
                            args.steps,
                        )
                    except Exception as err:  # noqa: BLE001 - a variant a GPU cannot run is a table cell
                        print(
                            f"| {backbone} | {precision} | {channels_last} | {compile_} | failed: {type(err).__name__} | |"
                        )
                        continue
                    best[backbone] = max(best.get(backbone, 0.0), rate)
                    print(
                        f"| {backbone} | {precision} | {channels_last} | {compile_} | {rate:.2f} | {rate * args.batch * args.views:.1f} |",
                        flush=True,
                    )
    print("\n| loader | batches/s | vs the fastest training step of each backbone |")
    print("|---|---|---|")
    for cache in (False, True):
        rate = loader_rate(args.batch, args.workers, cache, batches=20)
        ratios = ", ".join(f"{b}: {rate / r:.2f}x" for b, r in best.items())
        print(
            f"| {args.workers} workers, {'frame cache' if cache else 'decoding mp4'} | {rate:.2f} | {ratios} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
