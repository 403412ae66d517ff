"""MIGRATION.md, generated from the very tables the translation uses, so it cannot go stale.

    python -m mvfoul.legacy --markdown > MIGRATION.md

tests/test_legacy.py checks that the committed file equals :func:`migration_markdown`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mvfoul import atomic
from mvfoul.help import GROUPS
from mvfoul.legacy.flags import (
    ALIASES,
    DERIVED_FLAGS,
    KEYS,
    OLD_TRAINER_FLAGS,
    PRESET_FLAGS,
    REQUIRED,
    VARS_SWITCH,
    KeySpec,
    group_options,
    translate_legacy,
    unknown_flag_error,
)
from mvfoul.legacy.overrides import Command
from mvfoul.legacy.vars_baseline import (
    BASELINE_FLAGS,
    DIFFERENCES,
    FIXED_SETTINGS,
    translate_vars_baseline,
)
from mvfoul.paths import PROJECT_ROOT

MIGRATION_MD = PROJECT_ROOT / "MIGRATION.md"

LEGACY_EXAMPLE = [
    "--data_dir",
    "/data/mvfouls",
    "--backbone",
    "r3d_18",
    "--max_epochs",
    "50",
    "--learning_rate",
    "3e-4",
    "--loss_function",
    "ce",
    "--use_class_weights",
    "--no-gradual_finetuning",
    "--unfreeze_schedule",
    "5",
    "10",
    "--gpus",
    "2",
]
# The old trainer's command the migration guide this project was specified from lists as "50+
# arguments just to run basic training": mvfoul's defaults are exactly these values, so it
# translates to nothing but the data paths.
SEED_COMMAND = [
    "--data_dir",
    "/path/to/data",
    "--train_csv",
    "train.csv",
    "--val_csv",
    "val.csv",
    "--backbone",
    "mvit_base_16x4",
    "--batch_size",
    "16",
    "--learning_rate",
    "1e-3",
    "--head_lr",
    "1e-3",
    "--backbone_lr",
    "1e-4",
    "--max_epochs",
    "50",
    "--optimizer",
    "adamw",
    "--scheduler",
    "cosine",
    "--weight_decay",
    "1e-4",
    "--gradient_clip_val",
    "1.0",
    "--use_class_balanced_sampler",
    "--oversample_factor",
    "2.0",
    "--progressive_class_balancing",
    "--gradual_finetuning",
    "--enable_backbone_lr_boost",
    "--backbone_lr_ratio_after_half",
    "0.6",
    "--loss_function",
    "focal",
    "--focal_gamma",
    "2.0",
    "--label_smoothing",
    "0.1",
    "--use_class_weights",
    "--effective_num_beta",
    "0.99",
    "--gpus",
    "1",
    "--precision",
    "16-mixed",
    "--save_top_k",
    "3",
    "--monitor",
    "val/sev_acc",
    "--log_every_n_steps",
    "50",
]
# The data paths of SEED_COMMAND: the only flags whose value is not a default.
SEED_DATA_FLAGS = ("--data_dir", "--train_csv", "--val_csv")
# The baseline's README: "if you use the code from the GitHub repository and run: ... you should
# get similar results" (VARS model/README.md, "Baseline hyperparameters").
VARS_EXAMPLE = [
    "--LR",
    "5e-5",
    "--step_size",
    "3",
    "--gamma",
    "0.3",
    "--pooling_type",
    "attention",
    "--start_frame",
    "63",
    "--end_frame",
    "87",
    "--fps",
    "17",
    "--path",
    "/data/mvfouls",
    "--pre_model",
    "mvit_v2_s",
]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _code(value: Any) -> str:
    return f"`{value}`"


def _default(value: Any) -> str:
    if value == REQUIRED:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, list):
        return _code("[" + ", ".join(str(v) for v in value) + "]")
    return _code(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _flag_syntax(spec: KeySpec, name: str) -> str:
    if spec.kind == "bool":
        return f"`--{name}` / `--no-{name}`"
    if spec.is_list:
        return f"`--{name} V1 V2 ...`"
    return f"`--{name} VALUE`"


def _render(argv: Sequence[str], commands: Sequence[Command]) -> list[str]:
    lines = ["```bash", "python training/train.py " + " ".join(argv), "# runs:"]
    lines += [c.render() for c in commands]
    return lines + ["```"]


def _phases() -> list[str]:
    return [
        "## The phases",
        "",
        "1. **Side by side (now).** `training/train.py` still works: it accepts the old trainer's flags (and, "
        f"after `{VARS_SWITCH}`, the official VARS baseline's), prints a one-paragraph deprecation notice "
        "with the equivalent `python train_hydra.py ...` command, and runs exactly that command. "
        "`train_hydra.py` is the recommended entry point; start anything new there.",
        "2. **The bridge goes.** `training/train.py` stops running training. It still translates: "
        "`--dry-run` prints the equivalent command and `--write-config NAME` keeps it as a config. "
        "Convert your scripts before this phase.",
        "3. **The old script is deprecated for good** and then removed. This file stays as the record of "
        "what every old flag became.",
        "",
    ]


def _converting() -> list[str]:
    example = translate_legacy(LEGACY_EXAMPLE).translation
    return [
        "## Converting a command line",
        "",
        "```bash",
        "# keep running an old command line: prints the equivalent command (stderr), then runs it",
        "python training/train.py --data_dir /data/mvfouls --backbone r3d_18 --max_epochs 50",
        "# print the equivalent command only (stdout), run nothing",
        "python training/train.py --dry-run --data_dir /data/mvfouls --backbone r3d_18 --max_epochs 50",
        "# convert it for good: writes conf/user/r3d_run.yaml (refuses to overwrite unless --force) ...",
        "python training/train.py --write-config r3d_run --data_dir /data/mvfouls --backbone r3d_18 --max_epochs 50",
        "# ... which runs, and takes overrides, like a preset",
        "python train_hydra.py --config-name r3d_run training.learning_rate=5e-4",
        "```",
        "",
        "A longer example, and the command it becomes:",
        "",
        *_render(LEGACY_EXAMPLE, example.commands),
        "",
        "`--write-config NAME` writes `conf/user/NAME.yaml`: the folder for your own configs, which "
        "`--config-name` searches after `conf/presets/` (a Hydra SearchPathPlugin in "
        "`src/hydra_plugins/`), and which `python train_hydra.py --help` lists. The file starts with "
        "`# @package _global_` and a description line, then `defaults: [/config (or the preset you named), "
        "override /group: option..., _self_]`, then only the values the command line set: keys it did not "
        "set keep following `conf/`, exactly as on the command line. A name that a preset or `conf/` "
        "already uses is refused (`--config-name` would find that one first).",
        "",
    ]


def _what_changed() -> list[str]:
    from mvfoul.models.backbones import BACKBONES

    seed = translate_legacy(SEED_COMMAND).translation.commands[0]
    keys = [
        o
        for o in seed.overrides
        if not o.startswith(("dataset.data_dir=", "dataset.train_csv=", "dataset.val_csv="))
    ]
    rows = [
        (
            f"`{name}`",
            f"`{spec.torchvision_name or '-'}`",
            ", ".join(f"{v:g}" for v in spec.mean),
            ", ".join(f"{v:g}" for v in spec.std),
        )
        for name, spec in BACKBONES.items()
    ]
    return [
        "## What changed",
        "",
        "**The defaults are the old trainer's.** `python train_hydra.py dataset.data_dir=...` trains exactly "
        "what the old trainer's basic command line did; every value that command sets is the default, so it "
        "translates to the data paths alone:",
        "",
        "```bash",
        "python training/train.py " + " ".join(SEED_COMMAND),
        "# runs:",
        seed.render(),
        "```",
        "",
        f"The {len(keys)} keys it sets, all at their defaults: "
        + ", ".join(f"`{k}`" for k in keys)
        + ". "
        "Earlier versions of mvfoul defaulted to a batch size of 4, one learning rate of 1e-4, 30 epochs, "
        "weight decay 0.01, no label smoothing and no class weights; a command or kept config that relied on "
        "those now gets the values above (set them explicitly to keep the old ones). On these defaults "
        "class-balanced oversampling and class weights are both on, so label smoothing (0.1) switches itself "
        "off, with one log line.",
        "",
        "**Each backbone gets its own input statistics.** Clips used to be normalised with the ResNet-3D "
        "Kinetics statistics for every backbone. They are now normalised with the statistics of the "
        "backbone's own torchvision weights (`transforms()` of its weights entry), as the VARS baseline does; "
        "`dataset.mean`/`dataset.std` override them, and every run records the values it used in its "
        "checkpoint, so evaluation feeds the same input. A checkpoint from before this change records "
        "nothing and is evaluated with the ResNet-3D statistics it was trained with.",
        "",
        *_table(["backbone", "torchvision weights of", "mean (R, G, B)", "std (R, G, B)"], rows),
        "",
    ]


def _naming() -> list[str]:
    return [
        "## How the flags are made",
        "",
        "Every key of every config group (the dataclasses of `src/mvfoul/config.py`, including the built-in "
        "dataset's `dataset.synthetic.*`) has exactly one flag, derived from the schema when the script "
        "starts, so a new key gets its flag without anyone writing it:",
        "",
        "- **the bare field name** when no other key has a field of that name: `--batch_size` -> "
        "`dataset.batch_size`, `--learning_rate` -> `training.learning_rate`;",
        "- **the whole key with dots as underscores** when the field name is shared: `--dataset_name` / "
        "`--experiment_name`, `--system_seed` / `--dataset_synthetic_seed`;",
        "- the old trainer's spellings that differ are aliases of the same flag: `--loss_function` = "
        "`--function` -> `loss.function`.",
        "",
        "Values are typed by the schema and checked when the command line is read:",
        "",
        "- booleans: `--flag` sets true, `--no-flag` sets false (`--use_class_weights`, "
        "`--no-use_class_weights`);",
        "- lists: space-separated values, `--unfreeze_schedule 5 10 15`; the flag alone is the empty list "
        "(`--tags`). Put `key=value` words before a list flag (one after it is refused as a list item);",
        "- `null` (or `none`) sets an optional key to null: `--gradient_clip_val null` (the optional "
        "boolean `dataset.pin_memory` goes back to null with the word `dataset.pin_memory=null`);",
        "- untyped keys (`loss.focal_alpha`, `experiment.limit_*_batches`) read `null`, an integer, a float or "
        "a word, as Hydra would: `--limit_train_batches 10` is ten batches, `0.25` a quarter;",
        "- anything of the form `key=value` is passed to Hydra as it is (`model.shared_dim=256`, "
        "`model=tiny`); it wins over a flag for the same key;",
        "- `--preset NAME` (or `--config-name NAME`) starts from a preset or your own config; "
        "`--dataset synthetic`, `--model resnet3d`, ... choose group options;",
        "- Hydra's own `--cfg job|hydra|all`, `--resolve` and `--multirun` are passed on;",
        '- `--gpus 0` (Lightning\'s old "no GPU") also selects `system=cpu`.',
        "",
        "Only the flags you give become overrides; everything else is what `conf/` (or the preset) says. "
        "An unknown flag stops the script in one line naming it and its closest matches; a bad value names "
        "the flag and the type it expects.",
        "",
    ]


def _old_trainer_table() -> list[str]:
    specs = {s.key: s for s in KEYS}
    rows = [
        (
            _flag_syntax(specs[key], flag),
            _code(key),
            specs[key].type_text,
            _default(specs[key].default),
        )
        for flag, key in OLD_TRAINER_FLAGS.items()
    ]
    return [
        "## The old trainer's flags",
        "",
        *_table(("old flag", "mvfoul key", "type", "schema default"), rows),
        "",
    ]


def _all_keys_table() -> list[str]:
    rows = []
    for spec in KEYS:
        names = [DERIVED_FLAGS[spec.key], *ALIASES.get(spec.key, [])]
        flags = ", ".join(_flag_syntax(spec, n) for n in names)
        old = "yes" if any(n in OLD_TRAINER_FLAGS for n in names) else ""
        rows.append((flags, _code(spec.key), spec.type_text, _default(spec.default), old, spec.doc))
    return [
        "## Every flag",
        "",
        "One per key, in schema order (the schema default is the dataclass's; a group option or preset may "
        "set another value, and wins when the flag is not given).",
        "",
        *_table(("flag", "key", "type", "schema default", "old trainer", "meaning"), rows),
        "",
    ]


def _group_table() -> list[str]:
    rows = [
        (
            " / ".join(f"`{f} NAME`" for f in PRESET_FLAGS),
            "`--config-name NAME`",
            "a preset (`conf/presets/`) or your own config (`conf/user/`)",
        )
    ]
    for group in GROUPS:
        rows.append((f"`--{group} OPTION`", f"`{group}=OPTION`", ", ".join(group_options(group))))
    return ["## Presets and group options", "", *_table(("flag", "Hydra", "choices"), rows), ""]


def _vars_section() -> list[str]:
    example = translate_vars_baseline([VARS_SWITCH, *VARS_EXAMPLE]).translation
    rows = []
    for b in BASELINE_FLAGS:
        if b.flag == "--path":
            default = "required"
        elif b.early:
            default = "(earlier revision)"
        else:
            default = _code(b.default if b.default != "" else '""')
        target = ", ".join(_code(k if "." in k else f"{k}=OPTION") for k in b.keys())
        target = target or (_code(b.target) if b.target else b.status)
        rows.append((_code(b.flag), default, target, b.note))
    fixed = [(_code(f"{k}={'null' if v is None else v}"), why) for k, v, why in FIXED_SETTINGS]
    return [
        "## The official VARS baseline (SoccerNet sn-mvfoul)",
        "",
        f"Put `{VARS_SWITCH}` in front of the baseline's flags: `python main.py --path ...` becomes "
        f"`python training/train.py {VARS_SWITCH} --path ...`. It is a switch of the same script rather "
        "than a second script so that both dialects share the notice, `--dry-run`, `--write-config` and "
        "this table, and because the baseline's command line means a different thing: **a flag you leave "
        "out takes the baseline's default, not mvfoul's**, so a bare `--path` reproduces the baseline's "
        "run. Other mvfoul keys can be added as `key=value` words.",
        "",
        "The flags, defaults and semantics were checked against the baseline's `VARS model/main.py`, "
        "`dataset.py` and `train.py` (the release with `--only_evaluation`); flags marked *earlier "
        "revision* existed only in an older `main.py`. `ignored` flags print a note and the run goes on; "
        "`unsupported` ones stop with a one-line error saying why.",
        "",
        *_table(("baseline flag", "baseline default", "mvfoul", "notes"), rows),
        "",
        "Whatever the flags, a baseline translation also sets what the baseline always did:",
        "",
        *_table(("setting", "why"), fixed),
        "",
        "**Evaluation** (`--only_evaluation 0|1|2`, checked in the baseline's argparse help: 0 = test set, "
        "1 = challenge set, 2 = both, 3 = train) becomes `python evaluate_hydra.py ckpt_path=... split=test` "
        "(`split=chall`, or one command per split for 2). The checkpoint must be an mvfoul `.ckpt`: a "
        "baseline `.pth.tar` is the baseline's own network under its own parameter names and cannot be "
        "evaluated or fine-tuned by mvfoul; the script says so instead of pretending.",
        "",
        "What else differs from the baseline:",
        "",
        *(f"- {d}" for d in DIFFERENCES),
        "",
        "Example: the baseline's README gives this command for its published hyperparameters:",
        "",
        *_render([VARS_SWITCH, *VARS_EXAMPLE], example.commands),
        "",
    ]


def _troubleshooting() -> list[str]:
    unknown = unknown_flag_error(
        "--learnin_rate", [f"--{n}" for n in DERIVED_FLAGS.values()], "python training/train.py"
    )
    return [
        "## Troubleshooting",
        "",
        "- **`dataset.data_dir: missing`**: the real dataset needs its folder: add `--data_dir "
        "/path/to/mvfouls` (old trainer), `--path ...` (VARS baseline) or `dataset.data_dir=...`; or try "
        "the built-in dataset with `--preset quick_test`.",
        "- **Listing every config**: `python train_hydra.py --help` lists the presets and your own configs "
        "(`conf/presets/`, `conf/user/`), every group and its options with the default marked. "
        "`python training/train.py --help` lists every legacy flag.",
        "- **Printing the resolved config**: `python train_hydra.py --config-name NAME --cfg job` prints the "
        "composed config and runs nothing (add `--resolve` to resolve interpolations). An old command line "
        "takes the same flag: `python training/train.py <old flags> --cfg job`.",
        f"- **Unknown flags**: `mvfoul: error: {unknown}`. A flag of the VARS baseline given without "
        f"`{VARS_SWITCH}` says so.",
        "- **Unknown keys** (in a `key=value` word or a config): `mvfoul: error: training.learnin_rate: "
        "unknown key in 'training'; did you mean training.learning_rate?`.",
        "- **`dataset.synthetic.*` flags** (`--num_train`, `--resolution`...) exist only with the built-in "
        "dataset: add `--dataset synthetic` or `--preset quick_test`.",
        "- **`--write-config NAME` refuses**: the file exists (add `--force`), or a preset has the name.",
        "- **A baseline checkpoint** (`.pth.tar`) cannot be loaded: train with mvfoul and evaluate its "
        "`checkpoints/*.ckpt`.",
        "",
    ]


def migration_markdown() -> str:
    lines = [
        "# Migrating from the old trainer or the VARS baseline",
        "",
        "<!-- Generated by `python -m mvfoul.legacy --markdown > MIGRATION.md` from the tables in "
        "src/mvfoul/legacy/; tests/test_legacy.py checks that this file is current. Edit the code, not this file. -->",
        "",
        "`train_hydra.py` is mvfoul's entry point: Hydra configs under `conf/`, overridden with `key=value`. "
        "Command lines written for the old argparse trainer, or for the official VARS baseline, keep working "
        "through `training/train.py`, which translates them into exactly that form.",
        "",
        *_phases(),
        *_what_changed(),
        *_converting(),
        *_naming(),
        *_old_trainer_table(),
        *_group_table(),
        *_all_keys_table(),
        *_vars_section(),
        *_troubleshooting(),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_migration_md(path: Path = MIGRATION_MD) -> Path:
    atomic.write_text(Path(path), migration_markdown())
    return Path(path)
