"""Does capping torch's threads help a CPU run whose DataLoader workers decode on the same cores?

Runs ``train_hydra.py --config-name quick_test`` (built-in dataset, tiny backbone, 2 epochs) as a
user does, in variants interleaved round by round (A B C A B C ...), and reports per variant the
median over rounds of the whole command's wall time and of the time spent in ``trainer.fit``
(``summary.json``'s ``fit_time_s``), with the median absolute deviation.

    python benchmarks/cpu_threads.py                 # 5 rounds
    python benchmarks/cpu_threads.py --rounds 7

Variants (cores = this process's CPU affinity):
  before   2 workers, torch threads = cores (torch's default, what mvfoul did before)
  capped   2 workers, threads = the cores left after the workers, at least 1 (mvfoul's default,
           and the quick_test preset as shipped)
  one      1 worker, threads = the cores left
  none     no worker (decoding in the training process), threads = cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0))
VARIANTS = {
    "before": ["dataset.num_workers=2", f"system.num_threads={CORES}"],
    "capped": ["dataset.num_workers=2"],
    "one": ["dataset.num_workers=1"],
    "none": ["dataset.num_workers=0"],
}


def run(variant: str, out: Path, n: int) -> tuple[float, float]:
    run_dir = out / f"{variant}_{n}"
    command = [
        sys.executable,
        str(ROOT / "train_hydra.py"),
        "--config-name",
        "quick_test",
        *VARIANTS[variant],
        f"hydra.run.dir={run_dir}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{result.stderr[-3000:]}")
    return wall, json.loads((run_dir / "summary.json").read_text())["fit_time_s"]


def median_mad(values: list[float]) -> str:
    median = statistics.median(values)
    return f"{median:.2f} ± {statistics.median(abs(v - median) for v in values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        # One untimed run generates the built-in dataset, so no variant pays for it.
        run("one", Path(out), -1)
        for n in range(args.rounds):
            for variant in VARIANTS:
                times[variant].append(run(variant, Path(out), n))
                print(
                    f"round {n} {variant}: {times[variant][-1][0]:.2f} s wall, {times[variant][-1][1]:.2f} s fit",
                    flush=True,
                )
    base_wall = statistics.median(w for w, _ in times["before"])
    base_fit = statistics.median(f for _, f in times["before"])
    print(f"\n{CORES} cores; median ± MAD of {args.rounds} interleaved rounds\n")
    print("| variant | wall (s) | fit (s) | wall vs before | fit vs before |")
    print("|---|---|---|---|---|")
    for variant, pairs in times.items():
        walls, fits = [w for w, _ in pairs], [f for _, f in pairs]
        print(
            f"| {variant} | {median_mad(walls)} | {median_mad(fits)} | "
            f"{statistics.median(walls) / base_wall:.2f}x | {statistics.median(fits) / base_fit:.2f}x |"
        )


if __name__ == "__main__":
    main()
