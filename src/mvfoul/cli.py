"""Error reporting for the entry points: one line a user can act on, no traceback. mvfoul asks
Hydra to re-raise (``HYDRA_FULL_ERROR=1`` in-process) instead of printing its own multi-line report.
Bugs, and every error when the user sets ``HYDRA_FULL_ERROR=1``, keep their traceback."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS
from mvfoul.paths import PRESETS_DIR
from mvfoul.run_folder import RunFolderAbort
from mvfoul.validate import did_you_mean

PREFIX = "mvfoul: error: "

# key=value=more: a value holding "=" that Hydra's grammar cannot read unquoted.
_VALUE_WITH_EQUALS = re.compile(r"^([+~]{0,2}[\w./@\-]+)=([^'\"].*=.*)$")


def _omegaconf_message(exc: BaseException | None) -> str | None:
    """One line for a bad value, or for an unknown key with the closest existing key of the node
    it was looked up in; None for any other error."""
    if isinstance(exc, ValidationError):
        text = str(exc.msg) if getattr(exc, "msg", None) else str(exc)
        detail = text.splitlines()[0]
        return f"{exc.full_key or '?'}: {detail} (fix the value on the command line or in the YAML that sets it)"
    if not isinstance(exc, (ConfigKeyError, ConfigAttributeError)) or not exc.full_key:
        return None
    parent, _, leaf = exc.full_key.rpartition(".")
    schema = exc.object_type
    keys = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    hint = f"; {did_you_mean(parent, leaf, keys)}" if keys else ""
    where = f"'{parent}'" if parent else "the root config"
    return f"{exc.full_key}: unknown key in {where}{hint}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _strip_worker_traceback(message: str) -> str:
    """A DataLoader worker re-raises our error with the worker's traceback as its message:
    keep only the original one-line message (the traceback's last line)."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    _, sep, original = last.partition("Error: ")
    return original if sep else last


def explain(exc: BaseException) -> str | None:
    """One line for an error a user can fix, or None for a bug."""
    if isinstance(exc, MvfoulError):
        return _strip_worker_traceback(str(exc))
    if isinstance(exc, MissingConfigException):
        return _missing_config_message(exc)
    if isinstance(exc, OverrideParseException):
        return _override_parse_message(exc)
    if isinstance(exc, ConfigCompositionException):
        line = _omegaconf_message(exc.__cause__)
        if line:
            return line
        if isinstance(exc.__cause__, OmegaConfBaseException):
            return f"{str(exc).splitlines()[0]} {str(exc.__cause__).splitlines()[0]}"
        return _one_line(str(exc))
    return _omegaconf_message(exc)


def _override_parse_message(exc: OverrideParseException) -> str:
    for word in sys.argv[1:]:
        match = _VALUE_WITH_EQUALS.match(word)
        if match:
            key, value = match.groups()
            return (
                f"{key}: the value {value!r} holds '=', which Hydra cannot read unquoted; quote it: "
                f"\"{key}='{value}'\" (the double quotes keep the single ones from the shell)"
            )
    return f"cannot parse the override: {str(exc).splitlines()[0]}"


def _missing_config_message(exc: MissingConfigException) -> str:
    text = str(exc)
    if "primary config" in text:
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        return f"{text.splitlines()[0]} Presets: {presets}; your own configs go in conf/user/."
    missing = exc.missing_cfg_file or ""
    if missing == "hydra/sweeper/optuna":
        return "hparams_search=optuna needs Hydra's Optuna sweeper: pip install -e '.[optuna]'"
    if missing in ("hydra/launcher/submitit_slurm", "hydra/launcher/submitit_local"):
        return "hydra/launcher=slurm (or submitit_local) needs Hydra's submitit launcher: pip install -e '.[slurm]'"
    group, _, option = missing.rpartition("/")
    if group in GROUPS and exc.options:
        # The schemas live in each group too (for the YAML defaults lists); they are not options.
        options = [o for o in exc.options if not o.endswith("_schema")]
        return f"{group}={option}: no such option; available: {', '.join(options)}"
    return _one_line(text)


def _report_and_exit(exc: BaseException, wants_traceback: bool) -> None:
    """Print a user's error as one line and exit; re-raise a bug (or on request) as it is."""
    message = None if wants_traceback else explain(exc)
    if message is None:
        raise exc
    sys.stderr.write(PREFIX + message + "\n")
    sys.exit(getattr(exc, "exit_code", 2))


# A user error raised by a single run's task function, held back so that Hydra does not print its
# own "Error executing job with overrides: [...]" line before mvfoul's one line.
_DEFERRED: list[BaseException] = []


def run_task(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``task(cfg)`` inside a ``@hydra.main`` function so that a user's error in a single run
    reaches :func:`run_hydra_app` directly (see ``_DEFERRED``). In a ``--multirun`` the job still
    fails, so the sweep records it."""
    try:
        return task(cfg)
    except Exception as exc:  # noqa: BLE001 - a bug or a multirun job re-raises below
        single_run = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN
        if not single_run or explain(exc) is None:
            raise
        _DEFERRED.append(exc)
        return None


def run_hydra_app(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function with mvfoul's error reporting."""
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except RunFolderAbort as abort:  # raised from a Hydra callback, before the job starts
        _report_and_exit(abort.error, wants_traceback)
    except Exception as exc:  # noqa: BLE001 - every error is either explained or re-raised
        _report_and_exit(exc, wants_traceback)
    if _DEFERRED:
        _report_and_exit(_DEFERRED.pop(), wants_traceback)


def run_command_app(main: Callable[[], Any]) -> None:
    """Call a command that composes configs itself (no ``@hydra.main``), reporting errors alike."""
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - every error is either explained or re-raised
        _report_and_exit(exc, os.environ.get("HYDRA_FULL_ERROR") == "1")
