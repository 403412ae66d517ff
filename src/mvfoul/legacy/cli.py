"""``training/train.py``: translate an old command line, print the equivalent command and run
exactly that (its output and exit code are the Hydra run's), or keep it as conf/user/NAME.yaml."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir

from mvfoul import atomic
from mvfoul.legacy import flags
from mvfoul.legacy.flags import Command, LegacyFlagError, Request, Translation
from mvfoul.legacy.vars_baseline import translate_vars_baseline
from mvfoul.paths import CONF_DIR, PRESETS_DIR, PROJECT_ROOT, USER_CONFIGS_DIR


def translate(argv: Sequence[str]) -> Request:
    dialect = translate_vars_baseline if flags.VARS_SWITCH in argv else flags.translate_legacy
    return dialect(list(argv))


def script_path(script: str) -> str:
    """How to name an entry point from the current directory (relative when inside the project)."""
    path = PROJECT_ROOT / script
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def notice(translation: Translation) -> str:
    several = len(translation.commands) > 1
    commands, them = ("commands", "them") if several else ("command", "it")
    keep = ""
    if translation.trains:
        keep = ", or keep this command line for good with --write-config NAME"
    lines = [f"  {c.render(script_path(c.script))}" for c in translation.commands]
    return (
        f"mvfoul: training/train.py is deprecated: it translates the {translation.source}'s flags into "
        f"Hydra overrides and runs the equivalent {commands} below. Run "
        f"{them} directly from now on{keep} (see MIGRATION.md):\n" + "\n".join(lines)
    )


def config_body(command: Command) -> dict[str, Any]:
    """The YAML document (defaults list and values) equivalent to a train command."""
    if command.hydra_flags:
        raise LegacyFlagError(
            f"--write-config: {' '.join(command.hydra_flags)} cannot be kept in a config file; "
            "give it to train_hydra.py when you run the config"
        )
    defaults: list[Any] = [f"/{command.config_name or 'config'}"]
    values: dict[str, Any] = {}
    for text in command.overrides:
        kind, key = flags.override_key(text)
        if kind == "other":
            raise LegacyFlagError(
                f"--write-config: {text!r} (an addition, deletion or sweep) cannot be kept in a config file; "
                "give it on the command line when you run the config"
            )
        value = flags.parse_override(text).value()
        if kind == "group":
            defaults.append({f"override /{key}": value})
            continue
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return {"defaults": [*defaults, "_self_"], **values}


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
    if not name.replace("_", "").replace("-", "").isalnum():
        raise LegacyFlagError(f"--write-config {name!r}: use letters, digits, '_' or '-'")
    for shadow in (CONF_DIR / f"{name}.yaml", PRESETS_DIR / f"{name}.yaml"):
        if shadow.is_file():
            raise LegacyFlagError(
                f"--write-config {name}: {shadow.relative_to(CONF_DIR.parent)} already has that name and "
                "--config-name would find it first; choose another name"
            )
    target = Path(folder) / f"{name}.yaml"
    if target.exists() and not force:
        raise LegacyFlagError(
            f"--write-config {name}: {target} exists; add --force to overwrite it"
        )
    (command,) = translation.commands
    body = config_body(command)
    # Compose once, so that a bad key or option fails before anything is written.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose(command.config_name or "config", overrides=list(command.overrides))
    header = [
        "# @package _global_",
        f"# Converted from the {translation.source}'s command line (training/train.py --write-config {name}).",
    ]
    if original:
        header.append(f"# Was:     {original}")
    header.append(f"# Same as: {command.render()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    request = translate(argv)
    translation = request.translation
    for note in translation.notes:
        sys.stderr.write(f"mvfoul: note: {note}\n")
    if request.write_config is not None:
        # The command line as it was before --write-config NAME [--force] was added to it.
        was = [
            word
            for before, word in zip(["", *argv], argv)
            if not word.startswith(("--force", "--write-config")) and before != "--write-config"
        ]
        original = shlex.join(["python", "training/train.py", *was])
        name = request.write_config
        print(f"wrote {write_config(translation, name, force=request.force, original=original)}")
        print(f"run it with: python {script_path('train_hydra.py')} --config-name {name}")
        return 0
    sys.stderr.write(notice(translation) + "\n")
    if request.dry_run:
        print("\n".join(c.render(script_path(c.script)) for c in translation.commands))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    runs = [[sys.executable, str(PROJECT_ROOT / c.script), *c.args()] for c in translation.commands]
    if len(runs) == 1:  # become the Hydra run: its exit code, signals and output are the user's
        os.execv(sys.executable, runs[0])
    for words in runs:  # one evaluation per split: stop at the first failure
        if code := subprocess.call(words):
            return code
    return 0


def run(argv: Sequence[str] | None = None) -> None:
    """:func:`main` with mvfoul's one-line errors, then exit with its code."""
    from mvfoul.cli import run_command_app

    run_command_app(lambda: sys.exit(main(argv)))
