"""The LightningDataModule: splits on disk -> datasets -> batches of padded views."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader

from mvfoul.config import SyntheticConfig
from mvfoul.data.annotations import ANNOTATIONS_FILE, Action, find_split_dir, read_soccernet_split
from mvfoul.data.csv_annotations import read_csv_annotations
from mvfoul.data.dataset import MultiViewClipDataset, collate_views
from mvfoul.data.frames import ClipLoader
from mvfoul.data.sampling import ClassBalancedSampler, EpochShuffleSampler, task_class_ids
from mvfoul.data.sharding import RankShare, evaluation_share
from mvfoul.data.synthetic import ensure_synthetic_dataset, synthetic_dataset_dir
from mvfoul.data.transforms import ClipTransformConfig, build_clip_transform
from mvfoul.data.video import resolve_decoder
from mvfoul.errors import DataError
from mvfoul.labels import HEADS
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

SPLIT_CSV_KEYS = {"train": "train_csv", "valid": "val_csv", "test": "test_csv"}


class MultiViewDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: DictConfig,
        frame_indices: Sequence[int],
        sampling: DictConfig | None = None,
        seed: int = 0,
        first_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = dataset
        self.sampling = sampling
        self.seed = seed
        # A resumed run's sampler must start at its epoch: Lightning builds the loader's iterator
        # (persistent workers prefetch from it) before it first sets the sampler's epoch.
        self.first_epoch = first_epoch
        self.frame_indices = tuple(frame_indices)
        # The folder holding Train/ Valid/ Test/.
        self.data_dir = (
            synthetic_dataset_dir(SyntheticConfig(**dataset.synthetic), dataset.data_dir)
            if dataset.name == "synthetic"
            else Path(dataset.data_dir).expanduser()
        )
        self.datasets: dict[str, MultiViewClipDataset] = {}
        self.train_sampler: ClassBalancedSampler | EpochShuffleSampler | None = None
        # Which split trainer.predict reads: the unlabelled challenge split unless told otherwise.
        self.predict_split = "chall"

    def prepare_data(self) -> None:
        # Runs once per node before setup: the only place that writes the built-in dataset.
        if self.cfg.name == "synthetic":
            ensure_synthetic_dataset(
                SyntheticConfig(**self.cfg.synthetic),
                self.cfg.data_dir,
                workers=min(2, os.cpu_count() or 1),
            )

    def clip_loader(self) -> ClipLoader:
        return ClipLoader(
            self.frame_indices,
            self._transform_config().effective_resize_size,
            decoder=resolve_decoder(self.cfg.decoder),
            cache_dir=self.cfg.cache_dir,
        )

    def _transform_config(self) -> ClipTransformConfig:
        settings: dict[str, Any] = {}
        for field in fields(ClipTransformConfig):
            # Null mean/std: the R3D statistics (train_hydra.py and evaluate_hydra.py fill them
            # with the backbone's own, or the checkpoint's record).
            value = self.cfg.get(field.name)
            if value is not None:
                settings[field.name] = tuple(value) if isinstance(value, ListConfig) else value
        return ClipTransformConfig(**settings)

    def _csv_path(self, split: str) -> Path | None:
        csv_key = SPLIT_CSV_KEYS.get(split)
        csv_path = self.cfg.get(csv_key) if csv_key else None
        return self.data_dir / Path(csv_path).expanduser() if csv_path else None

    def annotations_path(self, split: str) -> Path:
        """The file holding the split's ground truth: its CSV, or its annotations.json."""
        return self._csv_path(split) or find_split_dir(self.data_dir, split) / ANNOTATIONS_FILE

    def has_split(self, split: str) -> bool:
        try:
            return self.annotations_path(split).is_file() or split == "chall"
        except DataError:
            return False

    def read_split(self, split: str) -> list[Action]:
        csv_path = self._csv_path(split)
        labelled = split != "chall"  # the challenge split is read for prediction only
        if csv_path:
            actions, report = read_csv_annotations(csv_path, self.data_dir, labelled)
        else:
            actions, report = read_soccernet_split(find_split_dir(self.data_dir, split), labelled)
        log.info("%s: %s", split, report.summary())
        if not actions:
            raise DataError(
                f"{report.split_dir}: no usable action (all dropped or none listed); check its annotations"
            )
        return actions

    def _build(self, split: str, train: bool) -> MultiViewClipDataset:
        return MultiViewClipDataset(
            self.read_split(split),
            self.clip_loader(),
            build_clip_transform(self._transform_config(), train=train),
            views_per_sample=self.cfg.train_views if train else None,
            on_decode_error=self.cfg.on_decode_error,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = self._build("train", train=True)
            self.datasets["valid"] = self._build("valid", train=False)
            self.train_sampler = self._build_sampler()
            self.train_sampler.set_epoch(self.first_epoch)
        eval_splits = {"validate": "valid", "test": "test", "predict": self.predict_split}
        split = eval_splits.get(stage or "fit")
        if split is not None and split not in self.datasets:
            self.datasets[split] = self._build(split, train=False)

    def _build_sampler(self) -> ClassBalancedSampler | EpochShuffleSampler:
        """Both draw from ``(seed, epoch)`` alone: a resumed run draws what an uninterrupted one would."""
        sampling = self.sampling
        if sampling is None or not sampling.use_class_balanced_sampler:
            return EpochShuffleSampler(len(self.datasets["train"]), seed=self.seed)
        labels = self.train_labels()
        class_ids, names = task_class_ids(
            sampling.balance_task, labels["offence_severity"], labels["action"]
        )
        return ClassBalancedSampler(
            class_ids,
            num_classes=len(names),
            oversample_factor=sampling.oversample_factor,
            progressive=sampling.progressive_class_balancing,
            start_epoch=sampling.progressive_start_epoch,
            end_epoch=sampling.progressive_end_epoch,
            num_samples=sampling.samples_per_epoch,
            seed=self.seed,
        )

    def train_labels(self) -> dict[str, list[int]]:
        """Each training action's labels per task (for class weights and balanced sampling)."""
        labels = [a.labels for a in self.datasets["train"].actions]  # a labelled read: never None
        return {head: [getattr(label, head) for label in labels] for head in HEADS}

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.cfg
        batch_size = dataset.batch_size
        if not train and dataset.eval_batch_size is not None:
            batch_size = dataset.eval_batch_size
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler: Iterable[Any] | None = None
        if train:
            assert self.train_sampler is not None, "setup('fit') builds the training sampler"
            sampler = self.train_sampler
            if world_size > 1:
                sampler = RankShare(self.train_sampler, rank, world_size)
        elif world_size > 1:
            sampler = evaluation_share(len(self.datasets[split]), rank, world_size)
        # Pin only for a CUDA trainer: a CPU run on a GPU machine gains nothing from it.
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        workers = dataset.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_views,
            pin_memory=on_gpu if dataset.pin_memory is None else dataset.pin_memory,
            persistent_workers=dataset.persistent_workers and workers > 0,
            prefetch_factor=dataset.prefetch_factor if workers > 0 else None,
            # No worker_init_fn: training samples carry their own seeds (mvfoul.data.sampling.Draw),
            # and Lightning's own worker seeding (rank-aware) covers anything else.
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, train=False)


# torch's messages when a DataLoader worker process dies (the OOM killer sends SIGKILL).
_WORKER_DIED = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (?:exited unexpectedly|is killed by signal: ([^.\n]+))"
)


def worker_death_message(err: BaseException, num_workers: int) -> str | None:
    """One line for a DataLoader worker that died (typically the out-of-memory killer), else None."""
    match = _WORKER_DIED.search(str(err))
    if match is None:
        return None
    signal = f" ({match.group(2)})" if match.group(2) else ""
    return (
        f"a DataLoader worker process (pid {match.group(1).strip()}) died{signal}, most likely killed by the system "
        f"for lack of memory: lower dataset.num_workers (now {num_workers}) or dataset.batch_size, or give the job more memory"
    )


@cross_key_rule("dataset")
def check_data_location(cfg: DictConfig, p: Problems) -> None:
    """The real dataset's folder, and any CSV annotation files, exist."""
    dataset = cfg.dataset
    if dataset.name != "mvfouls":
        return
    if OmegaConf.is_missing(dataset, "data_dir") or dataset.data_dir in (None, ""):
        p.add(
            "dataset.data_dir",
            "missing (the folder with Train/ Valid/ Test/): "
            "run `python train_hydra.py dataset.data_dir=/path/to/mvfouls`, "
            "or try the built-in dataset with `python train_hydra.py --config-name quick_test`",
        )
        return
    data_dir = Path(dataset.data_dir).expanduser()
    if not data_dir.is_dir():
        p.add(
            "dataset.data_dir",
            f"{dataset.data_dir!r} is not a folder: point it at the folder holding Train/ Valid/ Test/",
        )
        return
    for key in SPLIT_CSV_KEYS.values():
        if dataset[key] is not None and not (data_dir / Path(dataset[key]).expanduser()).is_file():
            p.add(
                f"dataset.{key}",
                f"{dataset[key]!r} is not a file (relative paths start at dataset.data_dir)",
            )
