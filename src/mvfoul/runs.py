"""Past runs: the exact command that reproduces one, continuing one, and keeping one as a
named config.

    python -m mvfoul.runs command outputs/quick_test/2026-11-26_12-00-00
    python -m mvfoul.runs resume outputs/quick_test/2026-11-26_12-00-00
    python -m mvfoul.runs keep outputs/quick_test/2026-11-26_12-00-00 my_best_run
    python train_hydra.py --config-name my_best_run
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mvfoul import atomic
from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS
from mvfoul.paths import CONF_DIR, PRESETS_DIR, PROJECT_ROOT, USER_CONFIGS_DIR
from mvfoul.runtime import hydra_quoted


def _load(run_dir: Path, name: str) -> Any:
    path = run_dir / ".hydra" / name
    if not path.is_file():
        raise MvfoulError(
            f"{path} not found: give a run folder made by train_hydra.py (it holds .hydra/{name})"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _run_arguments(run_dir: Path) -> list[str]:
    config_name = _load(run_dir, "hydra.yaml")["hydra"]["job"]["config_name"]
    return ["--config-name", config_name, *map(str, _load(run_dir, "overrides.yaml") or [])]


def _command(args: list[str]) -> str:
    return " ".join(shlex.quote(str(w)) for w in ["python", "train_hydra.py", *args])


def rerun_command(run_dir: str | Path) -> str:
    return _command(_run_arguments(Path(run_dir)))


def resume_run(run_dir: str | Path) -> int:
    """Rerun the run's own command with ``experiment.resume=auto`` into its own folder, from the
    folder it was started from (so its relative paths mean the same)."""
    run_dir = Path(run_dir).resolve()
    own = ("experiment.resume=", "hydra.run.dir=")
    args = [a for a in _run_arguments(run_dir) if not a.lstrip("+~").startswith(own)]
    quoted_dir = hydra_quoted(str(run_dir), "hydra.run.dir")
    args += ["experiment.resume=auto", f"hydra.run.dir={quoted_dir}"]
    cwd = Path(_load(run_dir, "hydra.yaml")["hydra"]["runtime"].get("cwd") or Path.cwd())
    print("resuming: " + _command(args), flush=True)
    command = [sys.executable, str(PROJECT_ROOT / "train_hydra.py"), *args]
    return subprocess.call(command, cwd=cwd if cwd.is_dir() else Path.cwd())


def keep_run(
    run_dir: str | Path, name: str, folder: Path = USER_CONFIGS_DIR, force: bool = False
) -> Path:
    """Write the run's composed config as ``<folder>/<name>.yaml``, usable as ``--config-name``:
    the run's group options (each checked by its schema), then every value the run had, so later
    edits to presets or group files do not change it."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise MvfoulError(f"config name {name!r}: use letters, digits, '_' or '-'")
    # --config-name finds a preset's or conf/'s own file first.
    taken = [p for p in (PRESETS_DIR / f"{name}.yaml", CONF_DIR / f"{name}.yaml") if p.is_file()]
    if taken:
        raise MvfoulError(
            f"config name {name!r} is taken by {taken[0]}: --config-name {name} would load that, "
            "not your run; choose another name"
        )
    target = folder / f"{name}.yaml"
    if target.exists() and not force:
        raise MvfoulError(
            f"{target} already exists; choose another name, or pass --force to replace it"
        )
    config = _load(Path(run_dir), "config.yaml")
    choices = _load(Path(run_dir), "hydra.yaml")["hydra"]["runtime"]["choices"]
    overrides = [{f"override /{group}": choices[group]} for group in GROUPS if group in choices]
    document = {"defaults": ["/config", *overrides, "_self_"], **config}
    header = (
        "# @package _global_\n"
        f"# Kept run {run_dir}: its composed config, frozen (python -m mvfoul.runs keep).\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, header + yaml.safe_dump(document, sort_keys=False))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mvfoul.runs", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("command", "print the command that reruns a run exactly"),
        (
            "resume",
            "continue a run in its own folder from its last.ckpt (its own command, experiment.resume=auto)",
        ),
        ("keep", "keep a run's config as conf/user/NAME.yaml (--config-name NAME)"),
    ):
        sub.add_parser(action, help=text).add_argument("run_dir", type=Path)
    sub.choices["keep"].add_argument("name")
    sub.choices["keep"].add_argument(
        "--force", action="store_true", help="replace conf/user/NAME.yaml if it exists"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "command":
            print(rerun_command(args.run_dir))
        elif args.action == "resume":
            return resume_run(args.run_dir)
        else:
            path = keep_run(args.run_dir, args.name, force=args.force)
            print(f"wrote {path}\nrun it with: python train_hydra.py --config-name {args.name}")
    except MvfoulError as err:
        print(f"mvfoul: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
