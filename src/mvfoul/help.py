"""The ``--help`` text, generated from the config files.

Each option's description is the first comment line of its YAML file, so documenting an option
where it lives is enough for ``--help`` to show it, and the list can never drift from what
exists. Hydra renders the result as its help template (``conf/hydra/help/mvfoul.yaml``), so
``$FLAGS_HELP`` below is filled in by Hydra.
"""

from __future__ import annotations

from pathlib import Path

import yaml

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
Every key is documented where it is set: conf/<group>/<option>.yaml.
Print the composed config with --cfg job (add --resolve to resolve interpolations).
"""


def describe(path: Path) -> str:
    """First comment line of a YAML file, skipping Hydra's ``# @package`` directive."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        text = stripped.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return "(no description: add a first comment line to this file)"


def default_options(conf_dir: Path) -> dict[str, str]:
    """group -> option chosen by the root config's defaults list."""
    root = yaml.safe_load((conf_dir / "config.yaml").read_text(encoding="utf-8"))
    chosen: dict[str, str] = {}
    for entry in root.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if not key.startswith("override "):
                    chosen[key] = value
    return chosen


def _option_lines(folder: Path, default: str | None) -> list[str]:
    options = sorted(p for p in folder.glob("*.yaml"))
    width = max((len(p.stem) for p in options), default=0) + 2
    lines = []
    for path in options:
        mark = "*" if path.stem == default else " "
        lines.append(f"    {path.stem:<{width}}{mark} {describe(path)}")
    return lines


def render_help(conf_dir: Path) -> str:
    conf_dir = Path(conf_dir)
    defaults = default_options(conf_dir)
    parts = [USAGE, "Presets (--config-name NAME)"]
    for folder in PRESET_FOLDERS:
        if (conf_dir / folder).is_dir():
            parts.extend(_option_lines(conf_dir / folder, None))
    parts.append("")
    parts.append("Config groups (group=option; * marks the default)")
    for group in GROUPS:
        parts.append(f"  {group}")
        parts.extend(_option_lines(conf_dir / group, defaults.get(group)))
    for group in SEARCH_GROUPS:
        if (conf_dir / group).is_dir():
            parts.append("")
            parts.append(f"Hyperparameter search (--multirun {group}=NAME; off by default)")
            parts.extend(_option_lines(conf_dir / group, None))
    parts.append("")
    parts.append(FOOTER)
    parts.append("Hydra flags\n$FLAGS_HELP")
    return "\n".join(parts)
