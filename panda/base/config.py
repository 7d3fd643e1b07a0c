"""Building objects from Hydra configs, the project's config groups and keys, and checks of plain values.

A key that no config of the project defines is refused (:func:`check_known_keys`), so a misspelt
one (``+rank.part=16``) is not silently ignored: the known keys of a primary config (``train``,
``evaluate``) are its own and the union of those every option of its groups defines (with their
packages: ``conf/model/solver/pgd.yaml`` defines ``model.solver.*``, a ``# @package _global_``
file its keys as written). Below a key that some option sets to a plain value or ``null`` (an
open node such as ``gen.net.arch``), any key is accepted.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from panda.base.errors import ConfigError, PandaError, WeightsError
from panda.base.resources import cache_dir, config_dir


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


def groups(config_name: str) -> list[str]:
    """The config groups in the defaults list of the primary config ``config_name`` (``hydra`` aside)."""
    defaults = OmegaConf.to_container(OmegaConf.load(config_dir() / f"{config_name}.yaml")).get("defaults", [])
    names = [str(key).split()[-1].split("@")[0] for entry in defaults if isinstance(entry, dict) for key in entry]
    return [name for name in names if name != "hydra"]


@cache
def known_keys(config_name: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(keys, open keys)`` of the primary config ``config_name`` and every option of its groups."""
    keys: set[str] = set()
    leaves: set[str] = set()
    sources = [(config_dir() / f"{config_name}.yaml", "")]
    for group in groups(config_name):
        for path in sorted((config_dir() / group).rglob("*.yaml")):
            sources.append((path, path.parent.relative_to(config_dir()).as_posix().replace("/", ".")))
    for path, package in sources:
        header = re.search(r"^#\s*@package\s+(\S+)", path.read_text(), re.MULTILINE)
        if header:
            package = "" if header.group(1) == "_global_" else header.group(1).replace("_group_", package)
        parts = package.split(".") if package else []
        keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(node, dict):
            node.pop("defaults", None)
        _collect(node, package, keys, leaves)
    return frozenset(keys), frozenset(leaves)


def unknown_keys(names: Iterable[str], config_name: str) -> list[str]:
    """One message per key of ``names`` that the configs of ``config_name`` do not define, naming the closest."""
    keys, leaves = known_keys(config_name)
    messages = []
    for name in names:
        parts = name.split(".")
        if name in keys or any(".".join(parts[:i]) in leaves for i in range(1, len(parts))):
            continue
        close = difflib.get_close_matches(name, keys, n=1)
        messages.append(f"unknown config key {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    return messages


def check_known_keys(cfg: DictConfig, config_name: str) -> None:
    """A :class:`ConfigError` naming every key of the composed ``cfg`` that no config of ``config_name`` defines."""
    names = list(_flatten(OmegaConf.to_container(cfg, resolve=False), ""))
    messages = unknown_keys(names, config_name)
    if messages:
        raise ConfigError("; ".join(messages))


def check_overrides(overrides: Iterable[str], config_name: str) -> None:
    """A :class:`ConfigError` for a command-line override of ``config_name`` that names an option its group lacks
    (``gen=<unknown>``) or an unknown key (``rank.part=16``), before Hydra composes the config."""
    messages = []
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue  # Hydra's own flags (-m, --cfg job, ...) and deletions (~key)
        key, value = override.split("=", 1)
        key = key.lstrip("+~")
        if key.split(".")[0].split("/")[0] == "hydra":
            continue
        if (config_dir() / key).is_dir():
            found = options(key)
            for choice in value.split(","):
                if re.fullmatch(r"[\w.-]+", choice) and choice != "null" and choice not in found:
                    messages.append(f"Could not find '{key}/{choice}': available {key} configs: {', '.join(found)}")
        else:
            messages += unknown_keys([key], config_name)
    if messages:
        raise ConfigError("; ".join(messages))


def _collect(node: Any, prefix: str, keys: set[str], leaves: set[str]) -> None:
    """Add the dotted keys of ``node`` (under ``prefix``) to ``keys``, those of plain values to ``leaves``."""
    if not isinstance(node, dict):
        if prefix:
            leaves.add(prefix)
        return
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        keys.add(name)
        _collect(value, name, keys, leaves)


def _flatten(node: Any, prefix: str) -> Iterable[str]:
    """The dotted keys of the mappings in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield name
            yield from _flatten(value, name)


def with_cache_hint(error: WeightsError) -> WeightsError:
    """``error`` saying, for each cached download it names, how to download that file again."""
    root = re.escape(str(cache_dir()))
    named = dict.fromkeys(m.rstrip(".,;:)'\"") for m in re.findall(rf"{root}/[0-9a-f]{{16}}/[^\s,;:)'\"]+", str(error)))
    hints = [f"{p} is a cached download: delete it to download it again" for p in named if Path(p).is_file()]
    return WeightsError("; ".join([str(error), *hints])) if hints else error
