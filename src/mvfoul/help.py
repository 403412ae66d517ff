"""The ``--help`` text and ``docs/configuration.md``, generated from the config files and schemas.

An option's description is the first comment line of its YAML file, so the lists never drift from
what exists. Hydra fills ``$FLAGS_HELP`` into the help (``conf/hydra/help/mvfoul.yaml``)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from mvfoul import config
from mvfoul.paths import CONF_DIR

# Groups shown, in the order of the defaults list; each is a folder of conf/.
GROUPS = ("dataset", "model", "training", "loss", "sampling", "freezing", "system", "experiment")
PRESET_FOLDERS = ("presets", "user")
# Groups of whole searches, off by default, used with --multirun (not GROUPS: they have no schema).
SEARCH_GROUPS = ("hparams_search",)

USAGE = """\
mvfoul: multi-view soccer foul recognition (SoccerNet-MVFoul / VARS), configured with Hydra.

Usage
  python train_hydra.py [--config-name PRESET] [group=option ...] [key=value ...]

  python train_hydra.py --config-name quick_test              # first run: built-in data, CPU
  python train_hydra.py dataset.data_dir=/data/mvfouls         # train on the real data
  python train_hydra.py model=resnet3d training.max_epochs=50  # pick options, set keys
  python train_hydra.py --multirun training.learning_rate=1e-3,5e-4   # one run per value
"""

FOOTER = """\
Every key, its type, default and meaning: docs/configuration.md (from src/mvfoul/config.py).
Print the composed config with --cfg job (add --resolve to resolve interpolations).
"""


def describe(path: Path) -> str:
    """First comment line of a YAML file, skipping Hydra's ``# @package`` directive."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            break
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return "(no description: add a first comment line to this file)"


def default_options(conf_dir: Path) -> dict[str, str]:
    """group -> option chosen by the root config's defaults list."""
    root = yaml.safe_load((conf_dir / "config.yaml").read_text(encoding="utf-8"))
    entries = [entry for entry in root["defaults"] if isinstance(entry, dict)]
    return {group: option for entry in entries for group, option in entry.items()}


def _option_lines(folder: Path, default: str | None) -> list[str]:
    options = sorted(folder.glob("*.yaml"))
    width = max((len(path.stem) for path in options), default=0) + 2
    lines = []
    for path in options:
        mark = "*" if path.stem == default else " "
        lines.append(f"    {path.stem:<{width}}{mark} {describe(path)}")
    return lines


def render_help(conf_dir: Path) -> str:
    defaults = default_options(conf_dir)
    parts = [USAGE, "Presets (--config-name NAME)"]
    for folder in PRESET_FOLDERS:
        parts += _option_lines(conf_dir / folder, None)
    parts += ["", "Config groups (group=option; * marks the default)"]
    for group in GROUPS:
        parts += [f"  {group}", *_option_lines(conf_dir / group, defaults.get(group))]
    for group in SEARCH_GROUPS:
        parts += ["", f"Hyperparameter search (--multirun {group}=NAME; off by default)"]
        parts += _option_lines(conf_dir / group, None)
    parts += ["", FOOTER, "Hydra flags\n$FLAGS_HELP"]
    return "\n".join(parts)


REFERENCE_COMMAND = "python -m mvfoul.help --reference > docs/configuration.md"


def _type_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]: the schema has no other unions
        return f"{_type_text(args[0])} or null"
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return "mapping"
    if hint is Any:
        return "any"
    return hint.__name__


_TABLE_HEAD = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]


def _key_rows(schema: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(schema)
    defaults = schema()
    rows = []
    for field in dataclasses.fields(schema):
        default = getattr(defaults, field.name)
        if default == "???":
            value = "required"
        elif dataclasses.is_dataclass(default):
            value = "(below)"
        else:
            value = "`" + json.dumps(default, ensure_ascii=False).replace('"', "") + "`"
        doc = field.metadata.get("doc", "").replace("|", "\\|")
        choices = field.metadata.get("choices")
        if choices:
            allowed = " \\| ".join(f"`{choice}`" for choice in choices)
        else:
            allowed = field.metadata.get("bounds") or ""
        type_text = _type_text(hints[field.name])
        rows.append(f"| `{prefix}{field.name}` | {type_text} | {value} | {allowed} | {doc} |")
    return rows


def _flat(values: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for name, value in values.items():
        if isinstance(value, dict) and value:
            out += _flat(value, f"{prefix}{name}.")
        else:
            shown = json.dumps(value).replace('"', "")
            out.append(f"`{prefix}{name}={shown}`")
    return out


def render_reference(conf_dir: Path) -> str:
    """Every key: type, default, and one-line doc, from the schemas; and what each option sets."""
    defaults = default_options(conf_dir)
    lines = [
        "# Configuration reference",
        "",
        "Every key of mvfoul's configuration (type, default, allowed values or range, meaning),",
        "generated from the schemas in `src/mvfoul/config.py`",
        f"(`{REFERENCE_COMMAND}`; a test keeps it current). A group's option files",
        "(`conf/<group>/<option>.yaml`) set only what differs from these defaults; presets",
        "(`--config-name`) may set more. `python train_hydra.py --cfg job` prints a composed config.",
    ]
    for group in GROUPS:
        lines += ["", f"## `{group}`", ""]
        for path in sorted((conf_dir / group).glob("*.yaml")):
            mark = " (default)" if path.stem == defaults.get(group) else ""
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            values.pop("defaults", None)
            sets = _flat(values, f"{group}.")
            what = f" Sets {', '.join(sets)}." if sets else ""
            lines.append(f"- `{group}={path.stem}`{mark}: {describe(path)}{what}")
        lines += ["", *_TABLE_HEAD, *_key_rows(config.GROUP_SCHEMAS[group], f"{group}.")]
        if group == "dataset":
            lines += ["", "With `dataset=synthetic`, the built-in dataset's generation:", ""]
            lines += [*_TABLE_HEAD, *_key_rows(config.SyntheticConfig, "dataset.synthetic.")]
    lines += ["", "## `evaluate_hydra.py`", "", "Every key above, plus:", "", *_TABLE_HEAD]
    # Its own fields follow the inherited ones, one per group.
    lines += _key_rows(config.EvaluateConfig, "")[len(config.GROUP_SCHEMAS) :]
    return "\n".join(lines) + "\n"


# hydra/help/mvfoul.yaml renders its template through this resolver, so --help is generated from
# the config files themselves and cannot go stale. The entry points import this module via cli.
OmegaConf.register_new_resolver("mvfoul_help", lambda: render_help(CONF_DIR), replace=True)

if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reference"]:
        raise SystemExit(f"usage: {REFERENCE_COMMAND}")
    print(render_reference(CONF_DIR), end="")
