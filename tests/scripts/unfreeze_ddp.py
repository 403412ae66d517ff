"""Trains quick_test with gradual unfreezing on two CPU processes through mvfoul's own stack (the
DataModule, the module and build_trainer's callbacks) and writes each rank's parameter digest at
every epoch start and at the end. Run by tests/test_distributed.py; Lightning's DDP launcher runs it
again for rank 1.

    python tests/scripts/unfreeze_ddp.py OUT_DIR key=value ...
"""

import hashlib
import sys
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mvfoul.config  # noqa: F401
from mvfoul.data.datamodule import MultiViewDataModule
from mvfoul.paths import CONF_DIR
from mvfoul.rules import validate_config, with_schema
from mvfoul.training.module import MultiViewFoulModule
from mvfoul.training.trainer import build_trainer

out = Path(sys.argv[1])
overrides = sys.argv[2:]


class Digests(L.Callback):
    def _write(self, trainer, module, when):
        digest = hashlib.sha256()
        for name, p in sorted(module.named_parameters()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().numpy().tobytes())
        with open(out / f"rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{when} {digest.hexdigest()}\n")

    def on_train_epoch_start(self, trainer, module):
        self._write(trainer, module, f"epoch{trainer.current_epoch}")

    def on_train_end(self, trainer, module):
        self._write(trainer, module, "end")


with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = with_schema(compose("quick_test", overrides=overrides))
resolved = validate_config(cfg)
cfg.dataset.mean, cfg.dataset.std = list(resolved.mean), list(resolved.std)
config = OmegaConf.to_container(cfg, resolve=True)
L.seed_everything(cfg.system.seed, workers=True, verbose=False)
datamodule = MultiViewDataModule(
    cfg.dataset, resolved.frame_indices, cfg.sampling, seed=cfg.system.seed
)
module = MultiViewFoulModule(config)
trainer = build_trainer(cfg, out / "run", config, history=Digests())
trainer.fit(module, datamodule=datamodule)
