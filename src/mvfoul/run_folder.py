"""Run folders: each run gets its own, a finished run is never overwritten, and a folder that
cannot be written fails at startup.

:class:`RunFolderCallback` (a Hydra callback, ``hydra.callbacks`` in ``conf/config.yaml``) acts
before Hydra writes anything into the folder (``.hydra/``, the log):

* **Claimed atomically.** The folder is created with ``mkdir`` (not "exist ok"); a name made from
  the clock (``${now:...}`` in ``hydra.run.dir``, the default) that another run took in the same
  second becomes ``<name>_1``, ``<name>_2``... So default names never collide, on one machine or on
  a shared filesystem.
* **Never overwritten.** A folder that already holds a run (``summary.json``, checkpoints, or
  ``csv/`` logs) is refused in one line, before anything is written into it, unless
  ``experiment.resume`` is set; the line offers ``experiment.resume=auto`` or a new folder. A
  resumed run keeps the first run's ``.hydra/`` records and writes its own into
  ``.hydra/resume_<n>/``. A folder holding only ``.hydra/`` and a log (a run that stopped at
  startup, on a config error) may be used again.
* **One run at a time.** The run holds an advisory lock (a POSIX ``lockf`` record lock) on
  ``<folder>/.mvfoul.lock`` while it lives; a second run into the same folder (even with
  ``resume=auto``) is refused naming the first one's process. The kernel releases the lock when
  the process dies, SIGKILL included, so a killed run never leaves a stale lock behind. (Not
  ``flock``: its lock is shared with forked children, and the DataLoader workers of a killed run
  outlive it by a few seconds.)
* **Writable.** Creating the folder and writing a probe file into it happen here: a path under a
  file, a read-only folder or a full disk fail at startup in one line, not at the first checkpoint.

The processes Lightning's DDP launcher starts (``LOCAL_RANK`` > 0, with the parent's folder as
``hydra.run.dir``) and the non-zero ranks of a cluster job are the same run as the process that
claimed the folder: they pass through untouched. The same rules apply to a ``--multirun``'s sweep
folder (``hydra.sweep.dir``).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from mvfoul.errors import RunFolderError
from mvfoul.slurm import on_slurm, requeued_slurm_job

LOCK_FILE = ".mvfoul.lock"
# What makes a folder hold a run: results. A folder with only Hydra's .hydra/ records and a log is
# a run that stopped at startup (a config error, a missing file): it may be used again.
RUN_RECORDS = ("summary.json", "checkpoints", "csv")
_PROBE_BYTES = 64 * 1024  # a probe write that a disk with almost no room left already refuses
_CLOCK_NAME = re.compile(r"\$\{(now|mvfoul_stamp):")

# Locks held by this process: the open file keeps the flock until the process exits.
_HELD_LOCKS: dict[Path, int] = {}


class RunFolderAbort(BaseException):
    """Carries a :class:`RunFolderError` out of a Hydra callback: Hydra turns an ``Exception``
    raised by a callback into a warning and carries on, which here would overwrite a run."""

    def __init__(self, error: RunFolderError) -> None:
        super().__init__(str(error))
        self.error = error


def is_secondary_process() -> bool:
    """A process that joins a run another process started: a DDP child launched by Lightning, or a
    non-zero rank of a torchrun/SLURM job."""
    for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID", "GROUP_RANK"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def run_records(folder: Path) -> list[str]:
    """The run records ``folder`` holds (empty for a new or empty folder)."""
    found = []
    for name in RUN_RECORDS:
        path = folder / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def sweep_records(folder: Path) -> list[str]:
    """The records of an earlier sweep in ``folder``: its multirun.yaml, and job folders holding runs."""
    found = ["multirun.yaml"] if (folder / "multirun.yaml").is_file() else []
    found += [
        f"{job.name}/"
        for job in sorted(folder.iterdir())
        if job.is_dir() and job.name.isdigit() and run_records(job)
    ]
    return found


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
    except FileExistsError:
        if not folder.is_dir():
            raise RunFolderError(
                f"{key}: cannot use {folder}: {_reason(OSError(errno.EEXIST, 'exists'))}; choose another folder"
            ) from None
        return False
    except OSError as err:
        raise RunFolderError(
            f"{key}: cannot create {folder}: {_reason(err)}; choose another folder"
        ) from None


def check_writable(folder: Path, key: str = "hydra.run.dir") -> None:
    """Write, flush and remove a probe file in ``folder``; one line naming the folder on failure."""
    probe = folder / f".mvfoul-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * _PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise RunFolderError(
            f"{key}: cannot write into {folder}: {_reason(err)}; free some space or choose another folder"
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def lock_run_folder(folder: Path, key: str = "hydra.run.dir") -> None:
    """Hold ``<folder>/.mvfoul.lock`` for the rest of this process, or refuse: another live run has it."""
    import fcntl

    folder = folder.resolve()
    if folder in _HELD_LOCKS:
        return
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _unique_variant(folder: Path, key: str) -> Path:
    """``folder`` if this call could create it, else the first free ``<folder>_<n>``."""
    for n in range(0, 10_000):
        candidate = folder if n == 0 else folder.with_name(f"{folder.name}_{n}")
        if _create(candidate, key):
            return candidate
    raise RunFolderError(
        f"{key}: no free name near {folder}; choose another folder"
    )  # pragma: no cover


def _refusal(folder: Path, records: list[str], key: str, evaluation: bool) -> RunFolderError:
    fix = (
        "choose a new folder, or leave hydra.run.dir unset"
        if evaluation
        else f"continue it with experiment.resume=auto, or start a new run in another folder ({key}=...)"
    )
    return RunFolderError(f"{key}: {folder} already holds a run ({', '.join(records)}); {fix}")


def claim(config: DictConfig, dir_key: str) -> tuple[Path, bool]:
    """Claim the folder ``config.<dir_key>`` names for a new or resumed run: (folder, is a resume
    into existing records). Raises :class:`RunFolderError`."""
    raw: Any = OmegaConf.to_container(config, resolve=False)
    for part in dir_key.split("."):
        raw = raw[part]
    # Made from the clock: a name another run may take in the same second. (Under SLURM the
    # default name is the job's id, which its requeues must find again.)
    clock_named = bool(_CLOCK_NAME.search(str(raw))) and not (
        "mvfoul_stamp" in str(raw) and on_slurm()
    )
    folder = Path(str(OmegaConf.select(config, dir_key))).expanduser()
    resume = OmegaConf.select(config, "experiment.resume", default=None)
    if resume is None and requeued_slurm_job():
        resume = "auto"  # a requeued SLURM job continues its own run
    evaluation = "ckpt_path" in config
    created = _create(folder, dir_key)
    resuming = False
    if not created and clock_named:
        # Another run made this clock-named folder (in the same second): it is not ours to join.
        folder = _unique_variant(folder, dir_key)
    elif not created:
        records = sweep_records(folder) if dir_key == "hydra.sweep.dir" else run_records(folder)
        if records and (resume is None or evaluation):
            raise _refusal(folder, records, dir_key, evaluation)
        resuming = bool(records)
    check_writable(folder, dir_key)
    return folder, resuming


def _next_resume_subdir(folder: Path) -> str:
    n = 1
    while (folder / ".hydra" / f"resume_{n}").exists():
        n += 1
    return f".hydra/resume_{n}"


def _set(config: DictConfig, key: str, value: Any) -> None:
    with read_write(config):
        OmegaConf.update(config, key, value, merge=False)


class RunFolderCallback(Callback):
    """Claims, checks and locks the run (or sweep) folder before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_process():
            return
        try:
            folder, resuming = claim(config, "hydra.run.dir")
            lock_run_folder(folder, "hydra.run.dir")
        except RunFolderError as err:
            raise RunFolderAbort(err) from None
        _set(config, "hydra.run.dir", str(folder))
        if resuming and config.hydra.output_subdir is not None:
            # Keep the first run's records; the resumed run's go beside them.
            _set(config, "hydra.output_subdir", _next_resume_subdir(folder))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_secondary_process():
            return
        try:
            folder, _ = claim(config, "hydra.sweep.dir")
        except RunFolderError as err:
            raise RunFolderAbort(err) from None
        if str(folder) != str(OmegaConf.select(config, "hydra.sweep.dir")):
            from mvfoul.runtime import hydra_quoted

            # The launcher recomposes each job's config from these overrides: the new name must
            # reach the jobs too, not only the launcher's own copy.
            _set(config, "hydra.sweep.dir", str(folder))
            with read_write(config):
                config.hydra.overrides.hydra.append(
                    f"hydra.sweep.dir={hydra_quoted(str(folder), 'hydra.sweep.dir')}"
                )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Sweep jobs run in fresh numbered sub-folders; the lock keeps two launches of the same
        # explicit sweep folder from writing into the same job folder at once.
        if OmegaConf.select(config, "hydra.mode") is not None and str(config.hydra.mode).endswith(
            "MULTIRUN"
        ):
            if not is_secondary_process():
                try:
                    lock_run_folder(Path(str(config.hydra.runtime.output_dir)), "hydra.sweep.dir")
                except RunFolderError as err:
                    raise RunFolderAbort(err) from None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") is not None and str(config.hydra.mode).endswith(
            "MULTIRUN"
        ):
            unlock_run_folder(Path(str(config.hydra.runtime.output_dir)))
