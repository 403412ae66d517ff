"""Hydra command lines built from typed values, and read back.

Every translated setting becomes one Hydra override ``key=value``. A value is written unquoted
when Hydra reads it back as exactly that value, and quoted otherwise (``system.precision="16"``
stays a string, ``dataset.data_dir="/data/my clips"`` keeps its space). Each override is checked
by parsing it with Hydra's own override parser, so a printed command can never mean something
else than the translation. Shell quoting of whole words is ``shlex``'s.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS, SEARCH_GROUPS

# Options of these groups are chosen with ``group=option`` (not keys).
GROUP_NAMES = (*GROUPS, *SEARCH_GROUPS)


@lru_cache(maxsize=1)
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(text: str) -> Any:
    """Hydra's parse of one override (raises Hydra's OverrideParseException when malformed)."""
    return _parser().parse_overrides([text])[0]


def _same(parsed: Any, value: Any) -> bool:
    if isinstance(value, float) and isinstance(parsed, float) and math.isnan(value):
        return math.isnan(parsed)
    return type(parsed) is type(value) and parsed == value


def _quoted(text: str) -> str:
    # Hydra's quoted strings: a quote inside is escaped with a backslash, and so are the
    # backslashes that come right before a quote or the closing quote.
    escaped = re.sub(
        r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text
    )
    return f'"{escaped}"'


def format_value(value: Any) -> str:
    """A Python value (None, bool, int, float, str or a list of them) in Hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra value")


def make_override(key: str, value: Any) -> str:
    """``key=value`` that Hydra parses back to exactly ``value``."""
    text = f"{key}={format_value(value)}"
    if _reads_back(text, value):
        return text
    if isinstance(value, (list, tuple)):
        text = f"{key}=[" + ",".join(_element(v) for v in value) + "]"
    elif isinstance(value, str):
        text = f"{key}={_quoted(value)}"
    if _reads_back(text, value):
        return text
    raise MvfoulError(
        f"{key}: the value {value!r} cannot be written as a Hydra override; set it in a YAML config instead"
    )


def _element(value: Any) -> str:
    plain = format_value(value)
    if isinstance(value, str) and not _reads_back(f"k=[{plain}]", [value]):
        return _quoted(value)
    return plain


def _reads_back(text: str, value: Any) -> bool:
    try:
        parsed = parse_override(text)
    except Exception:  # noqa: BLE001 - any parse failure means "quote it"
        return False
    if parsed.is_sweep_override():
        return False
    got = parsed.value()
    if isinstance(value, (list, tuple)):
        return (
            isinstance(got, list)
            and len(got) == len(value)
            and all(_same(g, v) for g, v in zip(got, value))
        )
    return _same(got, value)


def override_key(text: str) -> tuple[str, str]:
    """(kind, key) of an override: kind 'group', 'key' or 'other' (+add, ~delete, sweeps...)."""
    from hydra.core.override_parser.types import OverrideType

    parsed = parse_override(text)
    if (
        parsed.type != OverrideType.CHANGE
        or parsed.is_sweep_override()
        or parsed.package is not None
    ):
        return "other", parsed.key_or_group
    if parsed.key_or_group in GROUP_NAMES:
        return "group", parsed.key_or_group
    return "key", parsed.key_or_group


def merge_overrides(*parts: Iterable[str]) -> list[str]:
    """Concatenate override lists; a later group choice or key value replaces an earlier one
    (Hydra would apply the last one anyway; this keeps the printed command free of dead words)."""
    keyed: list[tuple[tuple[str, str], str]] = []
    for text in (t for part in parts for t in part):
        ident = override_key(text)
        if ident[0] != "other":
            keyed = [(k, t) for k, t in keyed if k != ident]
        keyed.append((ident, text))
    return [text for _, text in keyed]


@dataclass
class Command:
    """One Hydra command: ``python <script> [hydra flags] [--config-name NAME] overrides...``."""

    script: str  # train_hydra.py or evaluate_hydra.py, relative to the project root
    overrides: list[str] = field(default_factory=list)
    config_name: str | None = None
    hydra_flags: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        """The arguments after the script."""
        name = ["--config-name", self.config_name] if self.config_name else []
        return [*self.hydra_flags, *name, *self.overrides]

    def render(self, script_path: str | None = None, python: str = "python") -> str:
        return shlex.join([python, script_path or self.script, *self.args()])


@dataclass
class Translation:
    """What an old command line means for mvfoul: the command(s) to run and what to tell."""

    source: str  # "old trainer" or "VARS baseline"
    commands: list[Command]
    notes: list[str] = field(default_factory=list)  # one line each, shown before the run

    @property
    def trains(self) -> bool:
        return len(self.commands) == 1 and self.commands[0].script == "train_hydra.py"


def split_command(words: Sequence[str]) -> tuple[str | None, list[str]]:
    """(config name, overrides) of ``python train_hydra.py ...`` words: the inverse of
    :meth:`Command.args` for a train command (Hydra's own flags are skipped)."""
    words = list(words)
    while words and not words[0].endswith(".py"):
        words.pop(0)  # python (or a path to it)
    words = words[1:]
    config_name: str | None = None
    overrides: list[str] = []
    takes_value = {
        "--config-name",
        "-cn",
        "--cfg",
        "-c",
        "--config-path",
        "-cp",
        "--config-dir",
        "-cd",
        "--package",
        "-p",
    }
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--config-name", "-cn"):
            config_name = words[i + 1]
            i += 2
        elif word.startswith("--config-name="):
            config_name = word.split("=", 1)[1]
            i += 1
        elif word in takes_value:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            overrides.append(word)
            i += 1
    return config_name, overrides
