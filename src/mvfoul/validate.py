"""Checks OmegaConf cannot do: allowed names, value ranges and rules across keys.

OmegaConf checks types while Hydra composes. Everything else is checked here, at startup,
before any data or model work, and every problem is reported in one message so that a user
fixes a command line in one go.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mvfoul import config as C
from mvfoul.errors import ConfigError
from mvfoul.losses import ALPHA_CLASS_WEIGHTS, is_number

EXAMPLE_DATA_COMMAND = "python train_hydra.py dataset.data_dir=/path/to/mvfouls"


@dataclass(frozen=True)
class ResolvedRun:
    """Values derived from the config once it is valid."""

    frame_indices: tuple[int, ...]
    # Per-channel input normalisation: dataset.mean/std, or the backbone's own when null.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


def with_schema(cfg: DictConfig) -> DictConfig:
    """The config merged onto the root schema, so that one composed without the schema
    (a saved run's config.yaml given as --config-path) is type-checked too."""
    schema = OmegaConf.structured(C.MvfoulConfig)
    dataset_schema = C.DATASET_SCHEMAS.get(OmegaConf.select(cfg, "dataset.name"))
    if dataset_schema is not None:
        schema.dataset = OmegaConf.structured(dataset_schema)
    merged = OmegaConf.merge(schema, cfg)
    assert isinstance(merged, DictConfig)
    return merged


class _Problems:
    """Collects problems; each is one line that names the key."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")

    def choice(self, key: str, value: Any, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if value not in allowed:
            self.add(key, f"{value!r} is not one of {', '.join(allowed)}")

    def check(self, ok: bool, key: str, value: Any, expected: str) -> None:
        if not ok:
            self.add(key, f"{value!r} is out of range: expected {expected}")


def _limit_ok(value: Any) -> bool:
    # Lightning's convention: an int is a number of batches, a float a fraction of the epoch.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if isinstance(value, float):
        return 0.0 <= value <= 1.0
    return False


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder: it is a file, or lies under one."""
    if path.exists():
        return None if path.is_dir() else "is a file, not a folder"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"lies under {parent}, which is a file"
    return None


def _check_dataset(cfg: DictConfig, p: _Problems) -> tuple[int, ...] | None:
    from mvfoul.data.video import window_frame_indices

    d = cfg.dataset
    if d.decoder == "torchcodec":
        from mvfoul.data.video import resolve_decoder

        try:
            resolve_decoder(d.decoder)
        except ConfigError as err:
            p.items.extend(err.problems)
    if d.resize_size is not None:
        p.check(
            d.resize_size >= d.frame_size,
            "dataset.resize_size",
            d.resize_size,
            f">= dataset.frame_size ({d.frame_size}) or null",
        )
    for key in ("mean", "std"):
        values = d.get(key)
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            p.add(
                f"dataset.{key}",
                f"{list(values)} is not allowed: expected null (the backbone's own) or 3 per-channel values (RGB)"
                + (", each > 0" if key == "std" else ""),
            )
    if d.cache_dir:
        problem = _folder_problem(Path(d.cache_dir).expanduser())
        if problem:
            p.add(
                "dataset.cache_dir",
                f"{d.cache_dir!r} {problem}: give a folder (it is created if missing), or null for no cache",
            )

    window_ok = d.end_frame > d.start_frame and 0 < d.fps <= d.clip_fps
    if d.end_frame <= d.start_frame:
        p.add(
            "dataset.end_frame",
            f"{d.end_frame} must be greater than dataset.start_frame ({d.start_frame})",
        )
    if not 0 < d.fps <= d.clip_fps:
        p.add(
            "dataset.fps",
            f"{d.fps!r} is out of range: expected in (0, dataset.clip_fps={d.clip_fps}]",
        )
    if not window_ok:
        return None
    indices = tuple(window_frame_indices(d.start_frame, d.end_frame, d.fps, d.clip_fps))
    if d.num_frames is not None and d.num_frames != len(indices):
        p.add(
            "dataset.num_frames",
            f"{d.num_frames} disagrees with the window (start_frame={d.start_frame}, end_frame={d.end_frame}, "
            f"fps={d.fps} give {len(indices)} frames): set dataset.num_frames=null to derive it, or change the window",
        )
    if d.name == "synthetic":
        s = d.synthetic
        if s is None:
            p.add(
                "dataset.synthetic",
                "missing: dataset=synthetic needs its generation settings (see conf/dataset/synthetic.yaml)",
            )
        else:
            p.check(
                1 <= s.min_views <= s.max_views <= 4,
                "dataset.synthetic.min_views",
                s.min_views,
                "1 <= min_views <= max_views <= 4",
            )
            from mvfoul.data.synthetic import MIN_CLIP_FRAMES

            # The generator draws the foul's cues up to frame MIN_CLIP_FRAMES - 1.
            p.check(
                s.clip_frames >= MIN_CLIP_FRAMES,
                "dataset.synthetic.clip_frames",
                s.clip_frames,
                f">= {MIN_CLIP_FRAMES}",
            )
            if indices[-1] >= s.clip_frames:
                p.add(
                    "dataset.end_frame",
                    f"{d.end_frame} reaches past the generated clips ({s.clip_frames} frames): "
                    "lower it or raise dataset.synthetic.clip_frames",
                )
    return indices


def _check_data_location(cfg: DictConfig, p: _Problems) -> None:
    d = cfg.dataset
    if d.name != "mvfouls":
        return
    if OmegaConf.is_missing(d, "data_dir") or d.data_dir in (None, ""):
        p.add(
            "dataset.data_dir",
            f"missing (the folder with Train/ Valid/ Test/): run `{EXAMPLE_DATA_COMMAND}`, "
            "or try the built-in dataset with `python train_hydra.py --config-name quick_test`",
        )
        return
    data_dir = Path(d.data_dir).expanduser()
    if not data_dir.is_dir():
        p.add(
            "dataset.data_dir",
            f"{d.data_dir!r} is not a folder: point it at the folder holding Train/ Valid/ Test/",
        )
        return
    for key in ("train_csv", "val_csv", "test_csv"):
        if d[key] is not None and not (data_dir / Path(d[key]).expanduser()).is_file():
            p.add(
                f"dataset.{key}",
                f"{d[key]!r} is not a file (relative paths start at dataset.data_dir)",
            )


def _check_model(cfg: DictConfig, p: _Problems, indices: tuple[int, ...] | None) -> None:
    from mvfoul.models.backbones import BACKBONES

    m = cfg.model
    if m.backbone not in BACKBONES:
        p.choice("model.backbone", m.backbone, BACKBONES)
        return
    if m.weights_path is not None and not Path(m.weights_path).expanduser().is_file():
        p.add(
            "model.weights_path",
            f"{m.weights_path!r} is not a file: give the path of a saved state dict, or null",
        )
    if m.backbone == "tiny" and m.pretrained and m.weights_path is None:
        p.add(
            "model.pretrained",
            "the tiny backbone has no pretrained weights: set model.pretrained=false",
        )
    if indices is not None:
        problem = BACKBONES[m.backbone].input_problem(len(indices), cfg.dataset.frame_size)
        if problem:
            p.add("model.backbone", problem)


def _check_training(cfg: DictConfig, p: _Problems) -> None:
    t = cfg.training
    rates = [r for r in (t.learning_rate, t.head_lr, t.backbone_lr) if r is not None and r > 0]
    if t.scheduler == "cosine" and rates and t.min_lr >= min(rates):
        p.add(
            "training.min_lr",
            f"{t.min_lr!r} must be below every learning rate (smallest: {min(rates)!r})",
        )
    if t.warmup_epochs >= t.max_epochs >= 1:
        p.add(
            "training.warmup_epochs",
            f"{t.warmup_epochs!r} must be shorter than training.max_epochs ({t.max_epochs})",
        )


def _check_loss(cfg: DictConfig, p: _Problems) -> None:
    lo = cfg.loss
    alpha = lo.focal_alpha
    if not (
        alpha is None or alpha == ALPHA_CLASS_WEIGHTS or (is_number(alpha) and 0.0 < alpha <= 1.0)
    ):
        p.add(
            "loss.focal_alpha",
            f"{alpha!r} is not allowed: expected null, a number in (0, 1], or {ALPHA_CLASS_WEIGHTS}",
        )
    if lo.severity_weight == 0 and lo.action_weight == 0:
        p.add("loss.severity_weight", "and loss.action_weight are both 0: nothing would be trained")


def _check_sampling(cfg: DictConfig, p: _Problems) -> None:
    s = cfg.sampling
    if s.progressive_end_epoch < s.progressive_start_epoch:
        p.add(
            "sampling.progressive_end_epoch",
            f"{s.progressive_end_epoch} is before sampling.progressive_start_epoch ({s.progressive_start_epoch})",
        )


def _check_freezing(cfg: DictConfig, p: _Problems) -> None:
    f = cfg.freezing
    schedule = list(f.unfreeze_schedule)
    if any(e < 0 for e in schedule) or schedule != sorted(schedule):
        p.add(
            "freezing.unfreeze_schedule",
            f"{schedule} must be non-negative epochs in increasing order",
        )


def _check_system(cfg: DictConfig, p: _Problems) -> None:
    s = cfg.system
    if s.accelerator == "gpu" and s.gpus == 0:
        p.add("system.gpus", "0 with system.accelerator=gpu: set system.gpus>=1, or use system=cpu")


def _check_experiment(cfg: DictConfig, p: _Problems) -> None:
    from mvfoul.training.metrics import LOWER_IS_BETTER, logged_metric_names

    e = cfg.experiment
    names = logged_metric_names()
    if e.monitor not in names:
        import difflib

        close = difflib.get_close_matches(e.monitor, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        p.add(
            "experiment.monitor",
            f"{e.monitor!r} is not a metric this run logs{hint}; logged: {', '.join(names)}",
        )
    elif e.mode in C.MONITOR_MODES:
        expected = "min" if e.monitor.split("/")[-1] in LOWER_IS_BETTER else "max"
        if e.mode != expected:
            p.add(
                "experiment.mode",
                f"{e.mode!r} would keep the worst checkpoints of {e.monitor}: use mode={expected}",
            )
    resume = e.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).expanduser().is_file():
        p.add(
            "experiment.resume",
            f"{resume!r} is not a file: give a checkpoint (e.g. <run>/checkpoints/last.ckpt), auto "
            "(this run folder's last.ckpt) or null",
        )
    for key in ("limit_train_batches", "limit_val_batches"):
        if not _limit_ok(e[key]):
            p.add(
                f"experiment.{key}",
                f"{e[key]!r} is out of range: expected a fraction in [0.0, 1.0] or a batch count >= 0",
            )
    if e.use_wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            p.add(
                "experiment.use_wandb",
                "true needs the wandb package: pip install -e '.[wandb]', or set experiment.use_wandb=false",
            )
    _check_extensions(e, p)


def _check_extensions(e: DictConfig, p: _Problems) -> None:
    """experiment.loggers, experiment.trainer and experiment.callbacks."""
    import importlib.util

    from mvfoul.training.extensions import callback_problems, trainer_option_problems

    loggers = list(e.get("loggers", []))
    if len(set(loggers)) != len(loggers):
        p.add("experiment.loggers", f"{loggers} names a logger twice")
    packages = {
        "wandb": "wandb (pip install -e '.[wandb]')",
        "mlflow": "mlflow (pip install mlflow)",
    }
    for name, package in packages.items():
        if name in loggers and importlib.util.find_spec(name) is None:
            p.add("experiment.loggers", f"{name} needs the {package} package, or leave it out")
    for key, message in trainer_option_problems(e.get("trainer") or {}):
        p.add(key, message)
    for key, message in callback_problems(e.get("callbacks") or {}):
        p.add(key, message)


_CHECKS: tuple[Callable[[DictConfig, _Problems], None], ...] = (
    _check_data_location,
    _check_training,
    _check_loss,
    _check_sampling,
    _check_freezing,
    _check_system,
    _check_experiment,
)


def _schemas_in(cfg: DictConfig) -> list[tuple[str, type]]:
    """(node path, schema) of every schema'd node of ``cfg``."""
    dataset = C.DATASET_SCHEMAS.get(OmegaConf.select(cfg, "dataset.name"), C.DatasetConfig)
    found = [(group, dataset if group == "dataset" else s) for group, s in C.GROUP_SCHEMAS.items()]
    if dataset is C.SyntheticDatasetConfig:
        found.append(("dataset.synthetic", C.SyntheticConfig))
    return found


def _check_schema_values(cfg: DictConfig, p: _Problems) -> None:
    """Every key's allowed values and range, as its schema field declares them
    (:func:`mvfoul.config.key`); null passes where the type allows it."""
    for path, schema in _schemas_in(cfg):
        node = OmegaConf.select(cfg, path)
        if not isinstance(node, DictConfig):
            continue
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
            if not (choices or bounds) or f.name not in node or node[f.name] is None:
                continue
            key, value = f"{path}.{f.name}", node[f.name]
            if choices:
                for item in value if isinstance(value, ListConfig) else [value]:
                    p.choice(key, item, choices)
            if bounds and not C.within(value, bounds):
                nullable = type(None) in typing.get_args(hints[f.name])
                p.check(False, key, value, bounds + (" or null" if nullable else ""))


def _check_unknown_keys(cfg: DictConfig, p: _Problems) -> None:
    """Keys no schema declares. Composition refuses a misspelt ``key=value``, but Hydra's append
    syntax ``+training.learnin_rate=0.1`` adds a key past the schema on purpose."""
    import dataclasses
    import difflib

    schemas = {
        **C.GROUP_SCHEMAS,
        "dataset": C.DATASET_SCHEMAS.get(OmegaConf.select(cfg, "dataset.name"), C.DatasetConfig),
    }
    if OmegaConf.select(cfg, "dataset.name") == "synthetic":
        schemas["dataset.synthetic"] = C.SyntheticConfig

    def walk(node: DictConfig, schema: type, path: str) -> None:
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in map(str, node.keys()):
            name = f"{path}.{key}" if path else key
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = (
                    f"did you mean {path + '.' if path else ''}{close[0]}?"
                    if close
                    else f"keys there: {', '.join(fields)}"
                )
                p.add(name, f"unknown key in '{path or 'the root config'}'; {hint}")
            elif name in schemas and isinstance(node[key], DictConfig):
                walk(node[key], schemas[name], name)

    walk(cfg, C.EvaluateConfig if "ckpt_path" in cfg else C.MvfoulConfig, "")


def validate_config(cfg: DictConfig) -> ResolvedRun:
    """Raise :class:`ConfigError` listing every problem of ``cfg``; return derived values."""
    p = _Problems()
    _check_unknown_keys(cfg, p)
    _check_schema_values(cfg, p)
    indices = _check_dataset(cfg, p)
    _check_model(cfg, p, indices)
    for check in _CHECKS:
        check(cfg, p)
    if p.items:
        raise ConfigError(p.items)
    assert indices is not None  # a bad window is always reported above
    return ResolvedRun(frame_indices=indices, **input_normalisation(cfg))


def input_normalisation(cfg: DictConfig) -> dict[str, tuple[float, ...]]:
    """``{"mean": ..., "std": ...}``: ``dataset.mean``/``std`` where set, else the backbone's own
    (its torchvision weights' ``transforms()``; the R3D statistics for the tiny backbone)."""
    from mvfoul.models.backbones import BACKBONES

    spec = BACKBONES[cfg.model.backbone]
    return {
        key: tuple(float(v) for v in cfg.dataset[key])
        if cfg.dataset.get(key) is not None
        else getattr(spec, key)
        for key in ("mean", "std")
    }
