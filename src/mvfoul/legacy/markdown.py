"""MIGRATION.md (``python -m mvfoul.legacy --markdown > MIGRATION.md``): MIGRATION.template.md's
prose, with every table, example and count generated from the flag tables and the schema."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mvfoul.help import GROUPS
from mvfoul.legacy import flags
from mvfoul.legacy.cli import translate
from mvfoul.legacy.flags import KEYS, OLD_TRAINER_FLAGS, REQUIRED, KeySpec, flag_names, shown
from mvfoul.legacy.vars_baseline import BASELINE_FLAGS, EARLY, FIXED_SETTINGS, BaselineFlag

LEGACY_EXAMPLE = (
    "--data_dir /data/mvfouls --backbone r3d_18 --max_epochs 50 --learning_rate 3e-4 "
    "--loss_function ce --use_class_weights --no-gradual_finetuning --unfreeze_schedule 5 10 --gpus 2"
).split()
# The old trainer's basic command line: mvfoul's defaults are these values, so only paths remain.
SEED_COMMAND = """--data_dir /path/to/data --train_csv train.csv --val_csv val.csv
    --backbone mvit_base_16x4 --batch_size 16 --learning_rate 1e-3 --head_lr 1e-3 --backbone_lr 1e-4
    --max_epochs 50 --optimizer adamw --scheduler cosine --weight_decay 1e-4 --gradient_clip_val 1.0
    --use_class_balanced_sampler --oversample_factor 2.0 --progressive_class_balancing
    --gradual_finetuning --enable_backbone_lr_boost --backbone_lr_ratio_after_half 0.6
    --loss_function focal --focal_gamma 2.0 --label_smoothing 0.1 --use_class_weights
    --effective_num_beta 0.99 --gpus 1 --precision 16-mixed --save_top_k 3 --monitor val/sev_acc
    --log_every_n_steps 50""".split()
# The command of the baseline's README (VARS model/README.md, "Baseline hyperparameters").
VARS_EXAMPLE = """--from-vars-baseline --LR 5e-5 --step_size 3 --gamma 0.3 --pooling_type attention
    --start_frame 63 --end_frame 87 --fps 17 --path /data/mvfouls --pre_model mvit_v2_s""".split()


def _rows(rows: Iterable[Sequence[Any]]) -> str:
    cells = ([str(cell).replace("|", "\\|") for cell in row] for row in rows)
    return "\n".join("| " + " | ".join(row) + " |" for row in cells)


def _example(argv: list[str]) -> str:
    commands = [c.render() for c in translate(argv).translation.commands]
    return "\n".join(
        ["```bash", f"python training/train.py {' '.join(argv)}", "# runs:", *commands, "```"]
    )


def _key_row(spec: KeySpec, names: list[str]) -> list[str]:
    if spec.kind == "bool":
        usage = ", ".join(f"`{n}` / `--no-{n[2:]}`" for n in names)
    else:
        usage = ", ".join(f"`{n} V1 V2 ...`" if spec.is_list else f"`{n} VALUE`" for n in names)
    default = "required" if spec.default == REQUIRED else f"`{shown(spec.default)}`"
    return [usage, f"`{spec.key}`", spec.type_text, default]


def _baseline_row(b: BaselineFlag) -> list[str]:
    default = {REQUIRED: "required", EARLY: EARLY, "": '`""`'}.get(b.default, f"`{b.default}`")
    if b.status == "mapped":  # a key, or a group's option
        sets = ", ".join(f"`{k}`" if "." in k else f"`{k}=OPTION`" for k in b.sets.split())
    elif b.status == "evaluation":
        sets = f"`{b.sets}`"
    else:
        sets = b.status
    return [f"`{b.flag}`", default, sets, b.note]


def _all_keys_row(spec: KeySpec) -> list[str]:
    names = flag_names(spec.key)
    old_trainer = any(name[2:] in OLD_TRAINER_FLAGS for name in names)  # the column says "yes"
    return [*_key_row(spec, names), "yes" if old_trainer else "", spec.doc]


def _numbers(values: Iterable[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def migration_markdown() -> str:
    from mvfoul.models.backbones import BACKBONES

    (seed,) = translate(SEED_COMMAND).translation.commands
    paths = ("dataset.data_dir=", "dataset.train_csv=", "dataset.val_csv=")
    seed_keys = [o for o in seed.overrides if not o.startswith(paths)]
    specs = {s.key: s for s in KEYS}
    known = [f"--{n}" for n in flags.DERIVED_FLAGS.values()]
    template = Path(__file__).with_name("MIGRATION.template.md").read_text(encoding="utf-8")
    _, prose = template.split("\n", 1)  # the first line is a comment for its editors
    return prose.format(
        seed=_example(SEED_COMMAND),
        seed_count=len(seed_keys),
        seed_keys=", ".join(f"`{k}`" for k in seed_keys),
        backbones=_rows(
            (f"`{n}`", f"`{b.torchvision_name or '-'}`", _numbers(b.mean), _numbers(b.std))
            for n, b in BACKBONES.items()
        ),
        example=_example(LEGACY_EXAMPLE),
        old_trainer_table=_rows(
            _key_row(specs[key], [f"--{flag}"]) for flag, key in OLD_TRAINER_FLAGS.items()
        ),
        group_table=_rows(
            (f"`--{g} OPTION`", f"`{g}=OPTION`", ", ".join(flags.group_options(g))) for g in GROUPS
        ),
        all_keys_table=_rows(_all_keys_row(s) for s in KEYS),
        baseline_table=_rows(map(_baseline_row, BASELINE_FLAGS)),
        fixed_table=_rows((f"`{o}`", why) for o, why in FIXED_SETTINGS.items()),
        vars_example=_example(VARS_EXAMPLE),
        unknown=flags.unknown_flag_error("--learnin_rate", known, flags.PROG),
    )
