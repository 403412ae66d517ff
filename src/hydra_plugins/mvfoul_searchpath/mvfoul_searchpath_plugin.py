"""Lets ``--config-name quick_test`` find the presets in ``conf/presets/``.

Hydra locates the primary config before it reads ``hydra.searchpath`` from it, so that key
cannot point at the presets; a SearchPathPlugin runs earlier. Hydra discovers it by scanning
the ``hydra_plugins`` namespace package.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from mvfoul.paths import PRESETS_DIR, USER_CONFIGS_DIR


class MvfoulSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Appended, so the main conf/ dir keeps precedence for group configs.
        search_path.append(provider="mvfoul-presets", path=f"file://{PRESETS_DIR}")
        search_path.append(provider="mvfoul-user-configs", path=f"file://{USER_CONFIGS_DIR}")
