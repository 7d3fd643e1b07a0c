"""Building objects from Hydra configs, the project's config groups, and checks of plain values."""

from __future__ import annotations

import math
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from panda.errors import ConfigError, PandaError, WeightsError
from panda.resources import config_dir


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a :class:`PandaError` raised while building (bad
    input: an unknown layer, a rank out of range, missing weights) surfaces as itself rather than
    wrapped in Hydra's ``InstantiationException``; weights that do not load say how to download
    again a cached file among them."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, WeightsError):
            from panda.generators.weights import with_cache_hint  # here: panda.generators imports this module

            raise with_cache_hint(cause) from None
        if isinstance(cause, PandaError):
            raise cause from None
        raise


def options(group: str) -> list[str]:
    """The options of config group ``group`` (``gen``: ``biggan``, ``dcgan_faces``, ...), sorted."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def finite_number(label: str, value: Any) -> float:
    """``value`` as a float; a :class:`ConfigError` naming ``label`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label}={value!r} must be a finite number")
    return float(value)


def positive_int(label: str, value: Any) -> int:
    """``value``; a :class:`ConfigError` naming ``label`` unless it is an integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label}={value!r} must be an integer >= 1")
    return value
