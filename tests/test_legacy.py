"""The migration path: training/train.py (old flags and the VARS baseline's), --write-config, MIGRATION.md."""

from __future__ import annotations

import dataclasses
import os
import shlex
import typing

import pytest
from omegaconf import OmegaConf

from conftest import REPO_ROOT, SMALL_SYNTHETIC, compose_config, run_command, train_command
from mvfoul import config as C
from mvfoul.help import describe
from mvfoul.legacy.cli import config_body, notice, translate, write_config
from mvfoul.legacy.flags import (
    DERIVED_FLAGS,
    KEYS,
    OLD_TRAINER_FLAGS,
    LegacyFlagError,
    build_parser,
)
from mvfoul.legacy.markdown import migration_markdown
from mvfoul.legacy.vars_baseline import BASELINE_FLAGS, PRE_MODEL_CROP
from mvfoul.paths import USER_CONFIGS_DIR

LEGACY = str(REPO_ROOT / "training" / "train.py")
VARS = "--from-vars-baseline"


def command_of(argv):
    (command,) = translate(argv).translation.commands
    return command


def composed(command) -> dict:
    name = command.config_name or (
        "evaluate" if command.script == "evaluate_hydra.py" else "config"
    )
    return OmegaConf.to_container(compose_config(name, command.overrides))


def split_command(words: list[str]) -> tuple[str | None, list[str]]:
    """(config name, overrides) of the words of a printed ``python train_hydra.py ...``."""
    rest = words[2:]
    name = rest[rest.index("--config-name") + 1] if "--config-name" in rest else None
    valued = ("--config-name", "--cfg")  # Hydra's flags that take the next word
    skip = [w.startswith("-") or (i > 0 and rest[i - 1] in valued) for i, w in enumerate(rest)]
    return name, [w for w, skipped in zip(rest, skip) if not skipped]


def printed_command(translation) -> tuple[str | None, list[str]]:
    """The command the deprecation notice prints, read back the way a shell would."""
    (line,) = [text for text in notice(translation).splitlines() if text.startswith("  python ")]
    return split_command(shlex.split(line))


def select(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def assert_one_line_error(result, *expected: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mvfoul: error: ")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# --- the flags come from the schema ----------------------------------------------------------


def schema_leaf_keys() -> list[str]:
    keys = [
        f"{group}.{f.name}"
        for group, schema in C.GROUP_SCHEMAS.items()
        for f in dataclasses.fields(schema)
    ]
    keys += [f"dataset.synthetic.{f.name}" for f in dataclasses.fields(C.SyntheticConfig)]
    # Mappings of Lightning options have no flag: the old trainer had none.
    return [k for k in keys if k not in ("experiment.trainer", "experiment.callbacks")]


def test_every_schema_key_has_exactly_one_derived_flag_named_by_the_rule():
    assert sorted(s.key for s in KEYS) == sorted(schema_leaf_keys())
    fields = [k.rsplit(".", 1)[1] for k in schema_leaf_keys()]
    for key, name in DERIVED_FLAGS.items():
        field = key.rsplit(".", 1)[1]
        assert name == (field if fields.count(field) == 1 else key.replace(".", "_")), key
    assert DERIVED_FLAGS["dataset.batch_size"] == "batch_size"
    assert (DERIVED_FLAGS["experiment.name"], DERIVED_FLAGS["dataset.name"]) == (
        "experiment_name",
        "dataset_name",
    )
    assert (DERIVED_FLAGS["system.seed"], DERIVED_FLAGS["dataset.synthetic.seed"]) == (
        "system_seed",
        "dataset_synthetic_seed",
    )
    options = {s for a in build_parser()._actions for s in a.option_strings}
    assert {f"--{n}" for n in DERIVED_FLAGS.values()} <= options


# Every flag of the old trainer named in the migration issue, and the key it must set.
OLD_FLAGS = {
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


def test_every_old_trainer_flag_is_accepted_and_sets_its_key():
    assert OLD_TRAINER_FLAGS == OLD_FLAGS
    options = {s for a in build_parser()._actions for s in a.option_strings}
    assert {f"--{f}" for f in OLD_FLAGS} <= options
    cfg = composed(
        command_of(
            ["--loss_function", "ce", "--data_dir", "/d", "--backbone", "r3d_18", "--gpus", "3"]
        )
    )
    assert (
        cfg["loss"]["function"],
        cfg["dataset"]["data_dir"],
        cfg["model"]["backbone"],
        cfg["system"]["gpus"],
    ) == (
        "ce",
        "/d",
        "r3d_18",
        3,
    )


# --- the equality test: a long command line using every flag ----------------------------------

SPECIAL_VALUES = {
    "dataset.name": "synthetic",
    "dataset.data_dir": "/data/my mvfouls",  # a space: the printed command must quote it
    "dataset.decoder": "pyav",
    "dataset.on_decode_error": "skip",
    "model.backbone": "tiny",
    "model.pooling": "attention",
    "training.optimizer": "sgd",
    "training.scheduler": "step",
    "loss.function": "ce",
    "loss.focal_alpha": 0.25,
    "loss.class_weight_method": "inverse_freq",
    "sampling.balance_task": "joint",
    "freezing.freezing_strategy": "adaptive",
    "freezing.unfreeze_schedule": [2, 4, 8],
    "system.accelerator": "cpu",
    "system.precision": "16",  # looks like a number: must stay a string
    "system.strategy": "ddp",
    "experiment.monitor": "val/leaderboard",
    "experiment.mode": "max",
    "experiment.tags": ["legacy", "two words", "7"],
    "experiment.loggers": ["csv"],
    "dataset.mean": [0.5, 0.25, 0.125],  # a list of floats
    "dataset.std": [0.2, 0.3, 0.4],
    "experiment.resume": "auto",
    "experiment.limit_train_batches": 10,  # an int: a batch count
    "experiment.limit_val_batches": 0.5,  # a float: a fraction
    "training.gradient_clip_val": None,  # null for an optional key
}


def value_for(spec) -> typing.Any:
    if spec.key in SPECIAL_VALUES:
        return SPECIAL_VALUES[spec.key]
    default = spec.default if not isinstance(spec.default, str) or spec.kind == "str" else None
    if spec.kind == "bool":
        return not bool(default)
    if spec.kind == "int":
        return (default or 0) + 3
    if spec.kind == "float":
        return round((default or 0.0) / 2 + 0.125, 6)
    if spec.kind == "str":
        return f"legacy_{spec.field}"
    raise AssertionError(spec)


def argv_for(spec, value) -> list[str]:
    name = (
        "loss_function" if spec.key == "loss.function" else DERIVED_FLAGS[spec.key]
    )  # an alias, too
    if spec.kind == "bool":
        return [f"--{name}" if value else f"--no-{name}"]
    if spec.is_list:
        return [f"--{name}", *map(str, value)]
    return [f"--{name}", "null" if value is None else str(value)]


def test_the_legacy_command_composes_exactly_the_printed_hydra_command():
    values = {spec.key: value_for(spec) for spec in KEYS}
    argv = ["--dataset", "synthetic", "--model", "tiny", "--loss", "ce"]
    for spec in KEYS:
        argv += argv_for(spec, values[spec.key])
    request = translate(argv)
    (command,) = request.translation.commands
    assert len(command.overrides) == len(KEYS) + 3  # only what was given: one override per flag

    legacy = composed(command)
    for key, expected in values.items():
        got = select(legacy, key)
        assert got == expected and type(got) is type(expected), (key, got, expected)

    config_name, overrides = printed_command(request.translation)
    assert config_name is None and overrides == command.overrides
    assert OmegaConf.to_container(compose_config("config", overrides)) == legacy


def test_only_the_flags_given_become_overrides_and_booleans_behave_as_before():
    assert command_of(["--max_epochs", "5"]).overrides == ["training.max_epochs=5"]
    assert command_of([]).overrides == []
    assert command_of(["--use_class_weights"]).overrides == ["loss.use_class_weights=true"]
    assert command_of(["--no-use_class_weights"]).overrides == ["loss.use_class_weights=false"]
    cfg = composed(
        command_of(
            ["--preset", "quick_test", "--no-augment", "--unfreeze_schedule", "1", "3", "--tags"]
        )
    )
    assert cfg["dataset"]["augment"] is False and cfg["freezing"]["unfreeze_schedule"] == [1, 3]
    assert cfg["experiment"]["tags"] == [] and cfg["experiment"]["name"] == "quick_test"


def test_presets_group_options_hydra_overrides_and_gpus_zero():
    command = command_of(
        [
            "--config-name",
            "quick_test",
            "--model",
            "resnet3d",
            "--max_epochs",
            "4",
            "training.max_epochs=6",
            "model.shared_dim=64",
        ]
    )
    assert command.config_name == "quick_test"
    assert command.overrides == [
        "model=resnet3d",
        "training.max_epochs=6",
        "model.shared_dim=64",
    ]  # the key=value word wins
    request = translate(["--gpus", "0", "--data_dir", "/d"])
    assert request.translation.commands[0].overrides[0] == "system=cpu"
    assert any("--gpus 0" in n for n in request.translation.notes)
    assert composed(request.translation.commands[0])["system"]["accelerator"] == "cpu"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--learnin_rate", "0.1"], "unknown flag --learnin_rate; did you mean --learning_rate?"),
        (["--use_class_weight"], "did you mean --use_class_weights"),
        (["--path", "/d"], f"--path is a flag of the VARS baseline: put {VARS} first"),
        (["--max_epochs", "many"], "argument --max_epochs: invalid int value: 'many'"),
        (["--model", "resnet50"], "argument --model: invalid choice: 'resnet50'"),
        (
            ["--preset", "quick_tset"],
            "--preset quick_tset: no such config; did you mean quick_test?",
        ),
        (["epochs"], "unexpected argument 'epochs'"),
        (
            [VARS, "--path", "/d", "--learning_rate", "1"],
            "for mvfoul's training.learning_rate, add training.learning_rate=VALUE",
        ),
        ([VARS], "the following arguments are required: --path"),
        (
            ["--tags", "a", "model=tiny"],
            "'model=tiny' looks like a Hydra override read as a list item",
        ),
    ],
)
def test_bad_command_lines_name_the_problem(argv, expected):
    with pytest.raises(LegacyFlagError) as info:
        translate(argv)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_flag_fails_in_one_line_with_the_close_matches(tmp_path, cache_dir):
    result = run_command(
        [LEGACY, "--data_dir", "/d", "--learnin_rate", "0.1"], cwd=tmp_path, cache=cache_dir
    )
    assert result.returncode == 2
    assert_one_line_error(result, "unknown flag --learnin_rate", "did you mean --learning_rate?")
    assert not (tmp_path / "outputs").exists()


def test_the_script_prints_the_notice_then_runs_exactly_that_command(tmp_path, cache_dir):
    argv = [
        "--preset",
        "quick_test",
        "--max_epochs",
        "3",
        "--tags",
        "a b",
        "c",
        "--precision",
        "32",
        "--cfg",
        "job",
    ]
    result = run_command([LEGACY, *argv], cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr
    paragraph, *commands = result.stderr.strip().splitlines()
    assert (
        paragraph.startswith("mvfoul: training/train.py is deprecated")
        and "--write-config NAME" in paragraph
    )
    (line,) = commands
    config_name, overrides = split_command(shlex.split(line.strip()))
    assert (
        line.strip().startswith("python ")
        and "train_hydra.py --cfg job --config-name quick_test" in line
    )
    expected = OmegaConf.to_container(compose_config(config_name, overrides))
    # What ran is the printed command: Hydra's --cfg job printed the config it composed.
    assert OmegaConf.to_container(OmegaConf.create(result.stdout)) == expected
    assert (
        expected["experiment"]["tags"] == ["a b", "c"] and expected["system"]["precision"] == "32"
    )


# --- the VARS baseline ---------------------------------------------------------------------


def test_a_bare_baseline_command_line_is_the_baselines_run():
    request = translate([VARS, "--path", "/data/mvfouls"])
    cfg = composed(request.translation.commands[0])
    d, t, lo = cfg["dataset"], cfg["training"], cfg["loss"]
    assert (d["data_dir"], d["batch_size"], d["num_workers"], d["train_views"], d["augment"]) == (
        "/data/mvfouls",
        2,
        1,
        2,
        True,
    )
    assert (d["start_frame"], d["end_frame"], d["fps"], d["frame_size"]) == (0, 125, 25.0, 112)
    assert (cfg["model"]["backbone"], cfg["model"]["pooling"], cfg["model"]["pretrained"]) == (
        "r2plus1d_18",
        "max",
        True,
    )
    assert (t["max_epochs"], t["learning_rate"], t["weight_decay"], t["optimizer"]) == (
        60,
        1e-4,
        0.001,
        "adamw",
    )
    assert (t["scheduler"], t["step_size"], t["gamma"], t["gradient_clip_val"]) == (
        "step",
        3,
        0.1,
        None,
    )
    assert (
        lo["function"],
        lo["label_smoothing"],
        lo["use_class_weights"],
        lo["class_weight_method"],
    ) == ("ce", 0.0, True, "inverse_freq")
    assert (
        not cfg["sampling"]["use_class_balanced_sampler"]
        and not cfg["freezing"]["gradual_finetuning"]
    )
    assert (cfg["system"]["precision"], cfg["experiment"]["name"]) == ("32-true", "VARS")
    assert request.translation.notes and "baseline's defaults" in request.translation.notes[0]


def test_every_baseline_flag_maps_onto_mvfouls_keys():
    argv = [
        VARS,
        "--path",
        "/d",
        "--pre_model",
        "r3d_18",
        "--pooling_type",
        "attention",
        "--start_frame",
        "63",
        "--end_frame",
        "87",
        "--fps",
        "17",
        "--num_views",
        "1",
        "--LR",
        "5e-5",
        "--weighted_loss",
        "No",
        "--data_aug",
        "No",
        "--max_epochs",
        "14",
        "--batch_size",
        "6",
        "--step_size",
        "5",
        "--gamma",
        "0.3",
        "--weight_decay",
        "0.0005",
        "--max_num_worker",
        "3",
        "--model_name",
        "my_vars",
        "--only_evaluation",
        "3",
        "--GPU",
        "1",
        "--loglevel",
        "DEBUG",
    ]
    request = translate(argv)
    cfg = composed(request.translation.commands[0])
    d, t = cfg["dataset"], cfg["training"]
    assert (cfg["model"]["backbone"], cfg["model"]["pooling"], d["frame_size"]) == (
        "r3d_18",
        "attention",
        112,
    )
    assert (d["start_frame"], d["end_frame"], d["fps"], d["train_views"], d["augment"]) == (
        63,
        87,
        17.0,
        1,
        False,
    )
    assert (t["learning_rate"], t["max_epochs"], t["step_size"], t["gamma"], t["weight_decay"]) == (
        5e-5,
        14,
        5,
        0.3,
        0.0005,
    )
    assert (cfg["loss"]["function"], cfg["loss"]["use_class_weights"]) == ("ce", False)
    assert (d["batch_size"], d["num_workers"], d["data_dir"], cfg["experiment"]["name"]) == (
        6,
        3,
        "/d",
        "my_vars",
    )
    notes = " ".join(request.translation.notes)
    assert (
        "--GPU: ignored" in notes
        and "CUDA_VISIBLE_DEVICES" in notes
        and "--loglevel: ignored" in notes
    )
    handled = {b.flag for b in BASELINE_FLAGS}
    assert {a for a in argv if a.startswith("--") and a != VARS} <= handled


@pytest.mark.parametrize("pre_model", sorted(PRE_MODEL_CROP))
def test_each_pre_model_selects_its_model_option_and_its_torchvision_crop(pre_model):
    import torchvision.models.video as tv

    weights = {
        "r3d_18": tv.R3D_18_Weights,
        "s3d": tv.S3D_Weights,
        "mc3_18": tv.MC3_18_Weights,
        "r2plus1d_18": tv.R2Plus1D_18_Weights,
        "mvit_v2_s": tv.MViT_V2_S_Weights,
    }[pre_model]
    command = command_of([VARS, "--path", "/d", "--pre_model", pre_model])
    assert any(o.startswith("model=") for o in command.overrides)
    cfg = composed(command)
    assert cfg["model"]["backbone"] == pre_model
    assert [cfg["dataset"]["frame_size"]] * 2 == list(weights.KINETICS400_V1.transforms().crop_size)


def test_num_views_maps_to_the_views_the_baseline_really_trained_on():
    for n, views in [(1, 1), (2, 2), (5, 2)]:
        request = translate([VARS, "--path", "/d", "--num_views", str(n)])
        assert composed(request.translation.commands[0])["dataset"]["train_views"] == views
        assert any("dataset.train_views=2" in note for note in request.translation.notes) == (n > 2)


def test_only_evaluation_becomes_the_evaluation_command():
    base = [VARS, "--path", "/d", "--path_to_model_weights", "runs/best.ckpt"]
    (test,) = translate([*base, "--only_evaluation", "0"]).translation.commands
    assert test.script == "evaluate_hydra.py"
    assert test.overrides == ["ckpt_path=runs/best.ckpt", "split=test", "dataset.data_dir=/d"]
    cfg = composed(test)
    assert (cfg["ckpt_path"], cfg["split"], cfg["dataset"]["data_dir"]) == (
        "runs/best.ckpt",
        "test",
        "/d",
    )
    (chall,) = translate(
        [*base, "--only_evaluation", "1", "--max_num_worker", "2"]
    ).translation.commands
    assert "split=chall" in chall.overrides and "dataset.num_workers=2" in chall.overrides
    both = translate([*base, "--only_evaluation", "2"]).translation
    assert [c.overrides[1] for c in both.commands] == ["split=test", "split=chall"]
    assert "commands below" in notice(both)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--only_evaluation", "0", "--path_to_model_weights", "14_model.pth.tar"],
            "not an mvfoul checkpoint (.ckpt)",
        ),
        (["--only_evaluation", "2"], "needs --path_to_model_weights"),
        (["--path_to_model_weights", "14_model.pth.tar"], "unsupported for training"),
        (["--continue_training"], "--continue_training: unsupported"),
        (["--scheduler", "3"], "--scheduler 3: no mvfoul equivalent"),
        (["--random_shift", "4"], "--random_shift: unsupported"),
        (["--type", "Live"], "--type: unsupported"),
        (["--pre_model", "slowfast"], "invalid choice: 'slowfast'"),
        (["--weighted_loss", "yes"], "invalid choice: 'yes'"),
    ],
)
def test_baseline_flags_without_an_equivalent_say_why(extra, expected):
    with pytest.raises(LegacyFlagError) as info:
        translate([VARS, "--path", "/d", *extra])
    assert expected in str(info.value)


def test_the_earlier_revisions_scheduler_flags():
    cfg = composed(command_of([VARS, "--path", "/d", "--scheduler", "1", "--patience", "7"]))
    assert (
        cfg["training"]["scheduler"],
        cfg["training"]["plateau_patience"],
        cfg["training"]["plateau_factor"],
    ) == ("plateau", 7, 0.1)
    assert (
        composed(command_of([VARS, "--path", "/d", "--scheduler", "0", "--random_shift", "0"]))[
            "training"
        ]["scheduler"]
        == "none"
    )


# --- converting for good -------------------------------------------------------------------


@pytest.fixture
def user_config_name():
    name = f"test_legacy_{os.getpid()}"
    yield name
    (USER_CONFIGS_DIR / f"{name}.yaml").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "argv",
    [
        [
            "--data_dir",
            "/data/my clips",
            "--model",
            "resnet3d",
            "--max_epochs",
            "12",
            "--no-gradual_finetuning",
            "--precision",
            "32",
            "--tags",
            "x",
            "y z",
            "--gradient_clip_val",
            "null",
            "loss=ce",
        ],
        [
            "--preset",
            "quick_test",
            "--model",
            "resnet3d",
            "--no-pretrained",
            "--unfreeze_schedule",
            "1",
            "2",
        ],
        [
            VARS,
            "--path",
            "/d",
            "--pre_model",
            "mvit_v2_s",
            "--start_frame",
            "63",
            "--end_frame",
            "87",
            "--fps",
            "17",
        ],
    ],
    ids=["old_trainer", "preset", "vars_baseline"],
)
def test_the_written_config_composes_exactly_like_the_command(argv, user_config_name):
    request = translate(argv)
    path = write_config(
        request.translation, user_config_name, original="python training/train.py ..."
    )
    assert path == USER_CONFIGS_DIR / f"{user_config_name}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_\n")
    assert describe(path).startswith(
        f"Converted from the {request.translation.source}'s command line"
    )
    (command,) = request.translation.commands
    assert OmegaConf.to_container(compose_config(user_config_name)) == composed(command)
    body = config_body(command)
    assert body["defaults"][0] == (f"/{command.config_name}" if command.config_name else "/config")
    assert body["defaults"][-1] == "_self_"


def test_write_config_refuses_to_overwrite_and_to_shadow_a_preset(tmp_path):
    translation = translate(["--max_epochs", "3"]).translation
    write_config(translation, "mine", folder=tmp_path)
    with pytest.raises(LegacyFlagError, match="exists; add --force"):
        write_config(translation, "mine", folder=tmp_path)
    write_config(translate(["--max_epochs", "4"]).translation, "mine", folder=tmp_path, force=True)
    assert "max_epochs: 4" in (tmp_path / "mine.yaml").read_text()
    with pytest.raises(LegacyFlagError, match="conf/presets/quick_test.yaml already has that name"):
        write_config(translation, "quick_test", folder=tmp_path)
    with pytest.raises(LegacyFlagError, match="a config file holds a training run"):
        write_config(
            translate(
                [
                    VARS,
                    "--path",
                    "/d",
                    "--only_evaluation",
                    "0",
                    "--path_to_model_weights",
                    "a.ckpt",
                ]
            ).translation,
            "ev",
            folder=tmp_path,
        )
    with pytest.raises(LegacyFlagError, match="cannot be kept in a config file"):
        write_config(
            translate(["--max_epochs", "3", "--cfg", "job"]).translation, "cfg", folder=tmp_path
        )


@pytest.mark.slow
def test_the_written_config_runs(tmp_path, cache_dir, user_config_name):
    small = [
        "--num_train",
        "16",
        "--num_valid",
        "8",
        "--num_test",
        "8",
        "--resolution",
        "64",
        "--clip_frames",
        "100",
        "--frame_size",
        "48",
    ]
    assert len(small) == 2 * len(
        SMALL_SYNTHETIC
    )  # the same small built-in dataset, as legacy flags
    write = run_command(
        [
            LEGACY,
            "--write-config",
            user_config_name,
            "--preset",
            "quick_test",
            *small,
            "--experiment_name",
            "legacy_run",
        ],
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert write.returncode == 0, write.stderr
    assert f"--config-name {user_config_name}" in write.stdout
    lines = (USER_CONFIGS_DIR / f"{user_config_name}.yaml").read_text().splitlines()
    (was,) = [line for line in lines if line.startswith("# Was:")]
    assert "--preset quick_test" in was and "--write-config" not in was

    result = run_command(
        train_command("--config-name", user_config_name, "experiment.fast_dev_run=true"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (saved,) = (tmp_path / "outputs" / "legacy_run").rglob(".hydra/config.yaml")
    cfg = OmegaConf.load(saved)
    assert (cfg.model.backbone, cfg.dataset.frame_size, cfg.dataset.synthetic.num_train) == (
        "tiny",
        48,
        16,
    )
    assert cfg.experiment.fast_dev_run is True


# --- MIGRATION.md -------------------------------------------------------------------------


def test_migration_md_is_generated_from_the_mapping():
    committed = (REPO_ROOT / "MIGRATION.md").read_text(encoding="utf-8")
    assert committed == migration_markdown(), (
        "MIGRATION.md is stale: python -m mvfoul.legacy --markdown > MIGRATION.md"
    )
    for flag in OLD_FLAGS:
        assert f"`--{flag}" in committed
    for b in BASELINE_FLAGS:
        assert f"`{b.flag}`" in committed
    for heading in (
        "## The phases",
        "## Troubleshooting",
        "dataset.data_dir: missing",
        "--cfg job",
        "--help",
    ):
        assert heading in committed
    assert "MIGRATION.md" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
