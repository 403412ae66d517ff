"""Where mvfoul's own files live. It runs from its checkout (``pip install -e .``), so the configs,
the user's API, stay editable in ``conf/`` next to the entry points."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
PRESETS_DIR = CONF_DIR / "presets"
# A user's own named configs (kept runs, converted command lines); --config-name finds them too.
USER_CONFIGS_DIR = CONF_DIR / "user"


def default_cache_dir() -> Path:
    """Root of mvfoul's caches: ``$MVFOUL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvfoul``."""
    if os.environ.get("MVFOUL_CACHE_DIR"):
        return Path(os.environ["MVFOUL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mvfoul"
