"""The official VARS baseline's command line (SoccerNet ``sn-mvfoul``, ``VARS model/main.py``).

    python training/train.py --from-vars-baseline --path /data/mvfouls --pre_model r3d_18 --LR 5e-5

A baseline command line describes a whole baseline run, so its translation does too: a flag
left out takes the baseline's argparse default (not mvfoul's), and what the baseline always did
(weighted cross-entropy, AdamW + StepLR per epoch, uniform shuffling, no freezing, no gradient
clipping, fp32) is set explicitly. The flags and defaults below were checked against the
released ``main.py`` (the one with ``--only_evaluation``); an earlier revision's extra flags
(``--scheduler``, ``--patience``, ``--type``, ``--random_shift``, ``--lr_warmup``) are
recognised too. Its training loop, dataset and checkpoint format were read from its
``train.py`` and ``dataset.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml

from mvfoul.legacy.flags import (
    VARS_SWITCH,
    LegacyFlagError,
    LegacyParser,
    Request,
    add_common_options,
    hydra_flags,
    split_extras,
)
from mvfoul.legacy.overrides import Command, Translation, make_override, merge_overrides
from mvfoul.paths import CONF_DIR

PROG = f"python training/train.py {VARS_SWITCH}"

# --pre_model (the baseline's names) -> the crop its torchvision Kinetics-400 transform feeds
# the network (crop_size of <Weights>.KINETICS400_V1.transforms(); resize 128x171 or 256 before
# it, which mvfoul's default resize_size = frame_size * 8/7 matches on the short side).
PRE_MODEL_CROP = {"r3d_18": 112, "s3d": 224, "mc3_18": 112, "r2plus1d_18": 112, "mvit_v2_s": 224}

EVALUATION_SPLITS = {0: ["test"], 1: ["chall"], 2: ["test", "chall"]}
TRAIN = 3


@lru_cache(maxsize=1)
def model_options() -> dict[str, str]:
    """backbone name -> the model= option (conf/model/*.yaml) that selects it."""
    options: dict[str, str] = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        backbone = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("backbone")
        if backbone is not None:
            options.setdefault(backbone, path.stem)
    return options


def model_option(pre_model: str) -> str:
    option = model_options().get(pre_model)
    if option is None:  # pragma: no cover - conf/model/ lost a backbone the baseline has
        raise LegacyFlagError(
            f"--pre_model {pre_model}: no conf/model/ option uses backbone {pre_model}"
        )
    return option


def _yes_no(text: str) -> bool:
    return text == "Yes"


Pairs = list[tuple[str, Any]]


@dataclass(frozen=True)
class BaselineFlag:
    """One flag of the baseline's argparse and what mvfoul makes of it.

    ``status``: ``mapped`` (onto keys, by ``to_keys``), ``evaluation`` (selects
    ``evaluate_hydra.py``), ``ignored`` (a note, the run goes on) or ``unsupported`` (an error,
    unless the value given is ``harmless``: it changes nothing).
    """

    flag: str
    default: Any
    status: str
    note: str
    to_keys: Callable[[Any], Pairs] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    early: bool = False  # only in an earlier revision of main.py
    harmless: tuple[Any, ...] = ()
    examples: tuple[Any, ...] = ()  # values whose keys the MIGRATION.md table lists
    target: str = ""  # what it becomes, for flags without keys (MIGRATION.md)

    def keys(self) -> list[str]:
        if self.to_keys is None:
            return []
        found: list[str] = []
        for value in (self.default, *self.examples):
            if value is None:
                continue
            for key, _ in self.to_keys(value):
                if key not in found:
                    found.append(key)
        return found


def _one(key: str) -> Callable[[Any], Pairs]:
    return lambda value: [(key, value)]


def _pre_model(name: str) -> Pairs:
    return [("model", model_option(name)), ("dataset.frame_size", PRE_MODEL_CROP[name])]


def _num_views(n: int) -> Pairs:
    return [("dataset.train_views", 1 if n == 1 else 2)]


def _weighted(answer: str) -> Pairs:
    if _yes_no(answer):
        return [("loss.use_class_weights", True), ("loss.class_weight_method", "inverse_freq")]
    return [("loss.use_class_weights", False)]


def _early_scheduler(code: int) -> Pairs:
    if code == 0:
        return [("training.scheduler", "none")]
    if code == 1:
        return [("training.scheduler", "plateau"), ("training.plateau_factor", 0.1)]
    if code == 2:
        return [("training.scheduler", "step")]
    return []


BASELINE_FLAGS: tuple[BaselineFlag, ...] = (
    BaselineFlag(
        "--path",
        None,
        "mapped",
        "the folder holding Train/ Valid/ Test/ (Chall/); required, as in the baseline",
        _one("dataset.data_dir"),
        {"required": True, "type": str},
        examples=("/data/mvfouls",),
    ),
    BaselineFlag(
        "--pre_model",
        "r2plus1d_18",
        "mapped",
        "the model= option whose backbone it is (r3d_18 -> resnet3d, s3d -> s3d, mc3_18 -> mc3, "
        "r2plus1d_18 -> r2plus1d, mvit_v2_s -> mvit_v2_s; Kinetics-400 weights, as in the baseline), and "
        "the crop its torchvision transform used (112 px; 224 for s3d and mvit_v2_s). An unknown name is "
        "an error (the baseline fell back to r2plus1d_18). The baseline's aggregation and heads are its "
        "own: mvfoul's pooling, shared layer and heads differ",
        _pre_model,
        {"choices": tuple(PRE_MODEL_CROP)},
    ),
    BaselineFlag(
        "--pooling_type",
        "max",
        "mapped",
        "view pooling: max | mean | attention (mvfoul's attention pooling is its own implementation)",
        _one("model.pooling"),
        {"choices": ("max", "mean", "attention")},
    ),
    BaselineFlag(
        "--start_frame",
        0,
        "mapped",
        "first frame of the window, as in the baseline",
        _one("dataset.start_frame"),
        {"type": int},
    ),
    BaselineFlag(
        "--end_frame",
        125,
        "mapped",
        "one past the last frame; the same frames are kept (the baseline's `j % factor < 1` rule)",
        _one("dataset.end_frame"),
        {"type": int},
    ),
    BaselineFlag(
        "--fps",
        25,
        "mapped",
        "sampling rate inside the window; the baseline's defaults 0, 125, 25 give all 125 frames (MViT "
        "accepts only 16: the baseline's README pairs mvit_v2_s with 63, 87, 17)",
        _one("dataset.fps"),
        {"type": float},
    ),
    BaselineFlag(
        "--num_views",
        5,
        "mapped",
        "1: dataset.train_views=1 (the baseline then made every clip its own training sample; mvfoul "
        "draws one random view per action and epoch, so an epoch is shorter). 2-5: dataset.train_views=2, "
        "because the baseline's dataset draws exactly two random views per training action whatever "
        "--num_views says; set dataset.train_views=N to train on more. Validation and test use every view "
        "in both",
        _num_views,
        {"type": int, "choices": (1, 2, 3, 4, 5)},
        examples=(1,),
    ),
    BaselineFlag(
        "--LR",
        1e-4,
        "mapped",
        "one learning rate for the whole network, as in the baseline",
        _one("training.learning_rate"),
        {"type": float},
    ),
    BaselineFlag(
        "--weighted_loss",
        "Yes",
        "mapped",
        "Yes: class weights from the training counts, inverse frequency (the baseline's N/n_c); mvfoul "
        "normalises them to mean 1 and averages the weighted losses over the batch, where PyTorch's "
        "weighted cross-entropy divides by the sum of the batch's weights, so the loss scale differs. "
        "No: unweighted cross-entropy",
        _weighted,
        {"choices": ("Yes", "No")},
        examples=("No",),
    ),
    BaselineFlag(
        "--data_aug",
        "Yes",
        "mapped",
        "Yes: mvfoul's augmentation (flip, random resized crop, colour jitter: dataset.hflip_prob, "
        "crop_scale_min, color_jitter), not the baseline's affine/perspective/rotation/jitter/flip set",
        lambda answer: [("dataset.augment", _yes_no(answer))],
        {"choices": ("Yes", "No")},
    ),
    BaselineFlag(
        "--max_epochs",
        60,
        "mapped",
        "training epochs",
        _one("training.max_epochs"),
        {"type": int},
    ),
    BaselineFlag(
        "--batch_size",
        2,
        "mapped",
        "actions per training batch (the baseline evaluated one action at a time; mvfoul batches "
        "evaluation with dataset.eval_batch_size, padding views, with the same results)",
        _one("dataset.batch_size"),
        {"type": int},
    ),
    BaselineFlag(
        "--step_size",
        3,
        "mapped",
        "StepLR: epochs between decays (training.scheduler=step, stepped once per epoch)",
        _one("training.step_size"),
        {"type": int},
    ),
    BaselineFlag(
        "--gamma", 0.1, "mapped", "StepLR: decay factor", _one("training.gamma"), {"type": float}
    ),
    BaselineFlag(
        "--weight_decay",
        0.001,
        "mapped",
        "AdamW's decoupled weight decay",
        _one("training.weight_decay"),
        {"type": float},
    ),
    BaselineFlag(
        "--max_num_worker",
        1,
        "mapped",
        "DataLoader workers",
        _one("dataset.num_workers"),
        {"type": int},
    ),
    BaselineFlag(
        "--model_name",
        "VARS",
        "mapped",
        "the run's name: outputs/<name>/<date_time>/ (the baseline saved under models/<model_name>/...)",
        _one("experiment.name"),
        {"type": str},
    ),
    BaselineFlag(
        "--only_evaluation",
        TRAIN,
        "evaluation",
        "3 (default): train. 0: evaluate on the test set, 1: the challenge set, 2: both -> "
        "`python evaluate_hydra.py ckpt_path=... split=test` (and/or split=chall), with dataset.data_dir "
        "from --path and dataset.num_workers from --max_num_worker; the checkpoint holds every other setting",
        None,
        {"type": int, "choices": (0, 1, 2, 3)},
        target="evaluate_hydra.py split=test|chall",
    ),
    BaselineFlag(
        "--path_to_model_weights",
        "",
        "evaluation",
        "with --only_evaluation 0/1/2: the checkpoint to evaluate (ckpt_path). It must be an mvfoul "
        "checkpoint (.ckpt from a run's checkpoints/): a baseline .pth.tar holds the baseline's own network "
        "under its own names and does not load into mvfoul's. For training (fine-tuning from baseline "
        "weights, as the baseline's README does with its published 14_model.pth.tar) it is unsupported "
        "for the same reason",
        None,
        {"type": str},
        target="ckpt_path (evaluate_hydra.py)",
    ),
    BaselineFlag(
        "--GPU",
        -1,
        "ignored",
        "mvfoul counts devices (system.gpus) rather than picking one: put CUDA_VISIBLE_DEVICES=N in front "
        "of the command to use GPU N",
        None,
        {"type": int},
    ),
    BaselineFlag(
        "--loglevel",
        "INFO",
        "ignored",
        "mvfoul logs at INFO to the console and to the run folder's train_hydra.log; hydra.verbose=true "
        "shows debug messages",
        None,
        {"type": str},
    ),
    BaselineFlag(
        "--continue_training",
        False,
        "unsupported",
        "mvfoul cannot resume a baseline run: its optimiser, scheduler and network state do not load "
        "into mvfoul; start a new run",
        None,
        {"action": "store_true"},
        harmless=(False,),
    ),
    BaselineFlag(
        "--scheduler",
        None,
        "mapped",
        "(earlier revision) 0: none, 1: plateau (ReduceLROnPlateau, factor 0.1; mvfoul's watches "
        "experiment.monitor), 2: step; 3 (ExponentialLR) and 4 have no equivalent and are an error. "
        "Without it: step, as in the released baseline",
        _early_scheduler,
        {"type": int, "choices": (0, 1, 2, 3, 4)},
        early=True,
        examples=(0, 1, 2),
    ),
    BaselineFlag(
        "--patience",
        None,
        "mapped",
        "(earlier revision) ReduceLROnPlateau patience, with --scheduler 1",
        _one("training.plateau_patience"),
        {"type": int},
        early=True,
        examples=(5,),
    ),
    BaselineFlag(
        "--type",
        None,
        "unsupported",
        "(earlier revision) chose live or replay clips; mvfoul draws dataset.train_views random views "
        "among every clip of an action and validates on all",
        None,
        {"type": str},
        early=True,
    ),
    BaselineFlag(
        "--random_shift",
        None,
        "unsupported",
        "(earlier revision) shifted the frame window at random; mvfoul's window is fixed (0 is accepted: "
        "no shift)",
        None,
        {"type": int},
        early=True,
        harmless=(0,),
    ),
    BaselineFlag(
        "--lr_warmup",
        None,
        "unsupported",
        "(earlier revision) learning-rate warmup; mvfoul warms up only with the cosine schedule "
        "(training.scheduler=cosine training.warmup_epochs=N). 0 is accepted: no warmup",
        None,
        {"type": int},
        early=True,
        harmless=(0,),
    ),
)
FLAGS_BY_NAME = {b.flag: b for b in BASELINE_FLAGS}

# What every baseline translation sets, whatever the flags: how the baseline always trained.
FIXED_SETTINGS: tuple[tuple[str, Any, str], ...] = (
    ("loss", "ce", "cross-entropy on both heads, summed (weighted by --weighted_loss)"),
    (
        "sampling",
        "none",
        "uniformly shuffled training actions (shuffle=True), no class-balanced sampling",
    ),
    ("freezing", "none", "the whole network trains from the first step"),
    ("loss.label_smoothing", 0.0, "no label smoothing (loss=ce alone sets 0.1)"),
    (
        "training.optimizer",
        "adamw",
        "AdamW, betas 0.9/0.999 (the baseline's eps is 1e-7, mvfoul's PyTorch's 1e-8)",
    ),
    ("training.scheduler", "step", "StepLR(step_size, gamma), stepped once per epoch"),
    ("training.gradient_clip_val", None, "no gradient clipping"),
    ("system.precision", "32-true", "fp32, no mixed precision"),
)

# Differences that no flag controls, for MIGRATION.md.
DIFFERENCES = (
    "The network around the backbone is mvfoul's (view pooling, a shared layer of model.shared_dim, "
    "dropout model.dropout_rate, two heads), not the baseline's, so the two cannot load each other's weights.",
    "Checkpoints: the baseline saved every epoch after the third and tested every epoch; mvfoul keeps "
    "the experiment.save_top_k best by experiment.monitor plus last.ckpt, and tests the best one after "
    "training (experiment.test_after_fit).",
    "Labels are filtered and mapped exactly as the baseline and the official evaluator do; metrics are "
    "the official ones, logged every epoch.",
    "mvfoul's own `training=baseline` option is unrelated to the VARS baseline: it is mvfoul's "
    "conservative default.",
)


def build_parser() -> LegacyParser:
    parser = LegacyParser(
        prog=PROG,
        description=(
            "The official VARS baseline's flags (SoccerNet sn-mvfoul, VARS model/main.py), translated to "
            "`python train_hydra.py ...` (or `python evaluate_hydra.py ...` with --only_evaluation 0/1/2). "
            "Flags left out take the baseline's defaults. Add key=value words for any other mvfoul key."
        ),
        usage="%(prog)s --path DIR [the baseline's flags] [key=value ...]",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(VARS_SWITCH, action="store_true", help="this dialect")
    add_common_options(parser)
    flags = parser.add_argument_group("the baseline's flags (its default in brackets)")
    for b in BASELINE_FLAGS:
        shown = "required" if b.default is None and b.flag == "--path" else b.default
        text = f"[{shown}] {b.status}: {b.note}" if not b.early else f"{b.status}: {b.note}"
        kwargs = dict(b.kwargs)
        if "choices" not in kwargs and "action" not in kwargs:
            kwargs["metavar"] = b.flag.lstrip("-").upper()
        flags.add_argument(b.flag, dest=b.flag, help=text.replace("%", "%%"), **kwargs)
    return parser


def _evaluation(given: dict[str, Any], passthrough: list[str], flags: list[str]) -> Translation:
    mode = given["--only_evaluation"]
    weights = given.get("--path_to_model_weights", "")
    if not weights:
        raise LegacyFlagError(
            f"--only_evaluation {mode} needs --path_to_model_weights: the checkpoint to evaluate "
            "(an mvfoul .ckpt; the baseline would evaluate an untrained network)"
        )
    if not weights.endswith(".ckpt"):
        raise LegacyFlagError(
            f"--path_to_model_weights {weights}: not an mvfoul checkpoint (.ckpt). A VARS baseline state dict "
            "(.pth.tar) holds the baseline's own network and does not load into mvfoul's; train with "
            "mvfoul and evaluate its checkpoints/*.ckpt"
        )
    base = [make_override("ckpt_path", weights)]
    tail = [make_override("dataset.data_dir", given["--path"])]
    if "--max_num_worker" in given:
        tail.append(make_override("dataset.num_workers", given["--max_num_worker"]))
    notes = []
    unused = [
        f
        for f in given
        if FLAGS_BY_NAME[f].status == "mapped" and f not in ("--path", "--max_num_worker")
    ]
    if unused:
        notes.append(
            f"{', '.join(unused)}: not used to evaluate (the checkpoint holds the model's settings)"
        )
    commands = [
        Command(
            "evaluate_hydra.py",
            merge_overrides(base, [f"split={split}"], tail, passthrough),
            hydra_flags=list(flags),
        )
        for split in EVALUATION_SPLITS[mode]
    ]
    return Translation("VARS baseline", commands, notes)


def _training(given: dict[str, Any], passthrough: list[str], flags: list[str]) -> Translation:
    notes: list[str] = []
    if given.get("--path_to_model_weights"):
        raise LegacyFlagError(
            f"--path_to_model_weights {given['--path_to_model_weights']}: unsupported for training. "
            + FLAGS_BY_NAME["--path_to_model_weights"].note.split(". ", 1)[1]
        )
    if given.get("--scheduler") in (3, 4):
        raise LegacyFlagError(
            f"--scheduler {given['--scheduler']}: no mvfoul equivalent (ExponentialLR / decay on a rising "
            "validation loss); use 2 (step) or training.scheduler=plateau|cosine"
        )
    groups: list[str] = []
    keys: list[str] = []

    def add(key: str, value: Any) -> None:
        if "." in key:
            keys.append(make_override(key, value))
        else:
            groups.append(f"{key}={value}")

    for key, value, _ in FIXED_SETTINGS:
        add(key, value)
    for b in BASELINE_FLAGS:
        if b.status != "mapped" or b.to_keys is None:
            continue
        value = given.get(b.flag, None if b.early else b.default)
        if value is None:
            continue
        if b.flag == "--patience" and given.get("--scheduler") != 1:
            notes.append(
                "--patience: ignored (it only matters with --scheduler 1, ReduceLROnPlateau)"
            )
            continue
        for key, mapped in b.to_keys(value):
            add(key, mapped)
    if given.get("--num_views", 2) not in (1, 2):
        notes.append(
            f"--num_views {given['--num_views']}: dataset.train_views=2, since the baseline trains on two random "
            "views per action whatever --num_views says; add dataset.train_views=N to use more"
        )
    return Translation(
        "VARS baseline",
        [
            Command(
                "train_hydra.py",
                merge_overrides(groups, keys, passthrough),
                hydra_flags=list(flags),
            )
        ],
        notes,
    )


def translate_vars_baseline(argv: Sequence[str]) -> Request:
    """The VARS baseline's command line -> the equivalent mvfoul command(s)."""
    parser = build_parser()
    ns, extras = parser.parse_known_args([a for a in argv if a != VARS_SWITCH])
    passthrough = split_extras(extras, parser, _mvfoul_hint)
    values = vars(ns)
    given = {f: values[f] for f in FLAGS_BY_NAME if f in values}
    notes = [
        "VARS baseline flags: flags left out take the baseline's defaults; MIGRATION.md lists what differs"
    ]
    problems = []
    for flag, value in given.items():
        b = FLAGS_BY_NAME[flag]
        if b.status == "ignored":
            notes.append(f"{flag}: ignored: {b.note}")
        elif b.status == "unsupported" and value not in b.harmless:
            problems.append(f"{flag}: unsupported: {b.note}")
    if problems:
        raise LegacyFlagError("; ".join(problems))
    flags = hydra_flags(ns)
    if given.get("--only_evaluation", TRAIN) != TRAIN:
        translation = _evaluation(given, passthrough, flags)
    else:
        translation = _training(given, passthrough, flags)
    translation.notes[:0] = notes
    return Request(
        translation,
        write_config=values.get("write_config"),
        force=bool(values.get("force", False)),
        dry_run=bool(values.get("dry_run", False)),
    )


def _mvfoul_hint(flag: str) -> str:
    from mvfoul.legacy.flags import DERIVED_FLAGS, OLD_TRAINER_FLAGS

    name = flag.lstrip("-")
    key = OLD_TRAINER_FLAGS.get(name) or next(
        (k for k, n in DERIVED_FLAGS.items() if n == name), None
    )
    if key is not None:
        return f"; for mvfoul's {key}, add {key}=VALUE (the baseline dialect takes only the baseline's flags)"
    return ""
