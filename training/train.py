"""Deprecated: the old trainer's command line, kept working during the migration to Hydra.

    python training/train.py --data_dir /data/mvfouls --backbone r3d_18 --max_epochs 50
    python training/train.py --from-vars-baseline --path /data/mvfouls --pre_model r3d_18
    python training/train.py --write-config my_run --data_dir /data/mvfouls ...   # keep it for good

Prints the equivalent `python train_hydra.py ...` command, then runs exactly that. Use
train_hydra.py directly; MIGRATION.md maps every old flag (the logic: src/mvfoul/legacy/).
"""

from mvfoul.legacy.cli import run

if __name__ == "__main__":
    run()
