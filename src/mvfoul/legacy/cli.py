"""``training/train.py``: translate an old command line, say so, then run the Hydra command.

The run is literally the printed command: the same interpreter executes ``train_hydra.py`` (or
``evaluate_hydra.py``) with the printed arguments, from the same working directory, so its
outputs, errors and exit code are the Hydra run's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from mvfoul.legacy.configfile import write_config
from mvfoul.legacy.flags import VARS_SWITCH, Request, translate_legacy
from mvfoul.legacy.overrides import Command, Translation
from mvfoul.legacy.vars_baseline import translate_vars_baseline
from mvfoul.paths import PROJECT_ROOT

NOTE = "mvfoul: note: "


def translate(argv: Sequence[str]) -> Request:
    """Either dialect: the VARS baseline's when ``--from-vars-baseline`` is among the words."""
    argv = list(argv)
    return translate_vars_baseline(argv) if VARS_SWITCH in argv else translate_legacy(argv)


def script_path(script: str) -> str:
    """How to name an entry point from the current directory (relative when inside the project)."""
    path = PROJECT_ROOT / script
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def render(command: Command) -> str:
    return command.render(script_path(command.script))


def notice(translation: Translation) -> str:
    """The deprecation paragraph: what happened, the equivalent command(s), what to do next."""
    dialect = (
        "the VARS baseline's flags"
        if translation.source == "VARS baseline"
        else "the old trainer's flags"
    )
    plural = len(translation.commands) > 1
    text = (
        f"mvfoul: training/train.py is deprecated: it translates {dialect} into Hydra overrides and runs "
        f"the equivalent {'commands' if plural else 'command'} below. Run {'them' if plural else 'it'} "
        "directly from now on"
        + (
            ", or keep this command line for good with --write-config NAME"
            if translation.trains
            else ""
        )
        + " (see MIGRATION.md):"
    )
    return "\n".join([text, *(f"  {render(c)}" for c in translation.commands)])


def run_commands(commands: Sequence[Command]) -> int:
    """Run each command with this interpreter; stop at the first failure and return its code."""
    sys.stdout.flush()
    sys.stderr.flush()
    if len(commands) == 1:
        (command,) = commands
        script = str(PROJECT_ROOT / command.script)
        os.execv(sys.executable, [sys.executable, script, *command.args()])
    for command in commands:
        code = subprocess.call(
            [sys.executable, str(PROJECT_ROOT / command.script), *command.args()]
        )
        if code != 0:
            return code
    return 0


def _without_write_options(argv: Sequence[str]) -> list[str]:
    """The command line as it was before ``--write-config NAME [--force]`` was added to it."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--write-config":
            skip = True
        elif word != "--force" and not word.startswith("--write-config="):
            kept.append(word)
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    request = translate(argv)
    translation = request.translation
    for note in translation.notes:
        sys.stderr.write(NOTE + note + "\n")
    if request.write_config is not None:
        original = shlex.join(["python", "training/train.py", *_without_write_options(argv)])
        path = write_config(
            translation, request.write_config, force=request.force, original=original
        )
        print(f"wrote {path}")
        print(
            f"run it with: python {script_path('train_hydra.py')} --config-name {request.write_config}"
        )
        return 0
    sys.stderr.write(notice(translation) + "\n")
    if request.dry_run:
        for command in translation.commands:
            print(render(command))
        return 0
    return run_commands(translation.commands)


def run(argv: Sequence[str] | None = None) -> None:
    """The script's entry: :func:`main` with mvfoul's one-line errors, then exit with its code."""
    from mvfoul.cli import run_command_app

    code = 0

    def _main() -> None:
        nonlocal code
        code = main(argv)

    run_command_app(_main)
    sys.exit(code)
