"""The LightningDataModule: splits on disk -> datasets -> batches of padded views."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mvfoul.config import SyntheticConfig
from mvfoul.data.annotations import Action, find_split_dir, read_soccernet_split
from mvfoul.data.dataset import MultiViewClipDataset, collate_views
from mvfoul.data.synthetic import ensure_synthetic_dataset, synthetic_dataset_dir
from mvfoul.data.transforms import ClipTransformConfig, build_clip_transform
from mvfoul.errors import DataError
from mvfoul.sampling import ClassBalancedSampler, task_class_ids

log = logging.getLogger(__name__)


def synthetic_spec(dataset: DictConfig) -> SyntheticConfig:
    return SyntheticConfig(**dataset.synthetic)


def resolve_data_dir(dataset: DictConfig) -> Path:
    """The folder holding Train/ Valid/ Test/ for this dataset config."""
    if dataset.name == "synthetic":
        return synthetic_dataset_dir(synthetic_spec(dataset), dataset.data_dir)
    return Path(dataset.data_dir).expanduser()


class MultiViewDataModule(L.LightningDataModule):
    def __init__(
        self, dataset: DictConfig, frame_indices: Sequence[int], sampling: DictConfig | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.cfg = dataset
        self.sampling = sampling
        self.seed = seed
        self.frame_indices = tuple(frame_indices)
        self.data_dir = resolve_data_dir(dataset)
        self.datasets: dict[str, MultiViewClipDataset] = {}
        self.train_sampler: ClassBalancedSampler | None = None

    def prepare_data(self) -> None:
        # Runs once per node before setup: the only place that writes the built-in dataset.
        if self.cfg.name == "synthetic":
            ensure_synthetic_dataset(synthetic_spec(self.cfg), self.cfg.data_dir, workers=min(2, os.cpu_count() or 1))

    def _transform_config(self) -> ClipTransformConfig:
        d = self.cfg
        return ClipTransformConfig(
            frame_size=d.frame_size,
            resize_size=d.resize_size,
            augment=d.augment,
            hflip_prob=d.hflip_prob,
            crop_scale_min=d.crop_scale_min,
            color_jitter=d.color_jitter,
        )

    def read_split(self, split: str) -> list[Action]:
        actions, report = read_soccernet_split(find_split_dir(self.data_dir, split))
        log.info("%s: %s", split, report.summary())
        if not actions:
            raise DataError(
                f"{report.split_dir}: no usable action (all dropped or none listed); check its annotations.json"
            )
        return actions

    def _build(self, split: str, train: bool) -> MultiViewClipDataset:
        transform = build_clip_transform(self._transform_config(), train=train)
        return MultiViewClipDataset(
            self.read_split(split),
            self.frame_indices,
            transform,
            views_per_sample=self.cfg.train_views if train else None,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            self.datasets["train"] = self._build("train", train=True)
            self.datasets["valid"] = self._build("valid", train=False)
            self.train_sampler = self._build_sampler()
        if stage == "validate" and "valid" not in self.datasets:
            self.datasets["valid"] = self._build("valid", train=False)
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self._build("test", train=False)

    def _build_sampler(self) -> ClassBalancedSampler | None:
        """The class-balanced sampler of the training split, when sampling asks for one."""
        s = self.sampling
        if s is None or not s.use_class_balanced_sampler:
            return None
        labels = self.train_labels()
        class_ids, names = task_class_ids(s.balance_task, labels["offence_severity"], labels["action"])
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
        actions = self.datasets["train"].actions
        return {
            "offence_severity": [a.labels.offence_severity for a in actions],
            "action": [a.labels.action for a in actions],
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        d = self.cfg
        batch_size = d.batch_size if train or d.eval_batch_size is None else d.eval_batch_size
        sampler = self.train_sampler if train else None
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            # The balanced sampler draws its own order; otherwise training shuffles uniformly.
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=collate_views,
            pin_memory=torch.cuda.is_available(),
            # Workers are costly to start (each imports torch): keep them across epochs.
            persistent_workers=d.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
