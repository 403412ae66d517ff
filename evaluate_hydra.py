"""Evaluate a checkpoint on a split: predictions JSON, and metrics and reports where labelled.

    python evaluate_hydra.py ckpt_path=outputs/quick_test/<run>/checkpoints/last.ckpt split=test
    python evaluate_hydra.py ckpt_path=best.ckpt split=chall dataset.data_dir=/data/mvfouls

The checkpoint carries its training config; any key of it can be overridden here.
"""

import hydra
from omegaconf import DictConfig

import mvfoul.config  # noqa: F401  (registers the schemas before Hydra composes)
from mvfoul.cli import run_hydra_app, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from mvfoul.evaluation.evaluate import evaluate_command

    def evaluate(cfg: DictConfig) -> float | None:
        result = evaluate_command(cfg)
        return None if result.metrics is None else result.metrics["leaderboard_value"]

    return run_task(evaluate, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
