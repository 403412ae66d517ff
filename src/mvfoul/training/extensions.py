"""What config reaches of Lightning beyond mvfoul's own keys, both checked at startup.

- ``experiment.trainer``: ``Trainer`` options the schema does not name, passed through
  (``+experiment.trainer.profiler=simple``). An option mvfoul sets from one of its keys is refused
  with that key's name, so a run has one source for each setting.
- ``experiment.callbacks``: extra callbacks, each ``name: {_target_: <class>, <arguments>}``,
  built with Hydra's ``instantiate`` (EarlyStopping, for example).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from mvfoul.errors import ConfigError
from mvfoul.validate import Problems, cross_key_rule

# Trainer options mvfoul sets itself -> the key that sets them.
OWNED_TRAINER_OPTIONS = {
    "accelerator": "system.accelerator",
    "devices": "system.gpus",
    "num_nodes": "system.num_nodes",
    "strategy": "system.strategy",
    "precision": "system.precision",
    "deterministic": "system.deterministic",
    "sync_batchnorm": "system.sync_batchnorm",
    "max_epochs": "training.max_epochs",
    "gradient_clip_val": "training.gradient_clip_val",
    "accumulate_grad_batches": "training.accumulate_grad_batches",
    "callbacks": "experiment.callbacks",
    "logger": "experiment.loggers",
    "log_every_n_steps": "experiment.log_every_n_steps",
    "fast_dev_run": "experiment.fast_dev_run",
    "limit_train_batches": "experiment.limit_train_batches",
    "limit_val_batches": "experiment.limit_val_batches",
    "detect_anomaly": "experiment.debug",
    "default_root_dir": "hydra.run.dir",
    "use_distributed_sampler": "nothing: mvfoul shards every split itself (mvfoul.data.sharding)",
    "plugins": "nothing: mvfoul's checkpoint writer and SLURM environment are plugins",
}


def trainer_option_problems(options: DictConfig | dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each ``experiment.trainer`` option that cannot be passed through."""
    problems = []
    known = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    for name in map(str, options):
        key = f"experiment.trainer.{name}"
        if name in OWNED_TRAINER_OPTIONS:
            owner = OWNED_TRAINER_OPTIONS[name]
            how = owner if owner.startswith("nothing") else f"set it with {owner}"
            problems.append((key, f"mvfoul sets this Trainer option itself; {how}"))
        elif name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append((key, f"not an option of Lightning's Trainer{hint}"))
    return problems


def trainer_options(experiment: DictConfig) -> dict[str, Any]:
    """``experiment.trainer`` as plain keyword arguments for ``L.Trainer``."""
    options = experiment.get("trainer") or {}
    if isinstance(options, DictConfig):
        options = OmegaConf.to_container(options, resolve=True)
    return {str(name): value for name, value in dict(options).items()}  # type: ignore[arg-type]


def build_extra_callbacks(experiment: DictConfig) -> list[Callback]:
    """The callbacks ``experiment.callbacks`` names, in its order."""
    callbacks, problems = _instantiate(experiment.get("callbacks") or {})
    if problems:
        raise ConfigError("; ".join(f"{key}: {message}" for key, message in problems))
    return callbacks


def _instantiate(spec: DictConfig | dict[str, Any]) -> tuple[list[Callback], list[tuple[str, str]]]:
    """The callbacks of ``experiment.callbacks``, and (key, message) for each that cannot be built."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    callbacks: list[Callback] = []
    problems: list[tuple[str, str]] = []
    example = "e.g. {_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/sev_acc, mode: max}"
    for name, entry in spec.items():
        key = f"experiment.callbacks.{name!s}"
        if not isinstance(entry, (DictConfig, dict)) or "_target_" not in entry:
            problems.append(
                (key, f"expected a mapping with _target_ (the callback's class), {example}")
            )
            continue
        try:
            # Built here to check it, and again for the Trainer: a callback's own checks (an
            # EarlyStopping mode, say) then fail at startup, with the rest of the config.
            callback = instantiate(entry)
        except InstantiationException as err:
            # Hydra's message says what failed: the import, or the arguments the class refused.
            problems.append((key, " ".join(str(err).split(" full_key:")[0].split())))
            continue
        if isinstance(callback, Callback):
            callbacks.append(callback)
        else:
            problems.append((key, f"{entry['_target_']} is not a Lightning Callback"))
    return callbacks, problems


@cross_key_rule("experiment")
def check_extensions(cfg: DictConfig, p: Problems) -> None:
    """experiment.trainer and experiment.callbacks."""
    experiment = cfg.experiment
    for key, message in trainer_option_problems(experiment.get("trainer") or {}):
        p.add(key, message)
    _, callback_problems = _instantiate(experiment.get("callbacks") or {})
    for key, message in callback_problems:
        p.add(key, message)
