"""Where panda's Hydra configs are: ``conf/`` of a source checkout, or the copy a wheel installs as ``panda/conf``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_dir() -> Path:
    """The directory of panda's configs (``gen/``, ``edits/``, ``model/``, ...).

    A wheel ships them inside the package, as ``panda/conf`` (pyproject.toml maps the top-level
    ``conf/`` there); a source checkout (an editable install, or ``PYTHONPATH``) has them in ``conf/``
    beside ``panda/``.
    """
    installed = Path(str(files(__package__))) / "conf"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "conf"
