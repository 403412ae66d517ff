"""Fill the frame cache before training (``python build_cache.py``), every clip in parallel, so
the first epoch already reads at cache speed."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mvfoul.data.datamodule import SPLIT_CSV_KEYS, MultiViewDataModule
from mvfoul.data.frames import ClipLoader
from mvfoul.errors import ConfigError, DataError


@dataclass
class CacheReport:
    cache_dir: Path
    new: int = 0  # clips decoded and stored now
    present: int = 0  # clips already cached
    repaired: int = 0  # damaged entries found and decoded again (counted in new too)
    unreadable: list[str] = field(default_factory=list)  # one message per clip that failed
    size_bytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        line = (
            f"frame cache {self.cache_dir}: {self.new + self.present} clips ({self.new} decoded now, "
            f"{self.present} already cached), {human_size(self.size_bytes)}, {self.seconds:.1f} s"
        )
        if self.repaired:
            line += f"; {self.repaired} damaged entr(y/ies) decoded again"
        if self.unreadable:
            line += (
                f"; {len(self.unreadable)} unreadable clip(s) skipped, first: {self.unreadable[0]}"
            )
        return line


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _cache_one(loader: ClipLoader, path: str) -> tuple[bool, bool]:
    """(already cached, a damaged entry replaced): not the frames, pickled back for nothing."""
    clip = loader(Path(path))
    return clip.cached, clip.repaired is not None


def build_cache(
    cfg: DictConfig, frame_indices: tuple[int, ...], workers: int, progress: bool = True
) -> CacheReport:
    if not cfg.dataset.cache_dir:
        raise ConfigError(
            "dataset.cache_dir: not set; give the folder the cache should live in, e.g. dataset.cache_dir=/data/mvfouls-cache"
        )
    started = time.monotonic()
    datamodule = MultiViewDataModule(cfg.dataset, frame_indices, seed=cfg.system.seed)
    datamodule.prepare_data()
    loader = datamodule.clip_loader()
    assert loader.cache_dir is not None
    clips: set[Path] = set()
    for split in SPLIT_CSV_KEYS:
        try:  # a split folder may be absent (a split with a CSV is always read)
            datamodule.annotations_path(split)
        except DataError:
            continue
        # Entries are keyed by the resolved file: splits sharing files (links) share entries.
        clips.update(
            clip.resolve() for action in datamodule.read_split(split) for clip in action.clips
        )
    report = CacheReport(cache_dir=loader.cache_dir)
    columns = (
        TextColumn("caching frames"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with (
        Progress(*columns, disable=not progress) as bar,
        ProcessPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        task = bar.add_task("cache", total=len(clips))
        futures = [pool.submit(_cache_one, loader, str(path)) for path in sorted(clips)]
        for future in as_completed(futures):
            bar.advance(task)
            try:
                cached, repaired = future.result()
            except DataError as err:
                report.unreadable.append(str(err))
                continue
            if cached:
                report.present += 1
            else:
                report.new += 1
            if repaired:
                report.repaired += 1
    report.size_bytes = loader.cache_size_bytes()
    report.seconds = time.monotonic() - started
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python build_cache.py",
        description="Decode every clip's frame window once into dataset.cache_dir, in parallel.",
        epilog="Example: python build_cache.py dataset.data_dir=/data/mvfouls dataset.cache_dir=/data/mvfouls-cache",
    )
    parser.add_argument(
        "--config-name", default="config", help="primary config or preset (as for train_hydra.py)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="decoding processes (default: dataset.num_workers, at least 1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. dataset.cache_dir=/path"
    )
    return parser.parse_args(argv)
