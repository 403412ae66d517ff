"""Run (and sweep) folders: each run gets its own, made with ``mkdir`` before Hydra writes into it
(a clock-made name another run took in the same second becomes ``<name>_1``...); one that holds a
run is refused unless ``experiment.resume`` is set; a write probe fails a full or read-only one at
startup; and it is locked with ``lockf``, which the kernel drops when the process dies (not
``flock``: the forked DataLoader workers of a killed run share it and outlive the run).
A resumed run writes its ``.hydra/`` records into ``.hydra/resume_<n>/``, keeping the first ones.
DDP children and the non-zero ranks of a cluster job join the folder their rank zero claimed.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from mvfoul.errors import RunFolderError
from mvfoul.runtime import hydra_quoted
from mvfoul.slurm import on_slurm, requeued_slurm_job

LOCK_FILE = ".mvfoul.lock"
# A folder with only Hydra's .hydra/ records and a log is a run that stopped at startup (a config
# error, a missing file): it may be used again.
RUN_RECORDS = ("summary.json", "checkpoints", "csv")
_PROBE_BYTES = 64 * 1024  # a probe write that a disk with almost no room left already refuses
_CLOCK_NAME = re.compile(r"\$\{(now|mvfoul_stamp):")
_RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID", "GROUP_RANK")
_HELD_LOCKS: dict[Path, int] = {}  # the open descriptor holds the lock until the process exits


class RunFolderAbort(BaseException):
    """Carries a :class:`RunFolderError` out of a Hydra callback: Hydra turns an ``Exception``
    raised by a callback into a warning and carries on, which here would overwrite a run."""

    def __init__(self, error: RunFolderError) -> None:
        super().__init__(str(error))
        self.error = error


def is_secondary_process() -> bool:
    """A DDP child launched by Lightning, or a non-zero rank of a torchrun/SLURM job."""
    values = [os.environ.get(v, "0") for v in _RANK_VARIABLES]
    return any(value.isdigit() and int(value) > 0 for value in values)


def run_records(folder: Path) -> list[str]:
    paths = [folder / name for name in RUN_RECORDS]
    return [p.name for p in paths if p.is_file() or (p.is_dir() and any(p.iterdir()))]


def sweep_records(folder: Path) -> list[str]:
    """An earlier sweep's multirun.yaml, and its job folders that hold runs."""
    found = ["multirun.yaml"] if (folder / "multirun.yaml").is_file() else []
    jobs = sorted(folder.iterdir())
    return found + [f"{job.name}/" for job in jobs if job.name.isdigit() and run_records(job)]


def _reason(err: OSError) -> str:
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a file is in the way (a path component is a file, not a folder)"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is read-only or not writable by you"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full (or your quota is used up)"
    return err.strerror or str(err)


def _create(folder: Path, key: str) -> bool:
    """Create ``folder``; True if this call created it, False if it existed already."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        return True
    except OSError as err:
        exists = isinstance(err, FileExistsError)
        if exists and folder.is_dir():
            return False
        verb = "use" if exists else "create"
        raise RunFolderError(
            f"{key}: cannot {verb} {folder}: {_reason(err)}; choose another folder"
        ) from None


def lock_run_folder(folder: Path, key: str = "hydra.run.dir") -> None:
    """Hold ``<folder>/.mvfoul.lock`` for the rest of this process, or refuse: another live run has it."""
    folder = folder.resolve()
    if folder in _HELD_LOCKS:
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunFolderError(
            f"{key}: cannot write into {folder}: {_reason(err)}; choose another folder"
        ) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunFolderError(
            f"{key}: {folder} is in use by a run that is still going ({holder}); wait for it, or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _HELD_LOCKS[folder] = fd


def unlock_run_folder(folder: Path) -> None:
    fd = _HELD_LOCKS.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


def claim(config: DictConfig, dir_key: str) -> tuple[Path, bool]:
    """Claim the folder ``config.<dir_key>`` names: (folder, whether it resumes existing records)."""
    raw: Any = OmegaConf.to_container(config, resolve=False)
    for part in dir_key.split("."):
        raw = raw[part]
    # A clock-made name is one another run may take in the same second. (Under SLURM the default
    # name is the job's id, which its requeues must find again.)
    raw = str(raw)
    clock_named = bool(_CLOCK_NAME.search(raw)) and not ("mvfoul_stamp" in raw and on_slurm())
    folder = Path(str(OmegaConf.select(config, dir_key))).expanduser()
    resume = OmegaConf.select(config, "experiment.resume", default=None)
    if resume is None and requeued_slurm_job():
        resume = "auto"  # a requeued SLURM job continues its own run
    evaluation = "ckpt_path" in config
    created = _create(folder, dir_key)
    records: list[str] = []
    if not created and clock_named:
        # Another run made this folder in the same second: it is not ours to join.
        variants = (folder.with_name(f"{folder.name}_{n}") for n in itertools.count(1))
        folder = next(variant for variant in variants if _create(variant, dir_key))
    elif not created:
        records = sweep_records(folder) if dir_key == "hydra.sweep.dir" else run_records(folder)
        if records and (resume is None or evaluation):
            fix = (
                "choose a new folder, or leave hydra.run.dir unset"
                if evaluation
                else f"continue it with experiment.resume=auto, or start a new run in another folder ({dir_key}=...)"
            )
            raise RunFolderError(
                f"{dir_key}: {folder} already holds a run ({', '.join(records)}); {fix}"
            )
    try:
        with tempfile.TemporaryFile(dir=folder) as fh:  # gone when closed
            fh.write(b"\0" * _PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise RunFolderError(
            f"{dir_key}: cannot write into {folder}: {_reason(err)}; free some space or choose another folder"
        ) from None
    return folder, bool(records)


class RunFolderCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_process():
            return
        try:
            folder, resuming = claim(config, "hydra.run.dir")
            lock_run_folder(folder)
        except RunFolderError as err:
            raise RunFolderAbort(err) from None
        with read_write(config):
            config.hydra.run.dir = str(folder)
            if resuming and config.hydra.output_subdir is not None:
                n = 1
                while (folder / ".hydra" / f"resume_{n}").exists():
                    n += 1
                config.hydra.output_subdir = f".hydra/resume_{n}"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_process():
            return
        try:
            folder, _ = claim(config, "hydra.sweep.dir")
        except RunFolderError as err:
            raise RunFolderAbort(err) from None
        if str(folder) != str(OmegaConf.select(config, "hydra.sweep.dir")):
            # The launcher recomposes each job's config from these overrides: the new name must
            # reach the jobs too, not only the launcher's own copy.
            with read_write(config):
                config.hydra.sweep.dir = str(folder)
                config.hydra.overrides.hydra.append(
                    f"hydra.sweep.dir={hydra_quoted(str(folder), 'hydra.sweep.dir')}"
                )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Two launches of the same explicit sweep folder must not write into one job folder.
        if config.hydra.mode == RunMode.MULTIRUN and not is_secondary_process():
            try:
                lock_run_folder(Path(config.hydra.runtime.output_dir), "hydra.sweep.dir")
            except RunFolderError as err:
                raise RunFolderAbort(err) from None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            unlock_run_folder(Path(config.hydra.runtime.output_dir))
