"""Do the imbalance techniques help? Defaults vs every optimisation off, over several seeds.

Trains the tiny backbone on the built-in dataset (imbalanced on purpose) with the same budget
for each arm and seed, by running ``train_hydra.py`` as a user would, then reports validation
balanced accuracy of both tasks (mean and standard deviation over seeds) at the last epoch and at
the best epoch of ``val/leaderboard``.

    python benchmarks/imbalance_techniques.py                    # 3 seeds, 20 epochs
    python benchmarks/imbalance_techniques.py --seeds 0 1 2 3 4 --epochs 30

Arms:
  off         sampling=none, freezing=none, loss=ce without label smoothing or class weights
  no_weights  progressive balanced sampling, progressive unfreezing, focal loss; no class weights
  defaults    the defaults: no_weights + effective-number class weights (label smoothing then
              switches itself off)
  no_weights_no_freeze   no_weights with freezing=none (isolates the unfreezing schedule)
  defaults_no_freeze     defaults with freezing=none

Every arm pins the settings it measures (one learning rate of 1e-3, weight decay 0.01), so its
numbers do not move when a default does.

The validation split is enlarged (100 actions) so that the rare classes' recall, and with it
balanced accuracy, is measured on more than one or two clips.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What every arm shares besides quick_test: the optimiser settings the README's table was measured with.
COMMON = [
    "training.learning_rate=1e-3",
    "training.head_lr=null",
    "training.backbone_lr=null",
    "training.weight_decay=0.01",
]
NO_WEIGHTS = ["loss.use_class_weights=false", "loss.label_smoothing=0.0"]
ARMS: dict[str, list[str]] = {
    "off": ["sampling=none", "freezing=none", "loss=ce", *NO_WEIGHTS],
    "no_weights": ["sampling=progressive", "freezing=progressive", "loss=focal", *NO_WEIGHTS],
    "defaults": [
        "sampling=progressive",
        "freezing=progressive",
        "loss=focal",
        "loss.use_class_weights=true",
    ],
    # Minus gradual unfreezing: separates the freezing schedule from the imbalance tools.
    "no_weights_no_freeze": ["sampling=progressive", "freezing=none", "loss=focal", *NO_WEIGHTS],
    "defaults_no_freeze": [
        "sampling=progressive",
        "freezing=none",
        "loss=focal",
        "loss.use_class_weights=true",
    ],
}
METRICS = ("val/sev_bacc", "val/action_bacc", "val/leaderboard")


def run_arm(arm: str, seed: int, epochs: int, extra: list[str], out: Path) -> dict:
    run_dir = out / arm / f"seed{seed}"
    if (run_dir / "summary.json").is_file():  # finished earlier: mvfoul never overwrites a run
        print(f"{arm:9s} seed {seed}: already in {run_dir}", flush=True)
        return read_run(arm, seed, run_dir)
    command = [
        sys.executable,
        str(ROOT / "train_hydra.py"),
        "--config-name",
        "quick_test",
        *COMMON,
        *ARMS[arm],
        f"system.seed={seed}",
        f"training.max_epochs={epochs}",
        "experiment.save_top_k=0",
        "dataset.synthetic.num_valid=100",
        "experiment.save_last=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} failed:\n{result.stderr[-3000:]}")
    print(f"{arm:9s} seed {seed}: {time.monotonic() - started:.0f} s", flush=True)
    return read_run(arm, seed, run_dir)


def read_run(arm: str, seed: int, run_dir: Path) -> dict:
    """Last-epoch metrics, and those of the epoch with the best val/leaderboard."""
    summary = json.loads((run_dir / "summary.json").read_text())
    history = {int(e): m for e, m in summary["history"].items()}
    last = history[max(history)]
    best_epoch = max(history, key=lambda e: history[e].get("val/leaderboard") or float("-inf"))
    return {
        "arm": arm,
        "seed": seed,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "last": {m: last.get(m) for m in METRICS},
        "best": {m: history[best_epoch].get(m) for m in METRICS},
    }


def mean_std(values: list[float | None]) -> str:
    # summary.json is strict JSON: a NaN metric (a class absent from validation) is null.
    values = [math.nan if v is None else v for v in values]
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(results: list[dict], which: str) -> str:
    lines = [f"| arm | {' | '.join(METRICS)} |", "|---|" + "---|" * len(METRICS)]
    for arm in ARMS:
        rows = [r for r in results if r["arm"] == arm]
        if rows:
            cells = [mean_std([r[which][m] for r in rows]) for m in METRICS]
            lines.append(f"| {arm} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "imbalance")
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from finished runs"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    if not args.report_only:
        for seed in args.seeds:
            for arm in args.arms:
                run_arm(arm, seed, args.epochs, args.overrides, args.out)
    # The report reads every finished run under --out, so arms can be run separately.
    results = [
        read_run(arm, seed, args.out / arm / f"seed{seed}")
        for arm in ARMS
        for seed in args.seeds
        if (args.out / arm / f"seed{seed}" / "summary.json").is_file()
    ]
    report = (
        f"Validation balanced accuracy (%), built-in dataset, tiny backbone, {args.epochs} epochs, "
        f"seeds {args.seeds}; mean ± std over seeds\n\nLast epoch:\n\n{table(results, 'last')}\n\n"
        f"Epoch with the best val/leaderboard:\n\n{table(results, 'best')}\n"
    )
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(report)


if __name__ == "__main__":
    main()
