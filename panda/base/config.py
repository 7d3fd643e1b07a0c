"""Building objects from Hydra configs, composing panda's configs with Hydra's compose API, and checks of plain values.

The command line is checked by Hydra itself before a command starts (:func:`check_overrides`): in struct mode
an override of a key that no config defines fails, and so does an option that a group lacks; an addition
(``+key=value``, ``++key=value``) must name a key the composed config has, so that a misspelt one
(``+rank.part=16``) is refused rather than silently added. Hydra's error becomes one line, naming the closest key.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobRuntime
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from panda.base.errors import ConfigError, PandaError, WeightsError
from panda.base.resources import cache_dir, config_dir, user_config_dirs

MAX_JOBS = 16  # a sweep composed job by job before it starts; a larger one value by value


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
            raise with_cache_hint(cause) from None
        if isinstance(cause, PandaError):
            raise cause from None
        raise


def finite_number(label: str, value: Any) -> float:
    """``value`` as a float; a :class:`ConfigError` naming ``label`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label}={value!r} must be a finite number")
    return float(value)


def integer(label: str, value: Any) -> int:
    """``value``; a :class:`ConfigError` naming ``label`` unless it is an integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{label}={value!r} must be an integer")
    return value


def positive_int(label: str, value: Any) -> int:
    """``value``; a :class:`ConfigError` naming ``label`` unless it is an integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label}={value!r} must be an integer >= 1")
    return value


@contextmanager
def project_hydra() -> Iterator[None]:
    """Hydra initialised on panda's configs (:func:`config_dir`) for its compose API; afterwards GlobalHydra and
    the job name are as found, also inside a running Hydra app (``evaluate.py`` opening a run)."""
    found = GlobalHydra.instance()
    running = found.hydra
    found.clear()
    try:
        with initialize_config_dir(str(config_dir()), job_name=JobRuntime.instance().get("name"), version_base="1.3"):
            yield
    finally:
        found.hydra = running
        GlobalHydra.set_instance(found)


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``config_name`` (``train``, ``evaluate``) with ``overrides`` as Hydra composes it, less ``hydra``."""
    with project_hydra():
        return hydra.compose(config_name, overrides=list(overrides))


def options(group: str) -> list[str]:
    """The options of config group ``group`` (``gen``: ``biggan``, ``dcgan_faces``, ...), as Hydra lists them."""
    with project_hydra():
        return GlobalHydra.instance().config_loader().get_group_options(group)


def check_overrides(overrides: Sequence[str], config_name: str, multirun: bool = False) -> None:
    """A one-line :class:`ConfigError` unless Hydra composes ``config_name`` with the command line's ``overrides``
    (each job of a ``multirun`` sweep) and each addition of a key (``+key=value``) names one the config has; one for
    a ``$PANDA_CONFIG_PATH`` entry that is not a directory."""
    user_config_dirs()
    if not overrides:
        return  # the project's configs compose (tests/test_configs.py)
    try:
        with project_hydra():
            loader = GlobalHydra.instance().config_loader()
            choices = []
            for override in OverridesParser.create(config_loader=loader).parse_overrides(list(overrides)):
                sweep = list(override.sweep_string_iterator()) if multirun and override.is_sweep_override() else []
                lines = [f"{override.get_key_element()}={v}" for v in sweep] if sweep else [override.input_line]
                added_key = override.is_add() or override.is_force_add()
                added_key = added_key and not loader.get_group_options(override.key_or_group)
                choices.append([(line, line.lstrip("+") if added_key else line) for line in lines])
            for job in _jobs(choices):
                given, as_overrides = [line for line, _ in job], [plain for _, plain in job]
                hydra.compose(config_name, overrides=given)
                if as_overrides != given:  # an added key must be one an override may set
                    hydra.compose(config_name, overrides=as_overrides)
    except (HydraException, ValueError) as error:  # a group override of null is a ValueError of Hydra's
        raise ConfigError(_one_line(error)) from None


def _jobs(choices: list[list[Any]]) -> Iterator[tuple[Any, ...]]:
    """The jobs to compose for a sweep whose overrides take ``choices``: every job of a small sweep; of a large one
    (more than :data:`MAX_JOBS`), each value of each override with the others at their first (linear, not a
    product)."""
    if math.prod(len(c) for c in choices) <= MAX_JOBS:
        yield from itertools.product(*choices)
        return
    first = [c[0] for c in choices]
    yield tuple(first)
    for index, values in enumerate(choices):
        for value in values[1:]:
            yield (*first[:index], value, *first[index + 1 :])


def _one_line(error: Exception) -> str:
    """Hydra's (multi-line) composition ``error`` as one line; an unknown key names the closest one."""
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group = error.missing_cfg_file.rpartition("/")[0]
        return f"Could not find '{error.missing_cfg_file}': available {group} configs: {', '.join(error.options)}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(cause.parent_node, DictConfig):
        close = difflib.get_close_matches(str(cause.key), [str(k) for k in cause.parent_node], n=1)
        parent = cause.full_key.rpartition(".")[0]
        closest = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
        return f"unknown config key {cause.full_key}{closest}"
    return " ".join(str(error).split())


def with_cache_hint(error: WeightsError) -> WeightsError:
    """``error`` saying, for each cached download it names, how to download that file again."""
    root = re.escape(str(cache_dir()))
    named = dict.fromkeys(m.rstrip(".,;:)'\"") for m in re.findall(rf"{root}/[0-9a-f]{{16}}/[^\s,;:)'\"]+", str(error)))
    hints = [f"{p} is a cached download: delete it to download it again" for p in named if Path(p).is_file()]
    return WeightsError("; ".join([str(error), *hints])) if hints else error
