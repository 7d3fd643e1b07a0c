"""Where panda's files are: its Hydra configs (``conf/`` of a source checkout, or the copy a wheel installs as
``panda/conf``) and the cache of downloads and landmarks."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def config_dir() -> Path:
    """The directory of panda's configs (``gen/``, ``edits/``, ``model/``, ...): Hydra's ``config_path`` of
    ``panda-train`` / ``panda-evaluate`` (``train.py`` / ``evaluate.py``) and of its compose API in panda.

    A wheel ships them inside the package, as ``panda/conf`` (pyproject.toml maps the top-level
    ``conf/`` there); a source checkout (an editable install, or ``PYTHONPATH``) has them in ``conf/``
    beside ``panda/``.
    """
    installed = Path(str(files("panda"))) / "conf"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def cache_dir() -> Path:
    """The download cache: ``$PANDA_CACHE`` or ``~/.cache/panda``."""
    return Path(os.environ.get("PANDA_CACHE") or Path.home() / ".cache" / "panda").expanduser()
