"""Training: the LightningModule, optimisers and schedules, metrics, and the Trainer."""
