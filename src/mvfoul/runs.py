"""Past runs: the exact command that reproduces one, continuing one, and keeping one as a
named config.

Every run folder holds Hydra's record of the run in ``.hydra/``: ``config.yaml`` (the composed
config), ``overrides.yaml`` (the command-line overrides) and ``hydra.yaml`` (which primary
config and group options were chosen).

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

import yaml

from mvfoul import atomic
from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS
from mvfoul.paths import CONF_DIR, PRESETS_DIR, PROJECT_ROOT, USER_CONFIGS_DIR


def _load(run_dir: Path, name: str) -> object:
    path = run_dir / ".hydra" / name
    if not path.is_file():
        raise MvfoulError(
            f"{path} not found: give a run folder made by train_hydra.py (it holds .hydra/{name})"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rerun_command(run_dir: str | Path) -> str:
    """The command line that composes exactly this run's config again."""
    return " ".join(
        shlex.quote(str(w)) for w in ["python", "train_hydra.py", *_run_arguments(Path(run_dir))]
    )


def _run_arguments(run_dir: Path) -> list[str]:
    hydra_cfg = _load(run_dir, "hydra.yaml")["hydra"]  # type: ignore[index]
    overrides = _load(run_dir, "overrides.yaml") or []
    return ["--config-name", hydra_cfg["job"]["config_name"], *[str(o) for o in overrides]]  # type: ignore[attr-defined]


def resume_arguments(run_dir: str | Path) -> tuple[list[str], Path]:
    """The ``train_hydra.py`` arguments that continue the run in ``run_dir`` in its own folder
    (its own command, with ``experiment.resume=auto``), and the folder to run them from (the
    one the run was started from, so its relative paths mean the same)."""
    from mvfoul.runtime import hydra_quoted

    run_dir = Path(run_dir).resolve()
    args = [
        a
        for a in _run_arguments(run_dir)
        if not a.lstrip("+~").startswith(("experiment.resume=", "hydra.run.dir="))
    ]
    args += [
        "experiment.resume=auto",
        f"hydra.run.dir={hydra_quoted(str(run_dir), 'hydra.run.dir')}",
    ]
    cwd = _load(run_dir, "hydra.yaml")["hydra"]["runtime"].get("cwd")  # type: ignore[index]
    return args, Path(cwd) if cwd and Path(cwd).is_dir() else Path.cwd()


def resume_run(run_dir: str | Path) -> int:
    """Continue the run in ``run_dir`` (python -m mvfoul.runs resume); returns the exit code."""
    args, cwd = resume_arguments(run_dir)
    command = [sys.executable, str(PROJECT_ROOT / "train_hydra.py"), *args]
    print(
        "resuming: " + " ".join(shlex.quote(w) for w in ["python", "train_hydra.py", *args]),
        flush=True,
    )
    return subprocess.call(command, cwd=cwd)


def keep_run(
    run_dir: str | Path, name: str, folder: Path = USER_CONFIGS_DIR, force: bool = False
) -> Path:
    """Write the run's composed config as ``<folder>/<name>.yaml``, usable as ``--config-name``.

    The file selects the same group options the run used (so each group is checked by the same
    schema) and then sets every value the run had, so later edits to presets or group files
    do not change it. A name already kept is refused unless ``force``; a name a preset or
    ``conf/`` uses is always refused, since ``--config-name`` finds those first.
    """
    run_dir = Path(run_dir)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise MvfoulError(f"config name {name!r}: use letters, digits, '_' or '-'")
    taken = [d for d in (PRESETS_DIR, CONF_DIR) if (d / f"{name}.yaml").is_file()]
    if taken:
        raise MvfoulError(
            f"config name {name!r} is taken by {taken[0] / (name + '.yaml')}: --config-name {name} would load that, "
            "not your run; choose another name"
        )
    if (folder / f"{name}.yaml").exists() and not force:
        raise MvfoulError(
            f"{folder / (name + '.yaml')} already exists; choose another name, or pass --force to replace it"
        )
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
    atomic.write_text(target, header + body)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mvfoul.runs", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    command = sub.add_parser("command", help="print the command that reruns a run exactly")
    command.add_argument("run_dir", type=Path)
    resume = sub.add_parser(
        "resume",
        help="continue a run in its own folder from its last.ckpt (its own command, experiment.resume=auto)",
    )
    resume.add_argument("run_dir", type=Path)
    keep = sub.add_parser(
        "keep", help="keep a run's config as conf/user/NAME.yaml (--config-name NAME)"
    )
    keep.add_argument("run_dir", type=Path)
    keep.add_argument("name")
    keep.add_argument(
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
