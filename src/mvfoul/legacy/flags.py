"""The old trainer's flags, derived from the schema (each leaf key's field name, or the whole key
with dots as underscores where the field name is shared: ``--dataset_name``), and what both
dialects share: the parser, the commands, and Hydra overrides written from typed values."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import re
import shlex
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import MISSING

from mvfoul import config as C
from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS, SEARCH_GROUPS
from mvfoul.paths import CONF_DIR, PRESETS_DIR, USER_CONFIGS_DIR

PROG = "python training/train.py"
VARS_SWITCH = "--from-vars-baseline"
REQUIRED = "(required)"
NULLS = ("null", "none", "~")
_OVERRIDES = OverridesParser.create()


def parse_override(text: str) -> Any:
    return _OVERRIDES.parse_overrides([text])[0]  # mvfoul.cli reports its errors in one line


class LegacyFlagError(MvfoulError):
    exit_code = 2  # argparse's code for a bad command line


def _reads_back(text: str, value: Any) -> bool:
    try:
        parsed = parse_override(text)
    except Exception:  # noqa: BLE001 - any parse failure means "quote it"
        return False
    # repr: the same value of the same type, element by element (1 is not 1.0 nor "1"; nan is nan)
    return not parsed.is_sweep_override() and repr(parsed.value()) == repr(value)


def _plain(value: Any, separator: str = ",") -> str:
    if isinstance(value, list):
        return "[" + separator.join(_plain(item, separator) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _quoted(text: str) -> str:
    # Hydra: a quote inside is escaped with a backslash, and backslashes before it are doubled
    text = re.sub(r'(\\*)"', r'\1\1\\"', text)
    return '"' + re.sub(r"(\\+)$", r"\1\1", text) + '"'


def _item(value: Any) -> str:  # a list item is quoted only where it would not read back alone
    quote = isinstance(value, str) and not _reads_back(f"k=[{value}]", [value])
    return _quoted(value) if quote else _plain(value)


def make_override(key: str, value: Any) -> str:
    """``key=value`` that Hydra parses back to exactly ``value``."""
    if isinstance(value, list):
        quoted = f"[{','.join(map(_item, value))}]"
    else:
        quoted = _quoted(str(value))
    for text in (f"{key}={_plain(value)}", f"{key}={quoted}"):
        if _reads_back(text, value):
            return text
    raise MvfoulError(
        f"{key}: the value {value!r} cannot be written as a Hydra override; set it in a YAML config instead"
    )


def override_key(text: str) -> tuple[str, str]:
    """(kind, key): kind 'group', 'key' or 'other' (+add, ~delete, sweeps...)."""
    parsed = parse_override(text)
    key = parsed.key_or_group
    if (
        parsed.type != OverrideType.CHANGE
        or parsed.is_sweep_override()
        or parsed.package is not None
    ):
        return "other", key
    if key in (*GROUPS, *SEARCH_GROUPS):
        return "group", key
    return "key", key


def merge_overrides(*parts: Iterable[str]) -> list[str]:
    """A later group choice or key value replaces an earlier one, as Hydra would apply it."""
    kept: dict[Any, str] = {}
    for number, text in enumerate(t for part in parts for t in part):
        kind, key = override_key(text)
        slot = number if kind == "other" else key
        kept.pop(slot, None)
        kept[slot] = text
    return list(kept.values())


@dataclass
class Command:
    script: str  # train_hydra.py or evaluate_hydra.py, relative to the project root
    overrides: list[str]
    config_name: str | None = None
    hydra_flags: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        name = ["--config-name", self.config_name] if self.config_name else []
        return [*self.hydra_flags, *name, *self.overrides]

    def render(self, script_path: str | None = None) -> str:
        return shlex.join(["python", script_path or self.script, *self.args()])


@dataclass
class Translation:
    source: str  # "old trainer" or "VARS baseline"
    commands: list[Command]
    notes: list[str]  # one line each, shown before the run

    @property
    def trains(self) -> bool:
        return len(self.commands) == 1 and self.commands[0].script == "train_hydra.py"


class Request(NamedTuple):
    translation: Translation
    write_config: str | None
    force: bool
    dry_run: bool


@dataclass(frozen=True)
class KeySpec:
    key: str  # dotted: training.learning_rate
    field: str  # its last part
    kind: str  # bool | int | float | str | any
    optional: bool  # null allowed
    is_list: bool
    default: Any  # REQUIRED when the schema has none
    doc: str
    type_text: str  # as the schema writes it: Optional[List[float]]


def _leaves(schema: Any, prefix: str) -> Iterator[KeySpec]:
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, hint = f"{prefix}.{f.name}", hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, key)
            continue
        if typing.get_origin(hint) is dict:
            continue  # experiment.trainer, .callbacks: Lightning's options; the old trainer had none
        type_text = hint.__name__ if isinstance(hint, type) else repr(hint).replace("typing.", "")
        optional = type(None) in typing.get_args(hint)
        if optional:
            (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        is_list = typing.get_origin(hint) is list
        hint = typing.get_args(hint)[0] if is_list else hint
        kind = "any" if hint is Any else hint.__name__
        if kind not in ("any", "bool", "int", "float", "str"):
            raise TypeError(f"{key}: schema type {hint!r} has no legacy flag type")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        default = REQUIRED if default == MISSING else default
        doc = f.metadata.get("doc", "")
        yield KeySpec(key, f.name, kind, optional, is_list, default, doc, type_text)


def _schema_keys() -> list[KeySpec]:
    """Every leaf key once, in schema order, with the keys only some dataset options have."""
    first: dict[str, KeySpec] = {}
    for group, schema in C.GROUP_SCHEMAS.items():
        extra = C.DATASET_SCHEMAS.values() if group == "dataset" else ()
        for part in (schema, *extra):
            for spec in _leaves(part, group):
                first.setdefault(spec.key, spec)
    return list(first.values())


KEYS: list[KeySpec] = _schema_keys()
_FIELDS = Counter(spec.field for spec in KEYS)
# key -> its flag (without dashes); argparse refuses to build the parser should two ever clash
DERIVED_FLAGS = {s.key: s.field if _FIELDS[s.field] == 1 else s.key.replace(".", "_") for s in KEYS}
# The old trainer's spellings that are not the derived flag of their key.
ALIASES = {"loss_function": "loss.function"}
FLAG_KEYS = {name: key for key, name in DERIVED_FLAGS.items()} | ALIASES
# The old trainer's flags -> the key each sets (a name that no longer derives fails at import).
OLD_TRAINER_FLAGS = {
    name: FLAG_KEYS[name]
    for name in """data_dir train_csv val_csv backbone batch_size learning_rate head_lr backbone_lr
    max_epochs optimizer scheduler weight_decay gradient_clip_val use_class_balanced_sampler
    oversample_factor progressive_class_balancing gradual_finetuning enable_backbone_lr_boost
    backbone_lr_ratio_after_half loss_function focal_gamma label_smoothing use_class_weights
    effective_num_beta gpus precision save_top_k monitor log_every_n_steps""".split()
}


def flag_names(key: str) -> list[str]:
    return [f"--{DERIVED_FLAGS[key]}", *(f"--{a}" for a, k in ALIASES.items() if k == key)]


def shown(value: Any) -> str:
    """A default as --help and MIGRATION.md show it."""
    return "required" if value == REQUIRED else _plain(value, ", ")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_names() -> list[str]:  # what --config-name finds
    return sorted({p.stem for d in (PRESETS_DIR, USER_CONFIGS_DIR) for p in Path(d).glob("*.yaml")})


def _value(text: str) -> Any:
    """A word as Hydra reads it: null, an int, a float, else the word itself."""
    for convert in (int, float):
        with contextlib.suppress(ValueError):
            return convert(text)
    return None if text.strip().lower() in NULLS else text


def converter(spec: KeySpec) -> Callable[[str], Any]:
    base = {"int": int, "float": float, "str": str}.get(spec.kind, _value)

    def convert(text: str) -> Any:
        return None if spec.optional and text.strip().lower() in NULLS else base(text)

    convert.__name__ = spec.kind  # argparse's errors name the type by this
    if base is _value:
        convert.__name__ = "value"
    elif spec.optional:
        convert.__name__ += " (or null)"
    return convert


HELP = {
    "--write-config": "write the translation to conf/user/NAME.yaml and stop; then `python train_hydra.py --config-name NAME`",
    "--force": "with --write-config: overwrite an existing conf/user/NAME.yaml",
    "--dry-run": "print the equivalent command(s) on stdout, run nothing",
    "--cfg": "print the composed config instead of running",
    "--resolve": "with --cfg: resolve interpolations",
    "--multirun": "a sweep: comma-separated values run one job each",
}


class LegacyParser(argparse.ArgumentParser):
    """argparse with one-line errors and the flags both dialects share."""

    def __init__(self, prog: str, description: str, usage: str, switch_help: str) -> None:
        # SUPPRESS: only the flags given land in the namespace, so only they become overrides.
        super().__init__(
            prog, usage, description, allow_abbrev=False, argument_default=argparse.SUPPRESS
        )
        self.add_argument(VARS_SWITCH, action="store_true", help=switch_help)
        do = self.add_argument_group(
            "what to do (default: print the equivalent command, then run it)"
        )
        do.add_argument("--write-config", metavar="NAME", help=HELP["--write-config"])
        do.add_argument("--force", action="store_true", help=HELP["--force"])
        do.add_argument("--dry-run", action="store_true", help=HELP["--dry-run"])
        hydra = self.add_argument_group("Hydra's own flags, passed on to the command")
        hydra.add_argument("--cfg", choices=("job", "hydra", "all"), help=HELP["--cfg"])
        hydra.add_argument("--resolve", action="store_true", help=HELP["--resolve"])
        hydra.add_argument("--multirun", "-m", action="store_true", help=HELP["--multirun"])

    def error(self, message: str) -> typing.NoReturn:
        raise LegacyFlagError(f"{message} (see `{self.prog} --help`, or MIGRATION.md)")

    def parse(self, argv: Sequence[str], hint: Callable[[str], str]) -> tuple[dict, list[str]]:
        """The flags given and the ``key=value`` words (passed on); any other word is an error."""
        ns, extras = self.parse_known_args(list(argv))
        for word in extras:
            if word.startswith("-") and word != "-" and isinstance(_value(word), str):
                known = [s for action in self._actions for s in action.option_strings]
                raise unknown_flag_error(word, known, self.prog, hint(word.split("=", 1)[0]))
            if "=" not in word and not word.startswith("~"):
                raise LegacyFlagError(
                    f"unexpected argument {word!r}: flags start with -- and Hydra overrides look like key=value "
                    f"(see `{self.prog} --help`)"
                )
            parse_override(word)  # a malformed override fails here, in one line
        return vars(ns), extras

    def request(self, translation: Translation, given: dict[str, Any]) -> Request:
        """The translation with Hydra's own flags, and what to do with it."""
        hydra_flags = ["--multirun"] if given.get("multirun") else []
        if given.get("cfg"):
            hydra_flags += ["--cfg", given["cfg"]]
        if given.get("resolve"):
            hydra_flags.append("--resolve")
        for command in translation.commands:
            command.hydra_flags = list(hydra_flags)
        return Request(
            translation,
            write_config=given.get("write_config"),
            force=bool(given.get("force")),
            dry_run=bool(given.get("dry_run")),
        )


def unknown_flag_error(word: str, known: list[str], prog: str, hint: str = "") -> LegacyFlagError:
    flag = word.split("=", 1)[0]
    close = difflib.get_close_matches(flag, known, n=3, cutoff=0.75)
    fix = f"did you mean {' or '.join(close)}?" if close else f"`{prog} --help` lists every flag"
    return LegacyFlagError(f"unknown flag {flag}; {fix}{hint} (MIGRATION.md maps the old flags)")


def build_parser() -> LegacyParser:
    parser = LegacyParser(
        PROG,
        "Deprecated: the old trainer's flags, translated to Hydra overrides and run as "
        "`python train_hydra.py ...` (printed first). Add key=value words for anything else. "
        f"For the official VARS baseline's flags, start with {VARS_SWITCH}. MIGRATION.md maps every flag.",
        "%(prog)s [--preset NAME] [--GROUP OPTION ...] [--FLAG VALUE ...] [key=value ...]",
        f"read the rest as the sn-mvfoul VARS baseline's flags (see {VARS_SWITCH} --help)",
    )
    choose = parser.add_argument_group(
        "a whole configuration and group options (instead of conf/config.yaml's)"
    )
    presets = f"a preset or your own config: {', '.join(config_names())}"
    choose.add_argument("--preset", "--config-name", dest="preset", metavar="NAME", help=presets)
    for group in GROUPS:
        options = group_options(group)
        text = f"{group}=OPTION: {', '.join(options)}"
        choose.add_argument(
            f"--{group}", dest=f"group:{group}", metavar="OPTION", choices=options, help=text
        )
    for group in GROUPS:
        section = parser.add_argument_group(f"{group} keys (conf/{group}/)")
        for spec in (s for s in KEYS if s.key.split(".")[0] == group):
            no = f"--no-{DERIVED_FLAGS[spec.key]} sets false; " if spec.kind == "bool" else ""
            text = f"{spec.key}: {spec.doc} ({spec.type_text}; {no}schema default {shown(spec.default)})"
            if spec.kind == "bool":
                kwargs: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
            else:
                kwargs = {"type": converter(spec), "nargs": "*" if spec.is_list else None}
                kwargs["metavar"] = "VALUE" if spec.kind == "any" else spec.kind.upper()
            names = flag_names(spec.key)
            section.add_argument(*names, dest=spec.key, help=text.replace("%", "%%"), **kwargs)
    return parser


def translate_legacy(argv: Sequence[str]) -> Request:
    """The old trainer's command line -> the equivalent ``train_hydra.py`` command."""
    from mvfoul.legacy.vars_baseline import FLAGS_BY_NAME

    def hint(flag: str) -> str:
        if flag in FLAGS_BY_NAME:
            return f"; {flag} is a flag of the VARS baseline: put {VARS_SWITCH} first"
        return ""

    parser = build_parser()
    given, passthrough = parser.parse(argv, hint)
    preset = given.get("preset")
    names = config_names()
    if preset is not None and preset not in names:
        close = difflib.get_close_matches(preset, names, n=2)
        fix = f"did you mean {' or '.join(close)}? " if close else ""
        raise LegacyFlagError(
            f"--preset {preset}: no such config; {fix}available: {', '.join(names)}"
        )
    for spec in (s for s in KEYS if s.is_list and s.key in given):
        # A key=value word after a list flag was read as one of its items (tags=[a, model=tiny]).
        for item in map(str, given[spec.key]):
            if "=" in item and item.split("=", 1)[0].lstrip("+~") in (*DERIVED_FLAGS, *GROUPS):
                raise LegacyFlagError(
                    f"--{DERIVED_FLAGS[spec.key]}: {item!r} looks like a Hydra override read as a list item; "
                    "put key=value words before list flags"
                )
    groups = {g: given[f"group:{g}"] for g in GROUPS if f"group:{g}" in given}
    notes = []
    if given.get("system.gpus") == 0 and "system" not in groups:
        # The old trainer's --gpus 0 (Lightning's gpus=0) trained on the CPU.
        groups["system"] = "cpu"
        notes.append("--gpus 0 meant CPU training: translated to system=cpu (with system.gpus=0)")
    keys = [make_override(s.key, given[s.key]) for s in KEYS if s.key in given]
    overrides = merge_overrides([f"{g}={o}" for g, o in groups.items()], keys, passthrough)
    command = Command("train_hydra.py", overrides, preset)
    return parser.request(Translation("old trainer", [command], notes), given)
