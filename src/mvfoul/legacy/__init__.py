"""The migration path: ``training/train.py`` (:mod:`.cli`) takes the old trainer's flags
(:mod:`.flags`, derived from the schema) or the VARS baseline's (:mod:`.vars_baseline`), prints
the equivalent Hydra command and runs it; MIGRATION.md comes from the same tables (:mod:`.markdown`)."""
