"""The migration path: ``training/train.py`` translates the old trainer's or the VARS baseline's
flags (:mod:`.flags`, :mod:`.vars_baseline`, :mod:`.cli`); MIGRATION.md is :mod:`.markdown`'s."""
