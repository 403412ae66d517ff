"""Lightning beyond mvfoul's own keys: Trainer options passed through, extra callbacks, and the
choice of loggers — each checked at startup like every other key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from conftest import SMALL_SYNTHETIC, compose_config, train_command
from mvfoul.errors import ConfigError
from mvfoul.rules import validate_config, with_schema
from mvfoul.training.trainer import build_trainer

EARLY_STOP = (
    "+experiment.callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, "
    "monitor: val/sev_acc, mode: max, patience: 3}"
)


def checked(*overrides: str):
    cfg = with_schema(compose_config("quick_test", list(overrides)))
    validate_config(cfg)
    return cfg


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        checked(*overrides)
    return info.value.problems


def test_trainer_options_callbacks_and_loggers_reach_lightning(tmp_path):
    cfg = checked(
        "+experiment.trainer.num_sanity_val_steps=0",
        "+experiment.trainer.val_check_interval=0.5",
        "experiment.loggers=[csv]",
        EARLY_STOP,
    )
    trainer = build_trainer(cfg, tmp_path, {})
    assert trainer.num_sanity_val_steps == 0 and trainer.val_check_interval == 0.5
    (stop,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stop.monitor == "val/sev_acc" and stop.patience == 3
    (logger,) = trainer.loggers
    assert isinstance(logger, CSVLogger) and not isinstance(logger, TensorBoardLogger)


def test_no_logger_at_all_still_trains_without_the_learning_rate_monitor(tmp_path):
    trainer = build_trainer(checked("experiment.loggers=[]"), tmp_path, {})
    assert trainer.loggers == []
    assert not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)


def test_every_mistake_in_the_passthrough_is_one_line_naming_its_key():
    found = problems(
        "+experiment.trainer.max_epochs=3",  # mvfoul's own key sets this
        "+experiment.trainer.val_check_intervall=0.5",  # a typo
        "+experiment.trainer.use_distributed_sampler=true",
        "+experiment.callbacks.bad={_target_: no.such.Callback}",
        "+experiment.callbacks.not_a_callback={_target_: collections.OrderedDict}",
        "+experiment.callbacks.bare=5",
        "+experiment.callbacks.wrong_args={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/sev_acc, patienz: 2}",
        "experiment.loggers=[csv,tensorbord]",
    )
    text = "\n".join(found)
    assert (
        "experiment.trainer.max_epochs: mvfoul sets this Trainer option itself; set it with training.max_epochs"
        in text
    )
    assert (
        "experiment.trainer.val_check_intervall: not an option of Lightning's Trainer; did you mean val_check_interval?"
        in text
    )
    assert (
        "experiment.trainer.use_distributed_sampler: mvfoul sets this Trainer option itself; nothing: mvfoul shards"
        in text
    )
    assert "experiment.callbacks.bad: Error locating target 'no.such.Callback'" in text
    assert (
        "experiment.callbacks.not_a_callback: collections.OrderedDict is not a Lightning Callback"
        in text
    )
    assert "experiment.callbacks.bare: expected a mapping with _target_" in text
    assert "experiment.callbacks.wrong_args:" in text and "patienz" in text
    assert "experiment.loggers: 'tensorbord' is not one of csv, tensorboard, wandb, mlflow" in text
    assert len(found) == 8 and all("\n" not in line for line in found)


def test_a_value_lightning_refuses_is_a_config_error_naming_the_key(tmp_path):
    cfg = checked("+experiment.trainer.val_check_interval=-3")
    with pytest.raises(ConfigError, match=r"experiment.trainer: Lightning's Trainer refused"):
        build_trainer(cfg, tmp_path, {})


@pytest.mark.slow
def test_early_stopping_from_the_command_line_stops_the_run(tmp_path, run_in_process):
    # Stops as soon as the severity accuracy reaches 0%, so after the first validation.
    stop_at_once = (
        "+experiment.callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, "
        "monitor: val/sev_acc, mode: max, stopping_threshold: 0.0}"
    )
    result = run_in_process(
        train_command(
            "--config-name",
            "quick_test",
            *SMALL_SYNTHETIC,
            "training.max_epochs=4",
            "experiment.test_after_fit=false",
            "experiment.loggers=[csv]",
            "+experiment.trainer.num_sanity_val_steps=0",
            stop_at_once,
            "hydra.run.dir=run",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = Path(tmp_path / "run")
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 1
    assert (run / "csv" / "metrics.csv").is_file() and not (run / "tensorboard").exists()
