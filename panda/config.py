"""Building objects from Hydra configs, and the project's config groups."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from panda.errors import PandaError
from panda.resources import config_dir


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a :class:`PandaError` raised while building (bad
    input: an unknown layer, a rank out of range, missing weights) surfaces as itself rather than
    wrapped in Hydra's ``InstantiationException``."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, PandaError):
            raise error.__cause__ from None
        raise


def options(group: str) -> list[str]:
    """The options of config group ``group`` (``gen``: ``biggan``, ``dcgan_faces``, ...), sorted."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))
