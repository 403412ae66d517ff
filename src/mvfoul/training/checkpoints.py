"""A run's checkpoints in ``<run>/checkpoints/``: the ``experiment.save_top_k`` best epochs,
``best.ckpt`` (a link to the best) and ``last.ckpt``, written at the start of the next epoch (when
epoch ``e`` is wholly done and nothing of ``e + 1`` has begun), with the RNG states, so a resumed
run computes the same numbers. All are written atomically (Lightning's writer streams into the
final name); evicted top-k files are deleted only once a newer ``last.ckpt`` no longer lists them.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import re
import shlex
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mvfoul import atomic
from mvfoul.errors import MvfoulError, OutputError
from mvfoul.runtime import hydra_quoted
from mvfoul.training.loggers import flush_loggers

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LAST_NAME = "last.ckpt"
BEST_LINK = "best.ckpt"
RNG_KEY = "mvfoul_rng"
_TOP_K_FILE = re.compile(r"^epoch\d+-.+\.ckpt$")


def checkpoint_filename(monitor: str) -> str:
    """``epoch003-val_sev_acc-80.0000``: a slash would make a sub-folder, an ``=`` a bad override."""
    return f"epoch{{epoch:03d}}-{monitor.replace('/', '_')}-{{{monitor}:.4f}}"


def evaluate_command(ckpt_path: str | Path) -> str:
    words = ["python", "evaluate_hydra.py", f"ckpt_path={hydra_quoted(str(ckpt_path))}"]
    return " ".join(shlex.quote(w) for w in words)


class _RecordingWriter(io.BufferedWriter):
    """Keeps the ``OSError`` of a failed write: torch reports a full disk as "unexpected pos"."""

    error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as err:
            self.error = err
            raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`mvfoul.atomic.atomic_path`: a full disk is one line naming the
    checkpoint, and the previous file under its name stays whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:  # as Lightning's own TorchCheckpointIO: none are supported
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path) as tmp, _RecordingWriter(io.FileIO(tmp, "wb")) as writer:
            try:
                torch.save(checkpoint, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise


def read_checkpoint(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True`` (never unpickling code), or one line naming
    ``key``, the file and what is wrong with it. ``mmap`` reads tensors lazily."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a file"
        raise MvfoulError(f"{key}: {path} is {what}; give a .ckpt from a run's checkpoints/ folder")
    size = path.stat().st_size
    if size == 0:
        raise MvfoulError(
            f"{key}: {path} is empty (0 bytes): the file was cut short; use another checkpoint, e.g. the run's checkpoints/last.ckpt"
        )
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head.startswith(b"PK"):
            reason = "is truncated or damaged (a zip archive without its end)"
        elif head[:1] == b"\x80":
            reason = "is a plain pickle, not a checkpoint written by torch.save; mvfoul does not unpickle such files (that could run arbitrary code)"
        else:
            reason = "is not a checkpoint (not a torch.save archive) or is damaged"
        raise MvfoulError(f"{key}: {path} ({size} bytes) {reason}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - any unreadable archive is the same user-facing problem
        unpickling = isinstance(err, pickle.UnpicklingError)
        if unpickling and "weights only" in str(err).lower():
            raise MvfoulError(
                f"{key}: {path} holds Python objects besides tensors and plain values; mvfoul loads "
                "checkpoints as data only and will not unpickle it (unsafe: unpickling can run code). "
                "Use a checkpoint written by mvfoul"
            ) from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__
        damage = "damaged" if unpickling else "damaged or truncated"
        raise MvfoulError(f"{key}: {path} is {damage} ({first})") from None
    if not isinstance(loaded, dict):
        raise MvfoulError(
            f"{key}: {path} holds a {type(loaded).__name__}, not a checkpoint (a dict)"
        )
    return loaded


def require_keys(
    checkpoint: dict[str, Any], path: str | Path, keys: tuple[str, ...], key: str = "ckpt_path"
) -> None:
    """One line naming the first of ``keys`` (dotted) the checkpoint lacks."""
    for dotted in keys:
        node: Any = checkpoint
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise MvfoulError(
                    f"{key}: {path} has no '{dotted}': not an mvfoul checkpoint, or one written by an "
                    "older mvfoul that did not record it; use a checkpoint of a run of this version"
                )
            node = node[part]


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows it, else a copy; atomically either way."""
    with atomic.atomic_path(target, durable=False) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class RankedCheckpoint(ModelCheckpoint):
    """Lightning's top-k ModelCheckpoint with names a user can paste, ``best.ckpt``, and removals
    that wait for the next ``last.ckpt`` (``defer_removals``)."""

    def __init__(self, *args: Any, defer_removals: bool = True, **kwargs: Any) -> None:
        # A rerun of an epoch after a resume overwrites its own file instead of adding "-v1".
        kwargs.setdefault("enable_version_counter", False)
        kwargs.setdefault("auto_insert_metric_name", False)
        super().__init__(*args, **kwargs)
        self.defer_removals = defer_removals
        self._pending_removals: list[str] = []
        self._restored = False

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self.defer_removals:
            self._pending_removals.append(filepath)
        else:
            super()._remove_checkpoint(trainer, filepath)

    def flush_removals(self, trainer: L.Trainer) -> None:
        """Delete the evicted files (called once ``last.ckpt`` no longer lists them)."""
        pending = self._pending_removals
        self._pending_removals = []
        for filepath in pending:
            if filepath not in self.best_k_models:
                super()._remove_checkpoint(trainer, filepath)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.update_best_link(trainer)

    def update_best_link(self, trainer: L.Trainer) -> None:
        """``best.ckpt``: a relative symlink to the best, or a hard link or copy without symlinks."""
        best = Path(self.best_model_path)
        if not trainer.is_global_zero or self.dirpath is None or not best.is_file():
            return
        link = Path(self.dirpath) / BEST_LINK
        try:
            with atomic.atomic_path(link, durable=False) as tmp:
                os.symlink(os.path.relpath(best, link.parent), tmp)
        except OutputError:  # no symlinks here (some filesystems, Windows without rights)
            _link_or_copy(best, link)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint from another run folder (experiment.resume=<path>) brings its ranked files
        # along, so the new folder's top-k still covers every epoch.
        source = state_dict.get("dirpath")
        if source and self.dirpath and Path(source).resolve() != Path(self.dirpath).resolve():
            state_dict = self._adopt_files(state_dict, Path(source), Path(self.dirpath))
        super().load_state_dict(state_dict)
        self._restored = True

    def _adopt_files(self, state: dict[str, Any], source: Path, target: Path) -> dict[str, Any]:
        target.mkdir(parents=True, exist_ok=True)
        moved: dict[str, str] = {}
        best_k: dict[str, Any] = {}
        for old, score in state.get("best_k_models", {}).items():
            if not Path(old).is_file():
                log.warning("resume: the ranked checkpoint %s is gone; it leaves the top-k", old)
                continue
            new = target / Path(old).name
            if not new.exists():
                _link_or_copy(Path(old), new)
            moved[old] = str(new)
            best_k[str(new)] = score
        state = dict(state, dirpath=str(target), best_k_models=best_k)  # the loaded one stays
        for key in ("best_model_path", "kth_best_model_path"):
            if state.get(key):
                state[key] = moved.get(state[key], "")
        if moved:
            log.info(
                "resume: %d ranked checkpoint(s) of %s linked into %s", len(moved), source, target
            )
        return state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._restored and trainer.is_global_zero and self.dirpath is not None:
            # Ranked files the resumed state does not know were written by the killed run after
            # the checkpoint being resumed; the resumed run recomputes those epochs.
            known = {Path(p).name for p in self.best_k_models}
            orphans = sorted(
                p
                for p in Path(self.dirpath).iterdir()
                if _TOP_K_FILE.match(p.name) and p.name not in known
            )
            for path in orphans:
                path.unlink(missing_ok=True)
            if orphans:
                log.info(
                    "resume: removed %d checkpoint(s) written after the resumed state (%s); their epochs run again",
                    len(orphans),
                    ", ".join(p.name for p in orphans),
                )
            self.update_best_link(trainer)


class LastCheckpoint(Callback):
    """``last.ckpt`` at every epoch boundary and at the end, with the random states it restores on
    resume. It goes before the callbacks acting at an epoch start (unfreezing, sampling), so the
    state it saves is that of the previous epoch's end; Lightning keeps plain callbacks in order."""

    def __init__(
        self, dirpath: str | Path, ranked: RankedCheckpoint | None = None, save: bool = True
    ) -> None:
        self.path = Path(dirpath) / LAST_NAME
        self.ranked = ranked
        self.save = save
        self._rng_to_restore: dict[str, Any] | None = None
        self._saved_at_step: int | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The random states, in types torch.load(weights_only=True) accepts.
        numpy_state: Any = np.random.get_state()  # legacy: a tuple, typed as if it were a dict
        kind, keys, *rest = numpy_state
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[RNG_KEY] = rng
        # Lightning counts an epoch as "ready" just before on_train_epoch_start, where last.ckpt
        # is written; saved as is, the epoch would resume as under way with its batches done
        # (skipped whole). Undoing that count resumes it from its beginning.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress") or {}
        for counts in (progress.get("total", {}), progress.get("current", {})):
            if "ready" in counts and "started" in counts:
                counts["ready"] = counts["started"]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._rng_to_restore = checkpoint.get(RNG_KEY)
        # The resumed state is on disk already: the epoch start that follows is not a new boundary.
        self._saved_at_step = int(checkpoint.get("global_step", -1))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not at load time: building the model and the sanity check may draw random numbers
        # that the uninterrupted run drew before its checkpoint, not after.
        rng = self._rng_to_restore
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            kind, keys, *rest = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._rng_to_restore = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        skip = not self.save or trainer.sanity_checking or getattr(trainer, "fast_dev_run", False)
        if skip or self._saved_at_step == trainer.global_step:
            return
        # The logs first: a resumed run keeps the metrics.csv rows up to this checkpoint.
        if trainer.is_global_zero:
            flush_loggers(trainer)
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at_step = trainer.global_step
        if self.ranked is not None:
            self.ranked.flush_removals(trainer)
