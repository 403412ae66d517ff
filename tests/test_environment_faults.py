"""Faults of the machine, not of the config: a run folder that cannot be written, a full disk, a
DataLoader worker killed by the system. Each is one line, found as early as it can be, and
leaves no broken file behind.

The read-only folder and the full disk are real: a small tmpfs mounted in a private mount
namespace (``unshare``), which needs neither root nor any change to the machine. Where user
namespaces are not available these tests skip, saying so.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL_SYNTHETIC, train_command

pytestmark = pytest.mark.slow

QUICK = ["--config-name", "quick_test", *SMALL_SYNTHETIC, "experiment.test_after_fit=false"]


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="unshare -rm (user and mount namespaces) is not available"
)


def run_on_tmpfs(
    mount_point: Path, mount_options: str, setup: str, args: list[str], cwd: Path, cache: Path
):
    """Run ``python <args>`` with a fresh tmpfs (``mount_options``) at ``mount_point``, after the
    shell commands ``setup``, in a private mount namespace."""
    mount_point.mkdir(parents=True, exist_ok=True)
    script = (
        f"mount -t tmpfs -o {mount_options} tmpfs {shlex.quote(str(mount_point))} && {setup} && "
        f"exec {shlex.quote(sys.executable)} {' '.join(shlex.quote(a) for a in args)}"
    )
    env = {**os.environ, "MVFOUL_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def error_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("mvfoul: error: ")]
    return line


def test_a_run_folder_under_a_file_fails_at_startup(tmp_path, run_in_process):
    (tmp_path / "notes.txt").write_text("not a folder")
    result = run_in_process(
        train_command(*QUICK, f"hydra.run.dir={tmp_path / 'notes.txt' / 'run'}")
    )
    line = error_line(result)
    assert "hydra.run.dir: cannot use" in line and "a file is in the way" in line


@needs_namespaces
def test_a_read_only_run_folder_fails_at_startup(tmp_path, cache_dir):
    mount = tmp_path / "readonly"
    result = run_on_tmpfs(
        mount,
        "ro,size=1m",
        "true",
        train_command(*QUICK, f"hydra.run.dir={mount / 'run'}"),
        tmp_path,
        cache_dir,
    )
    line = error_line(result)
    assert f"hydra.run.dir: cannot create {mount / 'run'}: it is read-only" in line


@needs_namespaces
def test_a_full_disk_fails_at_startup(tmp_path, cache_dir):
    mount = tmp_path / "full"
    fill = f"mkdir {shlex.quote(str(mount / 'run'))} && (dd if=/dev/zero of={shlex.quote(str(mount / 'filler'))} bs=4k 2>/dev/null; true)"
    result = run_on_tmpfs(
        mount,
        "size=1m",
        fill,
        train_command(*QUICK, f"hydra.run.dir={mount / 'run'}"),
        tmp_path,
        cache_dir,
    )
    line = error_line(result)
    assert f"hydra.run.dir: cannot write into {mount / 'run'}: the disk is full" in line


@needs_namespaces
def test_a_disk_that_fills_up_mid_run_never_leaves_a_truncated_checkpoint(tmp_path, cache_dir):
    """Room for the first epoch's checkpoints, not for the next ones: the run stops in one line,
    every checkpoint under a real name loads, and no temporary file is left behind."""
    mount = tmp_path / "small"
    run = mount / "run"
    train = " ".join(
        shlex.quote(a)
        for a in [
            sys.executable,
            *train_command(*QUICK, "training.max_epochs=6", f"hydra.run.dir={run}"),
        ]
    )
    # The tmpfs lives as long as the namespace: look at what the run left from inside it.
    inspect = (
        "import pathlib, sys, torch; folder = pathlib.Path(sys.argv[1]); "
        "files = sorted(p.name for p in folder.rglob('*') if p.is_file() and p.name.endswith(('.ckpt', '.tmp'))); "
        "[torch.load(p, weights_only=True) for p in folder.rglob('*.ckpt') if not p.name.startswith('.')]; "
        "print('LEFT', ' '.join(files))"
    )
    script = f"{train}; echo EXIT=$?; {shlex.quote(sys.executable)} -c {shlex.quote(inspect)} {shlex.quote(str(run))}"
    result = run_on_tmpfs(
        mount,
        "size=9m",
        "true",
        ["-c", f"import subprocess, sys; sys.exit(subprocess.call({script!r}, shell=True))"],
        tmp_path,
        cache_dir,
    )
    (exit_code,) = [
        int(ln.removeprefix("EXIT=")) for ln in result.stdout.splitlines() if ln.startswith("EXIT=")
    ]
    assert exit_code != 0, "the run fitted on the small disk: make the disk smaller"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("mvfoul: error: ")]
    assert (
        "cannot write" in line
        and "No space left on device" in line
        and "the previous version, if any, is intact" in line
    )
    (left,) = [ln for ln in result.stdout.splitlines() if ln.startswith("LEFT")]
    names = left.split()[1:]
    assert "last.ckpt" in names and not [n for n in names if n.endswith(".tmp")], (
        names
    )  # and every .ckpt loaded


def test_a_dataloader_worker_killed_by_the_system_is_one_line(tmp_path, cache_dir):
    process = subprocess.Popen(
        [
            sys.executable,
            *train_command(
                *QUICK, "training.max_epochs=50", "dataset.num_workers=2", "hydra.run.dir=run"
            ),
        ],
        cwd=tmp_path,
        env={**os.environ, "MVFOUL_CACHE_DIR": str(cache_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    workers: list[int] = []
    while len(workers) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.exists() else []
    time.sleep(1.0)
    os.kill(workers[0], signal.SIGKILL)  # what the out-of-memory killer does
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr[-3000:]
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("mvfoul: error: ")]
    assert f"a DataLoader worker process (pid {workers[0]}) died" in line
    assert "dataset.num_workers (now 2)" in line and "memory" in line
