"""The user's own configs (``$PANDA_CONFIG_PATH``, :func:`panda.base.resources.user_config_dirs`) on Hydra's search
path, after panda's: ``python train.py gen=my_gan`` with ``<dir>/gen/my_gan.yaml``. Hydra finds search-path plugins
only in the ``hydra_plugins`` package, hence this module; it applies to the commands and to panda's compose API."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from panda.base.resources import user_config_dirs


class UserConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for directory in user_config_dirs():
            search_path.append(provider="panda-user", path=f"file://{directory}")
