"""Train a multi-view foul recognition model.

    python train_hydra.py --config-name quick_test
    python train_hydra.py dataset.data_dir=/data/mvfouls model=resnet3d
    python train_hydra.py --help

Configuration lives in conf/; the code in src/mvfoul/.
"""

import hydra
from omegaconf import DictConfig

import mvfoul.config  # noqa: F401  (registers the schemas before Hydra composes)
from mvfoul.cli import run_hydra_app, run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from mvfoul.train import train

    return run_task(train, cfg)


if __name__ == "__main__":
    run_hydra_app(main)
