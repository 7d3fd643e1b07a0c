"""Where panda's files are: its Hydra configs (``conf/`` of a source checkout, or the copy a wheel installs as
``panda/conf``), the user's own configs (``$PANDA_CONFIG_PATH``) and the cache of downloads and landmarks."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from panda.base.errors import ConfigError

CONFIG_PATH = "PANDA_CONFIG_PATH"


def config_dir() -> Path:
    """The directory of panda's configs (``gen/``, ``edits/``, ``model/``, ...): Hydra's ``config_path`` of
    ``panda-train`` / ``panda-evaluate`` (``train.py`` / ``evaluate.py``) and of its compose API in panda.

    A wheel ships them inside the package, as ``panda/conf`` (pyproject.toml maps the top-level
    ``conf/`` there); a source checkout (an editable install, or ``PYTHONPATH``) has them in ``conf/``
    beside ``panda/``.
    """
    installed = Path(str(files("panda"))) / "conf"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def user_config_dirs() -> list[Path]:
    """The directories of the user's own configs (``gen/my_gan.yaml``, ...): ``$PANDA_CONFIG_PATH``, a list separated
    by ``os.pathsep``, searched after panda's own (which win on a name both hold) by every command and by panda's
    compose API (``hydra_plugins.panda_searchpath``). A :class:`ConfigError` names one that is not a directory."""
    found = [Path(entry).expanduser() for entry in os.environ.get(CONFIG_PATH, "").split(os.pathsep) if entry]
    for directory in found:
        if not directory.is_dir():
            raise ConfigError(f"{CONFIG_PATH} names {directory}, which is not a directory of configs")
    return [directory.resolve() for directory in found]


def cache_dir() -> Path:
    """The download cache: ``$PANDA_CACHE`` or ``~/.cache/panda``."""
    return Path(os.environ.get("PANDA_CACHE") or Path.home() / ".cache" / "panda").expanduser()
