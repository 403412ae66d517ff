"""The old trainer's command line, derived from the schema so that the two cannot drift apart.

Every key of every config group (``mvfoul.config.GROUP_SCHEMAS``, plus the built-in dataset's
``dataset.synthetic.*``) has exactly one flag:

* the bare field name when no other key has a field of that name: ``--batch_size`` ->
  ``dataset.batch_size``, ``--learning_rate`` -> ``training.learning_rate``;
* otherwise the whole key with dots written as underscores: ``--dataset_name``,
  ``--experiment_name``, ``--system_seed``, ``--dataset_synthetic_seed``.

The old trainer's own spellings that differ (``--loss_function`` -> ``loss.function``) are
aliases of those flags. Types come from the schema: ``--flag`` / ``--no-flag`` for booleans,
space-separated values for lists (``--unfreeze_schedule 5 10 15``; ``--tags`` alone = empty),
``null`` for an optional value. ``--preset NAME`` picks a whole configuration
(``--config-name``) and ``--dataset synthetic``, ``--model resnet3d``... pick group options.
Only the flags given become overrides: everything else keeps the composed config's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from mvfoul import config as C
from mvfoul.errors import MvfoulError
from mvfoul.help import GROUPS
from mvfoul.legacy.overrides import (
    Command,
    Translation,
    make_override,
    merge_overrides,
    parse_override,
)
from mvfoul.paths import CONF_DIR, PRESETS_DIR, USER_CONFIGS_DIR

PROG = "python training/train.py"
VARS_SWITCH = "--from-vars-baseline"
REQUIRED = "(required)"


class LegacyFlagError(MvfoulError):
    """A command line the legacy front cannot translate (unknown flag, bad value...)."""

    exit_code = 2


# --- the schema's keys --------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One leaf key of the schema, with what its flag needs to know."""

    key: str  # dotted: training.learning_rate
    kind: str  # bool | int | float | str | any
    optional: bool  # null allowed
    is_list: bool
    default: Any  # the schema's default (REQUIRED when it has none)
    doc: str = ""  # the schema's one-line doc

    @property
    def group(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.key.rsplit(".", 1)[1]

    @property
    def type_text(self) -> str:
        base = "Any" if self.kind == "any" else self.kind
        if self.is_list:
            base = f"List[{base}]"
        return f"Optional[{base}]" if self.optional else base


def _analyse(key: str, hint: Any) -> tuple[str, bool, bool]:
    optional = False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        optional = True
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    is_list = origin in (list, list)
    if is_list:
        hint = args[0]
    if hint is Any:
        return "any", optional, is_list
    if hint in (bool, int, float, str):
        return hint.__name__, optional, is_list
    raise TypeError(
        f"{key}: schema type {hint!r} has no legacy flag type; extend mvfoul.legacy.flags._analyse"
    )


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return REQUIRED if f.default == MISSING else f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def _leaves(schema: type, prefix: str) -> list[KeySpec]:
    hints = typing.get_type_hints(schema)
    specs: list[KeySpec] = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}.{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            specs.extend(_leaves(typing.cast(type, hint), key))
            continue
        if typing.get_origin(hint) is dict:
            continue  # experiment.trainer, experiment.callbacks: mappings, no flag (the old trainer had none)
        kind, optional, is_list = _analyse(key, hint)
        specs.append(KeySpec(key, kind, optional, is_list, _default(f), f.metadata.get("doc", "")))
    return specs


def schema_keys() -> list[KeySpec]:
    """Every leaf key of every group, in schema order; ``dataset`` also has the keys only some
    dataset options have (``dataset.synthetic.*`` of the built-in dataset)."""
    keys: dict[str, KeySpec] = {}
    for group, schema in C.GROUP_SCHEMAS.items():
        schemas = [schema]
        if group == "dataset":
            schemas += [s for s in C.DATASET_SCHEMAS.values() if s is not schema]
        for s in schemas:
            for spec in _leaves(s, group):
                keys.setdefault(spec.key, spec)
    return list(keys.values())


KEYS: list[KeySpec] = schema_keys()
KEY_SPECS: dict[str, KeySpec] = {spec.key: spec for spec in KEYS}


def _derived_names(specs: Sequence[KeySpec]) -> dict[str, str]:
    counts = Counter(spec.field for spec in specs)
    names = {
        spec.key: spec.field if counts[spec.field] == 1 else spec.key.replace(".", "_")
        for spec in specs
    }
    clashes = [n for n, c in Counter(names.values()).items() if c > 1]
    if clashes:
        raise RuntimeError(f"legacy flag names clash: {clashes}")
    return names


# key -> its derived flag name (without the dashes)
DERIVED_FLAGS: dict[str, str] = _derived_names(KEYS)

# The old trainer's flags, as its users typed them -> the key each sets. Most are the derived
# name itself; the others become aliases of the derived flag.
OLD_TRAINER_FLAGS: dict[str, str] = {
    "data_dir": "dataset.data_dir",
    "train_csv": "dataset.train_csv",
    "val_csv": "dataset.val_csv",
    "backbone": "model.backbone",
    "batch_size": "dataset.batch_size",
    "learning_rate": "training.learning_rate",
    "head_lr": "training.head_lr",
    "backbone_lr": "training.backbone_lr",
    "max_epochs": "training.max_epochs",
    "optimizer": "training.optimizer",
    "scheduler": "training.scheduler",
    "weight_decay": "training.weight_decay",
    "gradient_clip_val": "training.gradient_clip_val",
    "use_class_balanced_sampler": "sampling.use_class_balanced_sampler",
    "oversample_factor": "sampling.oversample_factor",
    "progressive_class_balancing": "sampling.progressive_class_balancing",
    "gradual_finetuning": "freezing.gradual_finetuning",
    "enable_backbone_lr_boost": "freezing.enable_backbone_lr_boost",
    "backbone_lr_ratio_after_half": "freezing.backbone_lr_ratio_after_half",
    "loss_function": "loss.function",
    "focal_gamma": "loss.focal_gamma",
    "label_smoothing": "loss.label_smoothing",
    "use_class_weights": "loss.use_class_weights",
    "effective_num_beta": "loss.effective_num_beta",
    "gpus": "system.gpus",
    "precision": "system.precision",
    "save_top_k": "experiment.save_top_k",
    "monitor": "experiment.monitor",
    "log_every_n_steps": "experiment.log_every_n_steps",
}

# key -> the old spellings that differ from its derived flag
ALIASES: dict[str, list[str]] = {}
for _flag, _key in OLD_TRAINER_FLAGS.items():
    if _key not in KEY_SPECS:
        raise RuntimeError(f"old trainer flag --{_flag}: {_key} is not a schema key")
    if DERIVED_FLAGS[_key] != _flag:
        ALIASES.setdefault(_key, []).append(_flag)


def flag_names(key: str) -> list[str]:
    """Every flag (with dashes) that sets ``key``: the derived one first, then aliases."""
    return [f"--{DERIVED_FLAGS[key]}", *(f"--{a}" for a in ALIASES.get(key, []))]


# --- presets and group options ------------------------------------------------------------

PRESET_FLAGS = ("--preset", "--config-name")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_names() -> list[str]:
    """What ``--config-name`` finds: the presets and the user's own configs."""
    names = {
        p.stem for folder in (PRESETS_DIR, USER_CONFIGS_DIR) for p in Path(folder).glob("*.yaml")
    }
    return sorted(names)


# --- value types --------------------------------------------------------------------------


def _named(fn: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    fn.__name__ = name  # argparse names the converter in its error: "invalid int value"
    return fn


def _is_null(text: str) -> bool:
    return text.strip().lower() in ("null", "none", "~")


def _any_value(text: str) -> Any:
    if _is_null(text):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def converter(spec: KeySpec) -> Callable[[str], Any]:
    bases: dict[str, Callable[[str], Any]] = {
        "int": int,
        "float": float,
        "str": str,
        "any": _any_value,
    }
    base = bases[spec.kind]
    if spec.kind == "any" or not spec.optional:
        return _named(lambda text: base(text), spec.kind if spec.kind != "any" else "value")
    return _named(lambda text: None if _is_null(text) else base(text), f"{spec.kind} (or null)")


# --- the parser ---------------------------------------------------------------------------


class LegacyParser(argparse.ArgumentParser):
    """argparse, but an error is a :class:`LegacyFlagError` (one line via mvfoul.cli)."""

    def error(self, message: str) -> typing.NoReturn:
        raise LegacyFlagError(f"{message} (see `{self.prog} --help`, or MIGRATION.md)")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """What the legacy front does with the translation (both command-line dialects)."""
    do = parser.add_argument_group(
        "what to do (default: print the equivalent command, then run it)"
    )
    do.add_argument(
        "--write-config",
        metavar="NAME",
        dest="write_config",
        help="write the translation to conf/user/NAME.yaml and stop; then `python train_hydra.py --config-name NAME`",
    )
    do.add_argument(
        "--force",
        action="store_true",
        help="with --write-config: overwrite an existing conf/user/NAME.yaml",
    )
    do.add_argument(
        "--dry-run",
        action="store_true",
        dest="dry_run",
        help="print the equivalent command(s) on stdout, run nothing",
    )
    hydra = parser.add_argument_group("Hydra's own flags, passed on to the command")
    hydra.add_argument(
        "--cfg",
        choices=("job", "hydra", "all"),
        help="print the composed config instead of running",
    )
    hydra.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    hydra.add_argument(
        "--multirun",
        "-m",
        action="store_true",
        help="a sweep: comma-separated values run one job each",
    )


def hydra_flags(ns: argparse.Namespace) -> list[str]:
    flags: list[str] = []
    if getattr(ns, "multirun", False):
        flags.append("--multirun")
    if getattr(ns, "cfg", None):
        flags += ["--cfg", ns.cfg]
    if getattr(ns, "resolve", False):
        flags.append("--resolve")
    return flags


def _help_for(spec: KeySpec) -> str:
    default = spec.default
    if default == REQUIRED:
        shown = "required"
    elif default is None:
        shown = "null"
    elif isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = str(default)
    if spec.kind == "bool":
        text = f"{spec.key}: {spec.doc} ({spec.type_text}; --no-{DERIVED_FLAGS[spec.key]} sets false; schema default {shown})"
    else:
        text = f"{spec.key}: {spec.doc} ({spec.type_text}; schema default {shown})"
    return text.replace("%", "%%")


def build_parser() -> LegacyParser:
    parser = LegacyParser(
        prog=PROG,
        description=(
            "Deprecated: the old trainer's flags, translated to Hydra overrides and run as "
            "`python train_hydra.py ...` (printed first). Add key=value words for anything else. "
            f"For the official VARS baseline's flags, start with {VARS_SWITCH}. MIGRATION.md maps every flag."
        ),
        usage="%(prog)s [--preset NAME] [--GROUP OPTION ...] [--FLAG VALUE ...] [key=value ...]",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        VARS_SWITCH,
        action="store_true",
        help="read the rest as the sn-mvfoul VARS baseline's flags (see --from-vars-baseline --help)",
    )
    add_common_options(parser)
    choose = parser.add_argument_group(
        "a whole configuration and group options (instead of conf/config.yaml's)"
    )
    choose.add_argument(
        *PRESET_FLAGS,
        dest="preset",
        metavar="NAME",
        help=f"a preset or your own config: {', '.join(config_names())}",
    )
    for group in GROUPS:
        choose.add_argument(
            f"--{group}",
            dest=f"group:{group}",
            metavar="OPTION",
            choices=group_options(group),
            help=f"{group}=OPTION: {', '.join(group_options(group))}",
        )
    for group in GROUPS:
        section = parser.add_argument_group(f"{group} keys (conf/{group}/)")
        for spec in (s for s in KEYS if s.group == group):
            names = flag_names(spec.key)
            if spec.kind == "bool":
                section.add_argument(
                    *names,
                    dest=spec.key,
                    action=argparse.BooleanOptionalAction,
                    help=_help_for(spec),
                )
            else:
                section.add_argument(
                    *names,
                    dest=spec.key,
                    type=converter(spec),
                    nargs="*" if spec.is_list else None,
                    metavar=spec.kind.upper() if spec.kind != "any" else "VALUE",
                    help=_help_for(spec),
                )
    return parser


# --- unknown words ------------------------------------------------------------------------


def _looks_like_flag(word: str) -> bool:
    if not word.startswith("-") or word == "-":
        return False
    try:
        float(word)
        return False
    except ValueError:
        return True


def unknown_flag_error(
    word: str, known: Sequence[str], prog: str, hint: str = ""
) -> LegacyFlagError:
    flag = word.split("=", 1)[0]
    close = difflib.get_close_matches(flag, list(known), n=3, cutoff=0.75)
    if close:
        suggestion = "did you mean " + " or ".join(close) + "?"
    else:
        suggestion = f"`{prog} --help` lists every flag"
    return LegacyFlagError(
        f"unknown flag {flag}; {suggestion}{hint} (MIGRATION.md maps the old flags)"
    )


def split_extras(
    extras: Sequence[str],
    parser: argparse.ArgumentParser,
    hint: Callable[[str], str] = lambda f: "",
) -> list[str]:
    """The words argparse did not take: ``key=value`` words are Hydra overrides, passed on as
    they are; anything else is an error naming it (an unknown flag with its close matches)."""
    overrides: list[str] = []
    for word in extras:
        if _looks_like_flag(word):
            known = [s for action in parser._actions for s in action.option_strings]  # noqa: SLF001
            raise unknown_flag_error(word, known, parser.prog, hint(word.split("=", 1)[0]))
        if "=" not in word and not word.startswith("~"):
            raise LegacyFlagError(
                f"unexpected argument {word!r}: flags start with -- and Hydra overrides look like key=value "
                f"(see `{parser.prog} --help`)"
            )
        parse_override(word)  # a malformed override fails here, in one line
        overrides.append(word)
    return overrides


def _vars_hint(flag: str) -> str:
    from mvfoul.legacy.vars_baseline import BASELINE_FLAGS

    if flag in {b.flag for b in BASELINE_FLAGS}:
        return f"; {flag} is a flag of the VARS baseline: put {VARS_SWITCH} first"
    return ""


# --- translation --------------------------------------------------------------------------


@dataclass
class Request:
    """A parsed legacy command line: the translation and what to do with it."""

    translation: Translation
    write_config: str | None = None
    force: bool = False
    dry_run: bool = False


def check_config_name(name: str) -> None:
    names = config_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise LegacyFlagError(
            f"--preset {name}: no such config; {hint}available: {', '.join(names)}"
        )


def _check_list(spec: KeySpec, items: Sequence[Any]) -> None:
    """A ``key=value`` word after a list flag is read as one of its items: say so, rather than
    setting ``experiment.tags`` to ``[..., 'model=tiny']``."""
    for item in items:
        left = str(item).split("=", 1)[0].lstrip("+~")
        if "=" in str(item) and (left in KEY_SPECS or left in GROUPS):
            raise LegacyFlagError(
                f"--{DERIVED_FLAGS[spec.key]}: {item!r} looks like a Hydra override read as a list item; "
                "put key=value words before list flags"
            )


def translate_legacy(argv: Sequence[str]) -> Request:
    """The old trainer's command line -> the equivalent ``train_hydra.py`` command."""
    parser = build_parser()
    ns, extras = parser.parse_known_args(list(argv))
    passthrough = split_extras(extras, parser, _vars_hint)
    values = vars(ns)
    notes: list[str] = []

    config_name = values.get("preset")
    if config_name is not None:
        check_config_name(config_name)
    groups = {g: values[f"group:{g}"] for g in GROUPS if f"group:{g}" in values}
    for spec in KEYS:
        if spec.is_list and spec.key in values:
            _check_list(spec, values[spec.key])
    keys = [make_override(spec.key, values[spec.key]) for spec in KEYS if spec.key in values]
    if values.get("system.gpus") == 0 and "system" not in groups:
        # The old trainer's --gpus 0 (Lightning's gpus=0) trained on the CPU.
        groups["system"] = "cpu"
        notes.append("--gpus 0 meant CPU training: translated to system=cpu (with system.gpus=0)")
    group_words = [f"{g}={o}" for g, o in groups.items()]
    command = Command(
        "train_hydra.py",
        overrides=merge_overrides(group_words, keys, passthrough),
        config_name=config_name,
        hydra_flags=hydra_flags(ns),
    )
    return Request(
        Translation("old trainer", [command], notes),
        write_config=values.get("write_config"),
        force=bool(values.get("force", False)),
        dry_run=bool(values.get("dry_run", False)),
    )
