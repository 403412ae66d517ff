"""Where mvfoul's own files live.

mvfoul runs from its repository checkout (``pip install -e .``): the configs are the user's API
and stay editable in ``conf/`` at the project root, next to the entry points.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
PRESETS_DIR = CONF_DIR / "presets"


def default_cache_dir() -> Path:
    """Root of mvfoul's caches: ``$MVFOUL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvfoul``."""
    explicit = os.environ.get("MVFOUL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mvfoul"


# A user's own named configs (kept runs, converted command lines) live here, outside the
# tracked presets; --config-name finds them too.
USER_CONFIGS_DIR = CONF_DIR / "user"
