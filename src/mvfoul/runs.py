"""Past runs: the exact command that reproduces one, and keeping one as a named config.

Every run folder holds Hydra's record of the run in ``.hydra/``: ``config.yaml`` (the composed
config), ``overrides.yaml`` (the command-line overrides) and ``hydra.yaml`` (which primary
config and group options were chosen).

    python -m mvfoul.runs command outputs/quick_test/2026-11-26_12-00-00
    python -m mvfoul.runs keep outputs/quick_test/2026-11-26_12-00-00 my_best_run
    python train_hydra.py --config-name my_best_run
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS
from mvfoul.paths import USER_CONFIGS_DIR


def _load(run_dir: Path, name: str) -> object:
    path = run_dir / ".hydra" / name
    if not path.is_file():
        raise MvfoulError(f"{path} not found: give a run folder made by train_hydra.py (it holds .hydra/{name})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rerun_command(run_dir: str | Path) -> str:
    """The command line that composes exactly this run's config again."""
    run_dir = Path(run_dir)
    hydra_cfg = _load(run_dir, "hydra.yaml")["hydra"]  # type: ignore[index]
    overrides = _load(run_dir, "overrides.yaml") or []
    words = ["python", "train_hydra.py", "--config-name", hydra_cfg["job"]["config_name"], *overrides]
    return " ".join(shlex.quote(str(w)) for w in words)


def keep_run(run_dir: str | Path, name: str, folder: Path = USER_CONFIGS_DIR) -> Path:
    """Write the run's composed config as ``<folder>/<name>.yaml``, usable as ``--config-name``.

    The file selects the same group options the run used (so each group is checked by the same
    schema) and then sets every value the run had, so later edits to presets or group files
    do not change it.
    """
    run_dir = Path(run_dir)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise MvfoulError(f"config name {name!r}: use letters, digits, '_' or '-'")
    config = _load(run_dir, "config.yaml")
    choices = _load(run_dir, "hydra.yaml")["hydra"]["runtime"]["choices"]  # type: ignore[index]
    defaults: list[object] = ["/config"]
    defaults += [{f"override /{group}": choices[group]} for group in GROUPS if group in choices]
    defaults.append("_self_")
    header = (
        "# @package _global_\n"
        f"# Kept run {run_dir}: its composed config, frozen (python -m mvfoul.runs keep).\n"
    )
    body = yaml.safe_dump({"defaults": defaults, **config}, sort_keys=False)  # type: ignore[dict-item]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.yaml"
    target.write_text(header + body, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvfoul.runs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    command = sub.add_parser("command", help="print the command that reruns a run exactly")
    command.add_argument("run_dir", type=Path)
    keep = sub.add_parser("keep", help="keep a run's config as conf/user/NAME.yaml (--config-name NAME)")
    keep.add_argument("run_dir", type=Path)
    keep.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.action == "command":
            print(rerun_command(args.run_dir))
        else:
            path = keep_run(args.run_dir, args.name)
            print(f"wrote {path}\nrun it with: python train_hydra.py --config-name {args.name}")
    except MvfoulError as err:
        print(f"mvfoul: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
