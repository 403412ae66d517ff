"""The migration path: old command lines keep working, and become Hydra configs in one step.

``training/train.py`` (deprecated) takes the old trainer's flags -- one per schema key, derived
from :mod:`mvfoul.config` -- or, after ``--from-vars-baseline``, the official VARS baseline's
flags; it prints the equivalent ``python train_hydra.py ...`` command and runs exactly that.
``--write-config NAME`` keeps the translation as ``conf/user/NAME.yaml``. MIGRATION.md is
generated from the same tables (``python -m mvfoul.legacy --markdown > MIGRATION.md``).

Modules: :mod:`.flags` (the old trainer's flags), :mod:`.vars_baseline` (the baseline's),
:mod:`.overrides` (typed values <-> Hydra overrides), :mod:`.configfile` (``--write-config``),
:mod:`.markdown` (MIGRATION.md), :mod:`.cli` (the script).
"""

from mvfoul.legacy.cli import main, notice, run, translate
from mvfoul.legacy.configfile import config_body, write_config
from mvfoul.legacy.flags import (
    ALIASES,
    DERIVED_FLAGS,
    KEYS,
    OLD_TRAINER_FLAGS,
    LegacyFlagError,
    Request,
    flag_names,
    translate_legacy,
)
from mvfoul.legacy.markdown import migration_markdown, write_migration_md
from mvfoul.legacy.overrides import Command, Translation, make_override, split_command
from mvfoul.legacy.vars_baseline import BASELINE_FLAGS, FIXED_SETTINGS, translate_vars_baseline

__all__ = [
    "ALIASES",
    "BASELINE_FLAGS",
    "Command",
    "DERIVED_FLAGS",
    "FIXED_SETTINGS",
    "KEYS",
    "LegacyFlagError",
    "OLD_TRAINER_FLAGS",
    "Request",
    "Translation",
    "config_body",
    "flag_names",
    "main",
    "make_override",
    "migration_markdown",
    "notice",
    "run",
    "split_command",
    "translate",
    "translate_legacy",
    "translate_vars_baseline",
    "write_config",
    "write_migration_md",
]
