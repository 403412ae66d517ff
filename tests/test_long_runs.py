"""Long runs a user can trust, run as a user runs them: killed with SIGKILL and resumed, never
overwritten, stopped when they diverge, with checkpoint names that paste into a command.

What needs real processes starts them (a SIGKILL, two runs at once, a lock held by another
process); the other runs execute the same scripts in this process (``run_in_process``)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import LONG, REPO_ROOT, SMALL_SYNTHETIC, run_command, train_command

pytestmark = pytest.mark.slow

# Every technique whose state must come back: the sampler's ramp, unfreezing and the LR boost.
EVERYTHING = [
    "sampling=progressive",
    "sampling.progressive_end_epoch=3",
    "freezing=progressive",
    "freezing.unfreeze_schedule=[1,2]",
    "freezing.unfreeze_blocks=2",
]


def start_command(args: list[str], cwd: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "MVFOUL_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_after(
    process: subprocess.Popen,
    ready: Path,
    timeout: float = 300,
    signal_to_send: int = signal.SIGKILL,
) -> None:
    """SIGKILL ``process`` as soon as ``ready`` exists: no chance to clean up, as with the OOM
    killer or a node that goes away. (Or send it another signal and wait for it to end.)"""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{ready} never appeared"
        time.sleep(0.02)
    process.send_signal(signal_to_send)
    process.wait(timeout=timeout)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_epochs(
    reference: dict, resumed: dict, stage_prefixes: tuple[str, ...] = ("val/", "train/")
) -> None:
    assert resumed["epochs_completed"] == reference["epochs_completed"]
    assert resumed["history"].keys() == reference["history"].keys()
    for epoch, metrics in reference["history"].items():
        for name, value in metrics.items():
            if name.startswith(stage_prefixes):
                got = resumed["history"][epoch][name]
                assert (got is None and value is None) or got == pytest.approx(value, abs=1e-6), (
                    epoch,
                    name,
                    value,
                    got,
                )


def assert_same_rows(reference: list[dict[str, str]], resumed: list[dict[str, str]]) -> None:
    """metrics.csv: the same rows (each epoch's, the step rows, the LR rows), the same values."""
    assert len(resumed) == len(reference)
    for want, got in zip(reference, resumed):
        assert {k for k, v in want.items() if v} == {k for k, v in got.items() if v}
        for key, value in want.items():
            if value:
                assert float(got[key]) == pytest.approx(float(value), abs=1e-6), (
                    want.get("epoch"),
                    want["step"],
                    key,
                )


def test_a_killed_run_resumed_ends_exactly_like_an_uninterrupted_one(tmp_path, cache_dir):
    reference = run_command(
        train_command(*LONG, "hydra.run.dir=uninterrupted"), cwd=tmp_path, cache=cache_dir
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "killed"
    kill_after(
        start_command(train_command(*LONG, f"hydra.run.dir={run}"), tmp_path, cache_dir),
        run / "checkpoints" / "last.ckpt",
    )
    assert not (run / "summary.json").exists()
    done = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert 1 <= done < 4

    resumed = run_command(
        train_command(*LONG, f"hydra.run.dir={run}", "experiment.resume=auto"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"resuming from {run / 'checkpoints' / 'last.ckpt'}: {done} epoch(s)"
        in resumed.stdout + resumed.stderr
    )
    assert_same_epochs(summary(tmp_path / "uninterrupted"), summary(run))
    assert_same_rows(metrics_rows(tmp_path / "uninterrupted"), metrics_rows(run))
    # The ranked checkpoints are those of the uninterrupted run, and best.ckpt points at the best.
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "uninterrupted" / "checkpoints").iterdir())
    assert (run / "checkpoints" / "best.ckpt").resolve() == Path(
        summary(run)["best"]["checkpoint"]
    ).resolve()
    # The first run's records stay; the resume's own go beside them.
    assert "experiment.resume=auto" not in (run / ".hydra" / "overrides.yaml").read_text()
    assert "experiment.resume=auto" in (run / ".hydra" / "resume_1" / "overrides.yaml").read_text()


def test_resuming_restores_the_ramp_the_unfreezing_and_the_lr_boost(tmp_path, cache_dir):
    """Killed after its second epoch boundary: the boost (epoch 1) already fired, the ramp and the
    unfreezing are half-way; the resumed run logs exactly what the uninterrupted one does."""
    reference = run_command(
        train_command(*LONG, *EVERYTHING, "hydra.run.dir=uninterrupted"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    process = start_command(
        train_command(*LONG, *EVERYTHING), tmp_path, cache_dir
    )  # a default, dated folder
    deadline = time.monotonic() + 300
    while True:
        found = list((tmp_path / "outputs" / "quick_test").glob("*/checkpoints/last.ckpt"))
        if found and torch.load(found[0], weights_only=True, mmap=True)["epoch"] >= 2:
            break
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = found[0].parent.parent

    # One command continues the dated run in its own folder.
    env = {"MVFOUL_CACHE_DIR": str(cache_dir)}
    resumed = subprocess.run(
        [sys.executable, "-m", "mvfoul.runs", "resume", str(run)],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("resuming: python train_hydra.py --config-name quick_test")
    assert (
        "backbone LR boost" not in resumed.stdout + resumed.stderr
    )  # fired before the kill, not again
    assert_same_epochs(summary(tmp_path / "uninterrupted"), summary(run))
    want, got = metrics_rows(tmp_path / "uninterrupted"), metrics_rows(run)
    assert_same_rows(want, got)
    logged = {r["epoch"]: r for r in got if r.get("freezing/trainable_blocks")}
    assert [float(logged[str(e)]["freezing/trainable_blocks"]) for e in range(4)] == [
        0.0,
        2.0,
        4.0,
        4.0,
    ]
    assert [float(logged[str(e)]["sampling/balance_fraction"]) for e in range(4)] == pytest.approx(
        [0, 1 / 3, 2 / 3, 1]
    )
    assert [float(logged[str(e)]["freezing/backbone_lr_boost"]) for e in range(4)] == [
        0.0,
        1.0,
        0.0,
        0.0,
    ]


def test_resume_auto_without_a_checkpoint_starts_fresh_and_says_so(tmp_path, run_in_process):
    result = run_in_process(
        train_command(
            "--config-name",
            "quick_test",
            *SMALL_SYNTHETIC,
            "training.max_epochs=1",
            "experiment.test_after_fit=false",
            "experiment.resume=auto",
            "hydra.run.dir=fresh",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("experiment.resume=auto: no") == 1 and "starting a new run" in output
    assert summary(tmp_path / "fresh")["epochs_completed"] == 1


# --- run folders ----------------------------------------------------------------------------------


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


QUICK_ONE_EPOCH = [
    "--config-name",
    "quick_test",
    *SMALL_SYNTHETIC,
    "training.max_epochs=1",
    "experiment.test_after_fit=false",
]


def test_a_finished_run_is_never_overwritten(tmp_path, run_in_process):
    first = run_in_process(train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=run"))
    assert first.returncode == 0, first.stderr[-3000:]
    before = digest(tmp_path / "run")

    again = run_in_process(
        train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=run", "training.max_epochs=2")
    )
    assert again.returncode != 0 and "Traceback" not in again.stderr
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("mvfoul: error: hydra.run.dir:") and "already holds a run" in line
    assert "experiment.resume=auto" in line and "another folder" in line
    assert digest(tmp_path / "run") == before  # not one byte changed, .hydra/ records included


def test_two_runs_never_share_a_folder(tmp_path, cache_dir):
    # The same clock-made name for both (the year): the second gets a suffix, never the first's folder.
    args = train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=outputs/same/${now:%Y}")
    processes = [start_command(args, tmp_path, cache_dir) for _ in range(2)]
    assert [p.wait(timeout=600) for p in processes] == [0, 0]
    year = time.strftime("%Y")
    folders = sorted(p.name for p in (tmp_path / "outputs" / "same").iterdir())
    assert folders == [year, f"{year}_1"]
    for name in folders:
        assert summary(tmp_path / "outputs" / "same" / name)["epochs_completed"] == 1


def test_a_folder_in_use_is_refused_even_to_a_resume(tmp_path, run_in_process):
    folder = tmp_path / "busy"
    folder.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mvfoul.run_folder import lock_run_folder; "
            f"lock_run_folder(Path({str(folder)!r})); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_in_process(
            train_command(*QUICK_ONE_EPOCH, f"hydra.run.dir={folder}", "experiment.resume=auto")
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert (
        "is in use by a run that is still going (pid" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert not (folder / ".hydra").exists()


def test_lightnings_ddp_processes_join_their_run_folder(tmp_path, monkeypatch):
    """A process Lightning's DDP launcher starts (LOCAL_RANK > 0) gets the parent's folder, which
    holds the parent's records already: it is the same run, not a rerun."""
    from omegaconf import OmegaConf

    from mvfoul.run_folder import RunFolderCallback, is_secondary_process

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("{}")
    config = OmegaConf.create(
        {"hydra": {"run": {"dir": str(run)}, "output_subdir": None}, "experiment": {"resume": None}}
    )
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_secondary_process()
    RunFolderCallback().on_run_start(config)  # no refusal, no lock, nothing written
    assert not (run / ".mvfoul.lock").exists() and config.hydra.run.dir == str(run)


def test_keep_refuses_an_existing_name_without_force_and_a_presets_name(tmp_path, run_in_process):
    from mvfoul.errors import MvfoulError
    from mvfoul.runs import keep_run

    result = run_in_process(train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=run"))
    assert result.returncode == 0, result.stderr[-3000:]
    user = tmp_path / "user"
    keep_run(tmp_path / "run", "mine", folder=user)
    with pytest.raises(MvfoulError, match="already exists; choose another name, or pass --force"):
        keep_run(tmp_path / "run", "mine", folder=user)
    assert keep_run(tmp_path / "run", "mine", folder=user, force=True) == user / "mine.yaml"
    for preset in ("quick_test", "production", "config"):
        with pytest.raises(MvfoulError, match=f"--config-name {preset} would load that"):
            keep_run(tmp_path / "run", preset, folder=user)
    cli = subprocess.run(
        [sys.executable, "-m", "mvfoul.runs", "keep", str(tmp_path / "run"), "quick_test"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and cli.stderr.startswith(
        "mvfoul: error: config name 'quick_test' is taken"
    )


# --- the divergence guard -----------------------------------------------------------------------


def test_a_diverging_run_stops_with_one_line_and_keeps_no_broken_checkpoint(
    tmp_path, run_in_process
):
    result = run_in_process(
        train_command(
            "--config-name",
            "quick_test",
            *SMALL_SYNTHETIC,
            "training.learning_rate=1e6",
            "hydra.run.dir=run",
        )
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr and "Validation metrics" not in result.stdout
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("mvfoul: error:")]
    assert "training diverged at epoch 0, step" in line and "the training loss is nan" in line
    for key in (
        "training.learning_rate (now 1e+06)",
        "training.gradient_clip_val",
        "training.stop_on_divergence=false",
    ):
        assert key in line
    run = tmp_path / "run"
    record = summary(run)
    assert record["status"] == "diverged" and record["stopped"] == line.removeprefix(
        "mvfoul: error: "
    )
    assert "test" not in record and not (run / "predictions_test.json").exists()  # nothing tested
    for checkpoint in (
        (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").exists() else []
    ):
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), (
            checkpoint
        )


def test_the_guard_checks_the_weights_before_anything_is_saved():
    """A last optimiser step that breaks the weights after a finite loss is caught before the
    validation (and so before any checkpoint) of that epoch."""
    import lightning as L
    from omegaconf import OmegaConf

    from mvfoul.errors import DivergenceError
    from mvfoul.training.callbacks import DivergenceGuard

    guard = DivergenceGuard(
        OmegaConf.create({"learning_rate": 1e-3, "gradient_clip_val": None}), "16-mixed"
    )
    module = L.LightningModule()
    module.layer = torch.nn.Linear(2, 2)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    guard.on_validation_start(trainer, module)  # finite: nothing happens
    with torch.no_grad():
        module.layer.weight[0, 0] = float("inf")
    with pytest.raises(DivergenceError) as info:
        guard.on_validation_start(trainer, module)
    message = str(info.value)
    assert (
        "the weights before validation (1 parameter tensor(s), e.g. layer.weight) is non-finite"
        in message
    )
    assert (
        "set training.gradient_clip_val (now off)" in message
        and "system.precision=32-true (now 16-mixed)" in message
    )


# --- checkpoint names -----------------------------------------------------------------------------


def test_the_printed_evaluate_command_works_as_printed(tmp_path, run_in_process):
    run = tmp_path / "my runs" / "first"  # a space in the path, as users' folders have
    result = run_in_process(
        train_command(
            "--config-name",
            "quick_test",
            *SMALL_SYNTHETIC,
            "training.max_epochs=2",
            f"hydra.run.dir={run}",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = [p.name for p in (run / "checkpoints").iterdir()]
    assert "best.ckpt" in names and not any("=" in n for n in names)
    best = Path(summary(run)["best"]["checkpoint"])
    assert (run / "checkpoints" / "best.ckpt").resolve() == best.resolve()

    (printed,) = [
        ln.removeprefix("evaluate it: ")
        for ln in result.stdout.splitlines()
        if ln.startswith("evaluate it: ")
    ]
    assert printed == summary(run)["evaluate_command"]
    words = shlex.split(printed)
    assert words[:2] == ["python", "evaluate_hydra.py"]
    evaluated = run_in_process([str(REPO_ROOT / words[1]), *words[2:], "hydra.run.dir=evaluated"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (tmp_path / "evaluated" / "predictions_test.json").is_file()


def test_a_path_with_an_equals_sign_gets_told_to_quote_it(tmp_path, run_in_process):
    result = run_in_process(
        [str(REPO_ROOT / "evaluate_hydra.py"), "ckpt_path=/runs/epoch=3-val=80.ckpt"]
    )
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "mvfoul: error: ckpt_path: the value '/runs/epoch=3-val=80.ckpt' holds '='"
    )
    assert "\"ckpt_path='/runs/epoch=3-val=80.ckpt'\"" in line


def test_hydra_quoting_round_trips_any_path():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mvfoul.runtime import hydra_quoted

    for path in (
        "outputs/q/2026-11-29_12-00-00/checkpoints/epoch001-val_sev_acc-80.0000.ckpt",
        "/my runs/x.ckpt",
        "/x/epoch=1.ckpt",
        "/x/it's.ckpt",
        "/x/a:b.ckpt",
        "C:\\runs\\x.ckpt",
    ):
        value = OverridesParser.create().parse_override(f"ckpt_path={hydra_quoted(path)}").value()
        assert value == path, path


def test_a_folder_that_only_saw_a_failed_start_can_be_used_again(tmp_path, run_in_process):
    bad = run_in_process(
        train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=run", "training.optimizer=adamx")
    )
    assert bad.returncode != 0 and (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    fixed = run_in_process(train_command(*QUICK_ONE_EPOCH, "hydra.run.dir=run"))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert summary(tmp_path / "run")["epochs_completed"] == 1
