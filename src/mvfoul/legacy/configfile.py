"""``--write-config NAME``: a translated command line kept for good as ``conf/user/NAME.yaml``.

``conf/user/`` is on Hydra's search path (``src/hydra_plugins/``), like the presets, so the
file runs as ``python train_hydra.py --config-name NAME`` and can be overridden like a preset.
It holds what the command line said and nothing more: the base config (``/config``, or the
preset it named), the group options it chose, then the values it set. Keys it did not set keep
following conf/, as they did on the command line. Written the way ``mvfoul.runs keep`` writes a
kept run: ``# @package _global_``, a description line (shown by ``--help``), a defaults list
with absolute ``override /group: option`` entries, then ``_self_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mvfoul import atomic
from mvfoul.legacy.flags import LegacyFlagError
from mvfoul.legacy.overrides import Command, Translation, override_key, parse_override
from mvfoul.paths import CONF_DIR, PRESETS_DIR, USER_CONFIGS_DIR


def _check_name(name: str, folder: Path, force: bool) -> Path:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise LegacyFlagError(f"--write-config {name!r}: use letters, digits, '_' or '-'")
    for shadow in (CONF_DIR / f"{name}.yaml", PRESETS_DIR / f"{name}.yaml"):
        if shadow.is_file():
            raise LegacyFlagError(
                f"--write-config {name}: {shadow.relative_to(CONF_DIR.parent)} already has that name and "
                "--config-name would find it first; choose another name"
            )
    target = folder / f"{name}.yaml"
    if target.exists() and not force:
        raise LegacyFlagError(
            f"--write-config {name}: {target} exists; add --force to overwrite it"
        )
    return target


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def config_body(command: Command) -> dict[str, Any]:
    """The YAML document (defaults list and values) equivalent to a train command."""
    if command.hydra_flags:
        raise LegacyFlagError(
            f"--write-config: {' '.join(command.hydra_flags)} cannot be kept in a config file; "
            "give it to train_hydra.py when you run the config"
        )
    defaults: list[Any] = [f"/{command.config_name}" if command.config_name else "/config"]
    values: dict[str, Any] = {}
    for text in command.overrides:
        kind, key = override_key(text)
        if kind == "other":
            raise LegacyFlagError(
                f"--write-config: {text!r} (an addition, deletion or sweep) cannot be kept in a config file; "
                "give it on the command line when you run the config"
            )
        value = parse_override(text).value()
        if kind == "group":
            defaults.append({f"override /{key}": value})
        else:
            _set(values, key, value)
    defaults.append("_self_")
    return {"defaults": defaults, **values}


def _composes(command: Command) -> None:
    """Compose the translation once, so a bad key or option fails before anything is written."""
    from hydra import compose, initialize_config_dir

    import mvfoul.config  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose(command.config_name or "config", overrides=list(command.overrides))


def write_config(
    translation: Translation,
    name: str,
    *,
    force: bool = False,
    folder: Path = USER_CONFIGS_DIR,
    original: str = "",
) -> Path:
    """Write ``folder/NAME.yaml``; return its path. Refuses to overwrite without ``force``."""
    if not translation.trains:
        raise LegacyFlagError(
            "--write-config: this command line evaluates a checkpoint (--only_evaluation); "
            "a config file holds a training run"
        )
    target = _check_name(name, Path(folder), force)
    (command,) = translation.commands
    body = config_body(command)
    _composes(command)
    header = [
        "# @package _global_",
        f"# Converted from the {translation.source}'s command line (training/train.py --write-config {name}).",
    ]
    if original:
        header.append(f"# Was:     {original}")
    header.append(f"# Same as: {command.render()}")
    text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, text)
    return target
