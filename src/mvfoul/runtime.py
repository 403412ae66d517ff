"""Process-level set-up shared by the entry points: where the run's files go, and a quiet log."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path


def hydra_run_dir() -> Path:
    """The run folder Hydra made for this job (or ./outputs/manual outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    path = Path("outputs") / "manual" / time.strftime("%Y-%m-%d_%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _drop_adverts(record: logging.LogRecord) -> bool:
    """Lightning logs a product tip at INFO on every Trainer; nothing a user can act on."""
    return not str(record.msg).startswith("💡 Tip")


def quiet_library_noise() -> None:
    """One clean console log: each library message once, in Hydra's format, no known noise."""
    # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Epoch scores are reduced across ranks by their own metrics: sync_dist=False is on purpose.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(train|val)/")
    # A resumed run writes into its own checkpoints/ (any other run's folder is refused earlier).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning's own console handler would print every line twice beside Hydra's root handler.
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                lightning_logger.removeHandler(handler)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_adverts)


def hydra_quoted(path: str, key: str = "ckpt_path") -> str:
    """``path`` as the value of a Hydra override: bare where Hydra's grammar reads it back as
    exactly ``path``, else single-quoted (with escapes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        # "${" would be resolved as an interpolation later, however the parser returns it.
        parsed = OverridesParser.create().parse_override(f"{key}={path}").value()
        if "${" not in path and parsed == path:
            return path
    except Exception:  # noqa: BLE001 - any parse problem means: quote it
        pass
    escaped = path.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"
