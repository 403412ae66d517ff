"""The LightningDataModule: splits on disk -> datasets -> batches of padded views."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from mvfoul.config import SyntheticConfig
from mvfoul.data.annotations import ANNOTATIONS_FILE, Action, find_split_dir, read_soccernet_split
from mvfoul.data.csv_annotations import read_csv_annotations
from mvfoul.data.dataset import MultiViewClipDataset, collate_views
from mvfoul.data.frames import ClipLoader
from mvfoul.data.sampling import ClassBalancedSampler, EpochShuffleSampler, task_class_ids
from mvfoul.data.sharding import EvaluationShare, RankShare
from mvfoul.data.synthetic import ensure_synthetic_dataset, synthetic_dataset_dir
from mvfoul.data.transforms import ClipTransformConfig, build_clip_transform
from mvfoul.data.video import resolve_decoder
from mvfoul.errors import DataError

log = logging.getLogger(__name__)


# Split -> the dataset key of its CSV annotations.
SPLIT_CSV_KEYS = {"train": "train_csv", "valid": "val_csv", "test": "test_csv"}


def synthetic_spec(dataset: DictConfig) -> SyntheticConfig:
    return SyntheticConfig(**dataset.synthetic)


def resolve_data_dir(dataset: DictConfig) -> Path:
    """The folder holding Train/ Valid/ Test/ for this dataset config."""
    if dataset.name == "synthetic":
        return synthetic_dataset_dir(synthetic_spec(dataset), dataset.data_dir)
    return Path(dataset.data_dir).expanduser()


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
        # The epoch training starts at (a resumed run's). Lightning builds the loader's iterator
        # (and persistent workers prefetch from the sampler) before it first sets the sampler's
        # epoch, so the sampler must start at the right one.
        self.first_epoch = first_epoch
        self.frame_indices = tuple(frame_indices)
        self.data_dir = resolve_data_dir(dataset)
        self.datasets: dict[str, MultiViewClipDataset] = {}
        self.train_sampler: ClassBalancedSampler | EpochShuffleSampler | None = None
        # Which split trainer.predict reads: the unlabelled challenge split unless told otherwise.
        self.predict_split = "chall"

    def prepare_data(self) -> None:
        # Runs once per node before setup: the only place that writes the built-in dataset.
        if self.cfg.name == "synthetic":
            ensure_synthetic_dataset(
                synthetic_spec(self.cfg), self.cfg.data_dir, workers=min(2, os.cpu_count() or 1)
            )

    def clip_loader(self) -> ClipLoader:
        """Path -> prepared frames (decoded, resized; through the frame cache when configured)."""
        d = self.cfg
        return ClipLoader(
            self.frame_indices,
            self._transform_config().effective_resize_size,
            decoder=resolve_decoder(d.decoder),
            cache_dir=d.cache_dir,
        )

    def _transform_config(self) -> ClipTransformConfig:
        d = self.cfg
        # train_hydra.py and evaluate_hydra.py fill mean/std with the backbone's own (or the
        # checkpoint's record); bare configs fall back to the R3D statistics.
        normalisation = {key: tuple(d[key]) for key in ("mean", "std") if d.get(key) is not None}
        return ClipTransformConfig(
            **normalisation,
            frame_size=d.frame_size,
            resize_size=d.resize_size,
            augment=d.augment,
            hflip_prob=d.hflip_prob,
            crop_scale_min=d.crop_scale_min,
            color_jitter=d.color_jitter,
        )

    def annotations_path(self, split: str) -> Path:
        """The file holding the split's ground truth: its CSV, or its annotations.json."""
        csv_key = SPLIT_CSV_KEYS.get(split)
        csv_path = self.cfg.get(csv_key) if csv_key else None
        if csv_path:
            return self.data_dir / Path(csv_path).expanduser()
        return find_split_dir(self.data_dir, split) / ANNOTATIONS_FILE

    def has_split(self, split: str) -> bool:
        try:
            return self.annotations_path(split).is_file() or split == "chall"
        except DataError:
            return False

    def read_split(self, split: str) -> list[Action]:
        """The split's actions, from its CSV when ``dataset.<split>_csv`` is set, else from
        ``<data_dir>/<Split>/annotations.json``."""
        csv_key = SPLIT_CSV_KEYS.get(split)
        csv_path = self.cfg.get(csv_key) if csv_key else None
        # The challenge split has no labels: it is read for prediction only.
        labelled = split != "chall"
        if csv_path:
            actions, report = read_csv_annotations(
                self.data_dir / Path(csv_path).expanduser(), self.data_dir, labelled
            )
        else:
            actions, report = read_soccernet_split(find_split_dir(self.data_dir, split), labelled)
        log.info("%s: %s", split, report.summary())
        if not actions:
            raise DataError(
                f"{report.split_dir}: no usable action (all dropped or none listed); check its annotations"
            )
        return actions

    def _build(self, split: str, train: bool) -> MultiViewClipDataset:
        transform = build_clip_transform(self._transform_config(), train=train)
        return MultiViewClipDataset(
            self.read_split(split),
            self.clip_loader(),
            transform,
            views_per_sample=self.cfg.train_views if train else None,
            on_decode_error=self.cfg.on_decode_error,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = self._build("train", train=True)
            self.datasets["valid"] = self._build("valid", train=False)
            self.train_sampler = self._build_sampler()
            self.train_sampler.set_epoch(self.first_epoch)
        if stage == "validate" and "valid" not in self.datasets:
            self.datasets["valid"] = self._build("valid", train=False)
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self._build("test", train=False)
        if stage == "predict" and self.predict_split not in self.datasets:
            self.datasets[self.predict_split] = self._build(self.predict_split, train=False)

    def _build_sampler(self) -> ClassBalancedSampler | EpochShuffleSampler:
        """The training split's sampler: class-balanced when sampling asks for it, else a uniform
        shuffle. Both draw each epoch from ``(seed, epoch)`` alone (see :mod:`mvfoul.data.sampling`),
        so a resumed run draws exactly what the uninterrupted run would have."""
        s = self.sampling
        if s is None or not s.use_class_balanced_sampler:
            return EpochShuffleSampler(len(self.datasets["train"]), seed=self.seed)
        labels = self.train_labels()
        class_ids, names = task_class_ids(
            s.balance_task, labels["offence_severity"], labels["action"]
        )
        return ClassBalancedSampler(
            class_ids,
            num_classes=len(names),
            oversample_factor=s.oversample_factor,
            progressive=s.progressive_class_balancing,
            start_epoch=s.progressive_start_epoch,
            end_epoch=s.progressive_end_epoch,
            num_samples=s.samples_per_epoch,
            seed=self.seed,
        )

    def train_labels(self) -> dict[str, list[int]]:
        """Each training action's labels per task (for class weights and balanced sampling)."""
        labels = [a.labels for a in self.datasets["train"].actions]
        known = [label for label in labels if label is not None]
        if len(known) != len(labels):
            raise DataError(
                "the training split has actions without labels; it cannot be trained on"
            )
        return {
            "offence_severity": [label.offence_severity for label in known],
            "action": [label.action for label in known],
        }

    def _world(self) -> tuple[int, int]:
        """(rank, world size) of the run this DataModule feeds; (0, 1) outside a trainer."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, train: bool) -> DataLoader:
        d = self.cfg
        batch_size = d.batch_size if train or d.eval_batch_size is None else d.eval_batch_size
        rank, world_size = self._world()
        sampler: Sampler | None
        if train:
            assert self.train_sampler is not None, "setup('fit') builds the training sampler"
            sampler = (
                self.train_sampler
                if world_size == 1
                else RankShare(self.train_sampler, rank, world_size)
            )
        else:
            sampler = (
                None
                if world_size == 1
                else EvaluationShare(len(self.datasets[split]), rank, world_size)
            )
        workers = d.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            # Training order comes from the sampler (seeded by epoch); evaluation keeps file order.
            shuffle=False,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_views,
            pin_memory=self._feeds_a_gpu() if d.pin_memory is None else d.pin_memory,
            persistent_workers=d.persistent_workers and workers > 0,
            prefetch_factor=d.prefetch_factor if workers > 0 else None,
            # No worker_init_fn: the training samples carry their own seeds (mvfoul.data.sampling.Draw),
            # and Lightning's own worker seeding (rank-aware) covers anything else.
            drop_last=False,
        )

    def _feeds_a_gpu(self) -> bool:
        """Whether the batches go to a CUDA device: the trainer's accelerator, not merely whether
        this machine has a GPU (a CPU run on a GPU machine gains nothing from pinned memory)."""
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

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
