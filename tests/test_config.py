"""The configuration system: composition, schemas, documentation and validation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from conftest import REPO_ROOT, compose_config
from mvfoul import config as C
from mvfoul.errors import ConfigError
from mvfoul.paths import CONF_DIR, PRESETS_DIR
from mvfoul.rules import validate_config, with_schema

GROUP_DIRS = {group: CONF_DIR / group for group in C.GROUP_SCHEMAS}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in GROUP_DIRS[group].glob("*.yaml"))


def quick(*overrides: str):
    return compose_config("quick_test", overrides)


# --- composition ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", sorted(C.GROUP_SCHEMAS))
def test_every_group_option_composes_against_its_schema(group):
    options = group_options(group)
    assert options, f"conf/{group}/ has no options"
    for option in options:
        cfg = compose_config("config", [f"{group}={option}"])
        node = cfg[group]
        schema = C.GROUP_SCHEMAS[group]
        assert issubclass(OmegaConf.get_type(node), schema), (
            f"{group}={option} is not checked by {schema.__name__}"
        )


def test_required_group_options_exist():
    required = {
        "dataset": {"mvfouls", "synthetic"},
        "model": {"mvit", "resnet3d", "mvit_v2_s", "r2plus1d", "mc3", "s3d", "swin3d", "tiny"},
        "training": {"baseline", "aggressive"},
        "loss": {"focal", "ce"},
        "sampling": {"progressive", "none"},
        "freezing": {"progressive", "none"},
        "system": {"single_gpu", "cpu"},
        "experiment": {"default"},
    }
    for group, options in required.items():
        assert options <= set(group_options(group)), group
    assert {"quick_test", "production"} <= {p.stem for p in PRESETS_DIR.glob("*.yaml")}


@pytest.mark.parametrize("preset", ["quick_test", "production"])
def test_presets_compose_by_config_name(preset):
    cfg = compose_config(preset)
    assert cfg.experiment.name == preset


def test_quick_test_is_cpu_sized_and_production_switches_everything_on():
    q = compose_config("quick_test")
    assert (q.dataset.name, q.model.backbone, q.system.accelerator) == ("synthetic", "tiny", "cpu")
    assert q.training.max_epochs == 2
    validate_config(with_schema(q))

    p = compose_config("production")
    assert p.training.max_epochs == 100
    assert p.experiment.use_wandb is True
    assert p.dataset.name == "mvfouls" and OmegaConf.is_missing(p.dataset, "data_dir")
    assert p.sampling.use_class_balanced_sampler and p.sampling.progressive_class_balancing
    assert p.freezing.gradual_finetuning and p.freezing.enable_backbone_lr_boost
    assert p.loss.use_class_weights and p.loss.function == "focal"


# --- documentation -------------------------------------------------------------------------


def _defaults_of(node) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(node))


def test_yaml_defaults_agree_with_schema_defaults():
    """The default option of each group sets exactly the schema's defaults."""
    cfg = OmegaConf.to_container(compose_config("config"))
    schema = _defaults_of(C.MvfoulConfig)
    for group in C.GROUP_SCHEMAS:
        assert cfg[group] == schema[group], group
    synthetic = OmegaConf.to_container(compose_config("config", ["dataset=synthetic"]))["dataset"]
    assert synthetic == _defaults_of(C.SyntheticDatasetConfig)


KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*)$")


# conf/user/ holds the user's own kept or converted configs: generated, not documented by hand.
SHIPPED_YAML = sorted(p for p in CONF_DIR.glob("*/*.yaml") if p.parent.name != "user")


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_key_is_commented_where_it_is_set(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), f"{path}: first line must describe the option"
    undocumented = []
    previous = ""
    for line in lines:
        m = KEY_LINE.match(line)
        if m and m.group(2) != "defaults" and not line.lstrip().startswith("-"):
            is_parent = m.group(3).strip() == ""
            if "#" not in line and not (is_parent or previous.lstrip().startswith("#")):
                undocumented.append(m.group(2))
        previous = line
    assert not undocumented, f"{path}: keys without a comment: {undocumented}"


def test_every_schema_key_has_a_one_line_doc():
    schemas = [*C.GROUP_SCHEMAS.values(), C.SyntheticDatasetConfig, C.SyntheticConfig]
    for schema in schemas:
        for f in dataclasses.fields(schema):
            doc = f.metadata.get("doc", "")
            assert doc and "\n" not in doc, f"{schema.__name__}.{f.name} needs a one-line doc"


@pytest.mark.parametrize(
    "path",
    [p for p in SHIPPED_YAML if p.parent.name in C.GROUP_SCHEMAS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_option_files_hold_only_what_differs_from_their_schema(path: Path):
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    (schema_name, _self) = loaded.pop("defaults")
    schema = (
        C.SyntheticDatasetConfig
        if schema_name == "synthetic_schema"
        else C.GROUP_SCHEMAS[path.parent.name]
    )
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))

    def restated(values: dict, base: dict, prefix: str) -> list[str]:
        same = []
        for name, value in values.items():
            if isinstance(value, dict):
                same += restated(value, base[name], f"{prefix}{name}.")
            elif value == base[name]:
                same.append(f"{prefix}{name}")
        return same

    assert not restated(loaded, defaults, ""), f"{path} restates schema defaults"


def test_the_configuration_reference_is_current():
    from mvfoul.help import REFERENCE_COMMAND, render_reference

    shipped = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert shipped == render_reference(CONF_DIR), (
        f"docs/configuration.md is stale: {REFERENCE_COMMAND}"
    )
    assert "| `training.learning_rate` | float | `0.001` | > 0 |" in shipped
    assert "`model=tiny`: Tiny 3-D CNN" in shipped and "`model.backbone=tiny`" in shipped


def cfg_default_option(group: str) -> str:
    root = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    return next(e[group] for e in root["defaults"] if isinstance(e, dict) and group in e)


# --- validation ----------------------------------------------------------------------------


def problems(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(with_schema(cfg))
    return info.value.problems


def test_type_errors_fail_at_composition_naming_the_key():
    with pytest.raises(Exception) as info:
        quick("training.learning_rate=not_a_number")
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError) and cause.full_key == "training.learning_rate"


def test_every_bad_enum_and_range_is_reported_at_once():
    found = problems(
        quick(
            "training.optimizer=adamx",
            "training.scheduler=linear",
            "loss.function=hinge",
            "model.backbone=resnet50",
            "model.pooling=avg",
            "system.precision=8-bit",
            "training.learning_rate=-1",
            "loss.label_smoothing=1.0",
            "sampling.oversample_factor=0.5",
            "model.dropout_rate=1.5",
        )
    )
    keys = [p.split(":")[0] for p in found]
    assert sorted(keys) == sorted(
        [
            "training.optimizer",
            "training.scheduler",
            "loss.function",
            "model.backbone",
            "model.pooling",
            "system.precision",
            "training.learning_rate",
            "loss.label_smoothing",
            "sampling.oversample_factor",
            "model.dropout_rate",
        ]
    )
    assert any("'adamx' is not one of adamw, adam, sgd" in p for p in found)


def test_missing_data_dir_names_the_key_the_example_and_quick_test():
    (message,) = problems(compose_config("config"))
    assert message.startswith("dataset.data_dir: missing")
    assert "python train_hydra.py dataset.data_dir=" in message
    assert "--config-name quick_test" in message


def test_data_dir_must_exist(tmp_path):
    (message,) = problems(
        compose_config("config", [f"dataset.data_dir={tmp_path / 'nope'}", "system=cpu"])
    )
    assert "dataset.data_dir" in message and "is not a folder" in message


def test_num_frames_is_derived_from_the_window_and_a_mismatch_is_rejected():
    resolved = validate_config(with_schema(quick()))
    assert resolved.num_frames == 8  # quick_test: frames 67..82 at 12.5 fps
    default = validate_config(
        with_schema(quick("dataset.start_frame=63", "dataset.end_frame=87", "dataset.fps=17"))
    )
    assert default.frame_indices == (63, 65, 66, 68, 69, 71, 72, 74, 75, 77, 78, 80, 81, 83, 84, 86)
    (message,) = problems(quick("dataset.num_frames=16"))
    assert (
        message.startswith("dataset.num_frames: 16 disagrees with the window")
        and "give 8 frames" in message
    )


def test_backbone_input_constraints_are_checked_before_training():
    (message,) = problems(quick("model=mvit", "model.pretrained=false"))
    assert message.startswith("model.backbone:")
    assert "16" in message and "224" in message
    ok = quick(
        "model=mvit",
        "model.pretrained=false",
        "dataset.frame_size=224",
        "dataset.start_frame=63",
        "dataset.end_frame=87",
        "dataset.fps=17",
    )
    validate_config(with_schema(ok))


def test_monitor_must_be_a_logged_metric_with_a_sensible_mode():
    (message,) = problems(quick("experiment.monitor=val/sev_accuracy"))
    assert message.startswith("experiment.monitor:") and "val/sev_acc" in message
    (message,) = problems(quick("experiment.monitor=val/loss"))
    assert message.startswith("experiment.mode:") and "mode=min" in message
    validate_config(with_schema(quick("experiment.monitor=val/leaderboard")))
    validate_config(with_schema(quick("experiment.monitor=val/loss", "experiment.mode=min")))


def test_a_saved_config_without_schema_is_still_type_checked():
    plain = OmegaConf.create(OmegaConf.to_container(quick()))
    plain.training.learning_rate = "fast"
    with pytest.raises(ValidationError):
        with_schema(plain)


# --- the seed's defaults --------------------------------------------------------------------------

# Every value the seed's old command line sets (MIGRATION.md, "What changed"), by key.
SEED_VALUES = {
    "dataset.batch_size": 16,
    "model.backbone": "mvit_base_16x4",
    "training.learning_rate": 1e-3,
    "training.head_lr": 1e-3,
    "training.backbone_lr": 1e-4,
    "training.max_epochs": 50,
    "training.optimizer": "adamw",
    "training.scheduler": "cosine",
    "training.weight_decay": 1e-4,
    "training.gradient_clip_val": 1.0,
    "sampling.use_class_balanced_sampler": True,
    "sampling.oversample_factor": 2.0,
    "sampling.progressive_class_balancing": True,
    "freezing.gradual_finetuning": True,
    "freezing.enable_backbone_lr_boost": True,
    "freezing.backbone_lr_ratio_after_half": 0.6,
    "loss.function": "focal",
    "loss.focal_gamma": 2.0,
    "loss.label_smoothing": 0.1,
    "loss.use_class_weights": True,
    "loss.effective_num_beta": 0.99,
    "system.gpus": 1,
    "system.precision": "16-mixed",
    "experiment.save_top_k": 3,
    "experiment.monitor": "val/sev_acc",
    "experiment.log_every_n_steps": 50,
}


def test_the_defaults_hold_the_seeds_value_for_every_key_its_old_command_sets(tmp_path):
    shown = OmegaConf.to_container(compose_config("config", [f"dataset.data_dir={tmp_path}"]))
    for key, value in SEED_VALUES.items():
        group, name = key.split(".")
        assert shown[group][name] == value, key


def test_the_seeds_old_command_is_the_defaults_and_so_is_the_legacy_front_without_flags():
    from mvfoul.legacy.flags import translate_legacy
    from mvfoul.legacy.markdown import SEED_COMMAND

    seed = translate_legacy(SEED_COMMAND).translation.commands[0]
    paths = [
        o
        for o in seed.overrides
        if o.startswith(("dataset.data_dir=", "dataset.train_csv=", "dataset.val_csv="))
    ]
    assert len(paths) == 3 and len(seed.overrides) == len(SEED_VALUES) + 3
    assert OmegaConf.to_container(
        compose_config("config", seed.overrides)
    ) == OmegaConf.to_container(compose_config("config", paths))
    # training/train.py with no flags: no override at all, so exactly train_hydra.py's defaults.
    assert translate_legacy([]).translation.commands[0].overrides == []


def test_on_the_defaults_label_smoothing_switches_itself_off_and_says_so(caplog):
    from mvfoul.train import apply_automatic_changes

    cfg = with_schema(compose_config("config", ["dataset.data_dir=/data"]))
    with caplog.at_level("INFO"):
        changes = apply_automatic_changes(cfg)
    assert (
        changes["loss.label_smoothing"]["configured"] == 0.1
        and changes["loss.label_smoothing"]["effective"] == 0.0
    )
    assert cfg.loss.label_smoothing == 0.0
    assert caplog.text.count("loss.label_smoothing=0.1 switched off") == 1


def test_a_key_added_with_plus_is_refused_like_any_unknown_key():
    found = problems(quick("+training.learnin_rate=0.1", "+dataset.synthetic.sed=1", "+foo=2"))
    assert (
        "training.learnin_rate: unknown key in 'training'; did you mean training.learning_rate?"
        in found
    )
    assert (
        "dataset.synthetic.sed: unknown key in 'dataset.synthetic'; did you mean dataset.synthetic.seed?"
        in found
    )
    assert any(p.startswith("foo: unknown key in 'the root config'") for p in found)


def test_a_cache_dir_that_is_a_file_is_refused_at_startup(tmp_path):
    (tmp_path / "frames").write_text("")
    (message,) = problems(quick(f"dataset.cache_dir={tmp_path / 'frames'}"))
    assert message.startswith("dataset.cache_dir:") and "is a file, not a folder" in message
    (message,) = problems(quick(f"dataset.cache_dir={tmp_path / 'frames' / 'sub'}"))
    assert "lies under" in message
    validate_config(
        with_schema(quick(f"dataset.cache_dir={tmp_path / 'new' / 'cache'}"))
    )  # created when needed


def test_a_config_saved_by_an_earlier_mvfoul_still_loads_and_validates():
    saved = OmegaConf.load(REPO_ROOT / "tests" / "fixtures" / "saved_config_quick_test_older.yaml")
    assert "loggers" not in saved.experiment and "num_threads" not in saved.system
    cfg = with_schema(saved)
    validate_config(cfg)
    assert cfg.experiment.loggers == ["csv", "tensorboard"] and cfg.system.num_threads is None
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(
        with_schema(compose_config("quick_test"))
    )


def test_every_default_satisfies_its_own_declared_choices_and_bounds():
    for schema in [*C.GROUP_SCHEMAS.values(), C.SyntheticDatasetConfig, C.SyntheticConfig]:
        for f in dataclasses.fields(schema):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
            where = f"{schema.__name__}.{f.name}"
            if choices and default is not None:
                values = default if isinstance(default, list) else [default]
                assert all(v in choices for v in values), where
            if bounds and default is not None:
                assert C.within(default, bounds), where  # also parses every bounds text


def test_the_declared_range_and_choices_are_what_startup_checks():
    found = problems(
        quick(
            "training.gamma=1.5",
            "dataset.hflip_prob=-0.1",
            "system.num_threads=0",
            "experiment.loggers=[csv,tensorbord]",
            "training.learning_rate=inf",
        )
    )
    assert "training.gamma: 1.5 is out of range: expected in (0, 1]" in found
    assert "dataset.hflip_prob: -0.1 is out of range: expected in [0, 1]" in found
    assert "system.num_threads: 0 is out of range: expected >= 1 or null" in found
    assert "experiment.loggers: 'tensorbord' is not one of csv, tensorboard, wandb, mlflow" in found
    assert "training.learning_rate: inf is out of range: expected > 0" in found
