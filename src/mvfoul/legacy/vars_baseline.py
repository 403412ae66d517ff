"""The VARS baseline's command line (sn-mvfoul ``VARS model/main.py``): a whole baseline run, so a
flag left out takes its default and what it always did is set (tables: vars_baseline.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from mvfoul.legacy import flags
from mvfoul.legacy.flags import REQUIRED, Command, LegacyFlagError, Request, Translation
from mvfoul.legacy.flags import make_override as override
from mvfoul.paths import CONF_DIR

# --pre_model -> the crop_size of its torchvision <Weights>.KINETICS400_V1.transforms() (mvfoul's
# default resize_size, frame_size * 8/7, matches the resize before it).
PRE_MODEL_CROP = {"r3d_18": 112, "s3d": 224, "mc3_18": 112, "r2plus1d_18": 112, "mvit_v2_s": 224}
EVALUATION_SPLITS = {0: ["test"], 1: ["chall"], 2: ["test", "chall"]}
TRAIN = 3  # --only_evaluation 3
EARLY = "(earlier revision)"
_HINT = "; for mvfoul's {0}, add {0}=VALUE (the baseline dialect takes only the baseline's flags)"


def _pre_model(name: str) -> tuple[Any, ...]:
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):  # the model= option of its backbone
        if (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("backbone") == name:
            return path.stem, PRE_MODEL_CROP[name]
    raise KeyError(name)


# A flag's value -> one value per key it sets (None: left unset); any other flag: the value.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "--pre_model": _pre_model,
    "--num_views": lambda n: (1 if n == 1 else 2,),
    "--weighted_loss": {"Yes": (True, "inverse_freq"), "No": (False, None)}.get,
    "--data_aug": lambda answer: (answer == "Yes",),
    "--scheduler": {0: ("none", None), 1: ("plateau", 0.1), 2: ("step", None)}.get,  # 3, 4: refused
}


class BaselineFlag(NamedTuple):
    flag: str
    default: Any
    arg: Any
    sets: str
    note: str

    @property
    def status(self) -> str:
        if self.sets in ("ignored", "unsupported"):
            return self.sets
        return "evaluation" if "evaluate_hydra.py" in self.sets else "mapped"


_TABLE = yaml.safe_load(Path(__file__).with_name("vars_baseline.yaml").read_text(encoding="utf-8"))
BASELINE_FLAGS = tuple(BaselineFlag(flag, *row) for flag, row in _TABLE["flags"].items())
FLAGS_BY_NAME = {b.flag: b for b in BASELINE_FLAGS}
FIXED_SETTINGS: dict[str, str] = _TABLE["fixed"]


def build_parser() -> flags.LegacyParser:
    parser = flags.LegacyParser(
        f"{flags.PROG} {flags.VARS_SWITCH}",
        "The official VARS baseline's flags (SoccerNet sn-mvfoul, VARS model/main.py), translated to "
        "`python train_hydra.py ...` (or `python evaluate_hydra.py ...` with --only_evaluation 0/1/2). "
        "Flags left out take the baseline's defaults. Add key=value words for any other mvfoul key.",
        "%(prog)s --path DIR [the baseline's flags] [key=value ...]",
        "this dialect",
    )
    group = parser.add_argument_group("the baseline's flags (its default in brackets)")
    for b in BASELINE_FLAGS:
        text = f"{b.status}: {b.note}"
        if b.default != EARLY:
            text = f"[{'required' if b.default == REQUIRED else b.default}] {text}"
        if b.arg == "bool":
            kwargs: dict[str, Any] = {"action": "store_true"}
        elif isinstance(b.arg, list):
            kwargs = {"type": type(b.arg[0]), "choices": b.arg}
        else:
            kwargs = {"type": {"str": str, "int": int, "float": float}[b.arg]}
            kwargs["metavar"] = b.flag.lstrip("-").upper()
        kwargs["required"] = b.default == REQUIRED
        group.add_argument(b.flag, dest=b.flag, help=text.replace("%", "%%"), **kwargs)
    return parser


def _evaluation(given: dict[str, Any], passthrough: list[str]) -> Translation:
    mode, weights = given["--only_evaluation"], given.get("--path_to_model_weights", "")
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
    used = {"--path": "dataset.data_dir", "--max_num_worker": "dataset.num_workers"}
    tail = [override(key, given[flag]) for flag, key in used.items() if flag in given]
    unused = [f for f in given if FLAGS_BY_NAME[f].status == "mapped" and f not in used]
    notes = []
    if unused:
        notes.append(
            f"{', '.join(unused)}: not used to evaluate (the checkpoint holds the model's settings)"
        )
    commands = []
    for split in EVALUATION_SPLITS[mode]:
        overrides = [override("ckpt_path", weights), f"split={split}", *tail, *passthrough]
        commands.append(Command("evaluate_hydra.py", flags.merge_overrides(overrides)))
    return Translation("VARS baseline", commands, notes)


def _training(given: dict[str, Any], passthrough: list[str]) -> Translation:
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
    notes: list[str] = []
    words = list(FIXED_SETTINGS)
    for b in BASELINE_FLAGS:
        if b.status != "mapped":
            continue
        value = given.get(b.flag, b.default)
        if value == EARLY:  # a flag of an earlier revision, left out: it sets nothing
            continue
        if b.flag == "--patience" and given.get("--scheduler") != 1:
            notes.append(
                "--patience: ignored (it only matters with --scheduler 1, ReduceLROnPlateau)"
            )
            continue
        converted = CONVERT[b.flag](value) if b.flag in CONVERT else (value,)
        for key, key_value in zip(b.sets.split(), converted):
            if key_value is None:
                continue
            if "." in key:
                words.append(override(key, key_value))
            else:  # a group: its option as it is
                words.append(f"{key}={key_value}")
    if given.get("--num_views", 2) not in (1, 2):
        notes.append(
            f"--num_views {given['--num_views']}: dataset.train_views=2, since the baseline trains on two random "
            "views per action whatever --num_views says; add dataset.train_views=N to use more"
        )
    # Group options (no dot in the key) before keys, each kind in its order: the sort is stable.
    groups_first = sorted(words, key=lambda word: "." in word.split("=")[0])
    command = Command("train_hydra.py", flags.merge_overrides(groups_first, passthrough))
    return Translation("VARS baseline", [command], notes)


def translate_vars_baseline(argv: Sequence[str]) -> Request:
    """The VARS baseline's command line -> the equivalent mvfoul command(s)."""

    def hint(flag: str) -> str:
        key = flags.FLAG_KEYS.get(flag.lstrip("-"))
        return _HINT.format(key) if key else ""

    parser = build_parser()
    values, passthrough = parser.parse(argv, hint)
    given = {f: values[f] for f in FLAGS_BY_NAME if f in values}
    status = {f: FLAGS_BY_NAME[f].status for f in given}
    notes = [
        "VARS baseline flags: flags left out take the baseline's defaults; MIGRATION.md lists what differs",
        *(f"{f}: ignored: {FLAGS_BY_NAME[f].note}" for f in given if status[f] == "ignored"),
    ]
    # An unsupported flag given as 0 (or not given) is off, as it is in mvfoul.
    problems = [
        f"{f}: unsupported: {FLAGS_BY_NAME[f].note}"
        for f, v in given.items()
        if status[f] == "unsupported" and v != 0
    ]
    if problems:
        raise LegacyFlagError("; ".join(problems))
    build = _training if given.get("--only_evaluation", TRAIN) == TRAIN else _evaluation
    translation = build(given, passthrough)
    translation.notes[:0] = notes
    return parser.request(translation, values)
