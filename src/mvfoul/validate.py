"""Checks OmegaConf cannot do, all at startup and reported in one message: allowed values and
ranges (from each key's schema metadata), unknown keys, and rules across keys. Those rules live
beside the code they protect and register with :func:`cross_key_rule`, so this module depends on
nothing above the schema; :func:`mvfoul.rules.validate_config` runs them all."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mvfoul import config as C
from mvfoul.errors import ConfigError


@dataclass(frozen=True)
class ResolvedRun:
    """Values derived from the config once it is valid (each derived by the rule that owns it)."""

    frame_indices: tuple[int, ...]
    # Per-channel input normalisation: dataset.mean/std, or the backbone's own when null.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


class Problems:
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


def did_you_mean(parent: str, name: str, keys: list[str]) -> str:
    """The hint for an unknown key ``name`` of node ``parent`` whose keys are ``keys``."""
    close = difflib.get_close_matches(name, keys, n=1)
    if close:
        return f"did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f"keys there: {', '.join(keys)}"


# A rule reports problems and may return values it derives (fields of ResolvedRun).
Rule = Callable[[DictConfig, Problems], Mapping[str, Any] | None]
_RULES: dict[str, tuple[str, Rule]] = {}
# Problems are listed in the schema's group order, whatever order the modules were imported in.
_GROUP_ORDER = tuple(C.GROUP_SCHEMAS)


def cross_key_rule(group: str) -> Callable[[Rule], Rule]:
    """Register a rule protecting ``group``'s keys; the module that uses those keys defines it."""
    assert group in _GROUP_ORDER, group

    def register(rule: Rule) -> Rule:
        _RULES[f"{rule.__module__}.{rule.__qualname__}"] = (group, rule)
        return rule

    return register


def registered_rules() -> list[str]:
    """The registered rules' qualified names, in the order they run."""
    return sorted(_RULES, key=lambda name: (_GROUP_ORDER.index(_RULES[name][0]), name))


def with_schema(cfg: DictConfig) -> DictConfig:
    """``cfg`` merged onto the root schema: a saved run's config.yaml is type-checked too."""
    schema = OmegaConf.structured(C.MvfoulConfig)
    dataset_schema = C.DATASET_SCHEMAS.get(OmegaConf.select(cfg, "dataset.name"))
    if dataset_schema is C.SyntheticDatasetConfig and "synthetic" not in cfg.dataset:
        # Only the dataset=synthetic option brings the generation keys the built-in data needs.
        raise ConfigError(
            "dataset.name: 'synthetic' set on another dataset option; choose the built-in "
            "dataset with dataset=synthetic (the option), not dataset.name=synthetic"
        )
    if dataset_schema is not None:
        schema.dataset = OmegaConf.structured(dataset_schema)
    merged = OmegaConf.merge(schema, cfg)
    assert isinstance(merged, DictConfig)
    return merged


def _schemas_in(cfg: DictConfig) -> dict[str, type]:
    """Node path -> schema for every schema'd node of ``cfg``."""
    dataset = C.DATASET_SCHEMAS.get(OmegaConf.select(cfg, "dataset.name"), C.DatasetConfig)
    found = {**C.GROUP_SCHEMAS, "dataset": dataset}
    if dataset is C.SyntheticDatasetConfig:
        found["dataset.synthetic"] = C.SyntheticConfig
    return found


def _check_unknown_keys(cfg: DictConfig, p: Problems) -> None:
    """Keys no schema declares. Composition refuses a misspelt ``key=value``, but Hydra's append
    syntax ``+training.learnin_rate=0.1`` adds a key past the schema on purpose."""
    schemas = _schemas_in(cfg)

    def walk(node: DictConfig, schema: type, path: str) -> None:
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in map(str, node.keys()):
            name = f"{path}.{key}" if path else key
            if key not in fields:
                where = path or "the root config"
                p.add(name, f"unknown key in '{where}'; {did_you_mean(path, key, fields)}")
            elif name in schemas and isinstance(node[key], DictConfig):
                walk(node[key], schemas[name], name)

    walk(cfg, C.EvaluateConfig if "ckpt_path" in cfg else C.MvfoulConfig, "")


def _check_schema_values(cfg: DictConfig, p: Problems) -> None:
    """Every key's allowed values and range, as its schema field declares them; null passes."""
    for path, schema in _schemas_in(cfg).items():
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


def check_registered_rules(cfg: DictConfig) -> ResolvedRun:
    """Raise :class:`ConfigError` listing every problem; return derived values. Only the rules
    registered so far run: use :func:`mvfoul.rules.validate_config`, which registers them all."""
    p = Problems()
    _check_unknown_keys(cfg, p)
    _check_schema_values(cfg, p)
    derived: dict[str, Any] = {}
    for name in registered_rules():
        derived.update(_RULES[name][1](cfg, p) or {})
    if p.items:
        raise ConfigError(p.items)
    missing = {"frame_indices", "mean", "std"} - derived.keys()
    if missing:
        # Only a caller that bypasses mvfoul.rules (and so half the rules) lands here.
        raise RuntimeError(
            f"no registered rule derived {sorted(missing)}: validate with mvfoul.rules.validate_config"
        )
    return ResolvedRun(**derived)
