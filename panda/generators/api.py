"""Load a configured generator by name: ``load_generator("stylegan2_ffhq", weights="/path/ffhq.pkl")``.

The returned :class:`FeatureGenerator` turns latents into images (``gen(z)``), features at a
layer (``gen.features(z, layer)``) and images from (edited) features (``gen.resume(f, layer, z)``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from panda.base.config import instantiate
from panda.base.errors import ConfigError
from panda.base.resources import config_dir
from panda.generators.base import FeatureGenerator

SELF = "_self_"


def gen_config(name: str) -> DictConfig:
    """The ``gen`` node of ``conf/gen/<name>.yaml`` as Hydra composes it (``python train.py gen=<name>``).

    A config's defaults list names the configs of the group it extends (merged in order) and
    ``_self_`` (its own values; last when not listed).
    """
    directory = config_dir() / "gen"
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"unknown generator '{name}'; configured generators: {known}")
    own = OmegaConf.load(path)
    entries = list(own.pop("defaults", []))
    if SELF not in entries:
        entries.append(SELF)
    merged = OmegaConf.create()
    for entry in entries:
        if not isinstance(entry, str):
            raise ConfigError(f"{path}: defaults entry {entry!r} is not a gen config name or {SELF}")
        merged = OmegaConf.merge(merged, own if entry == SELF else gen_config(entry))
    return merged


def load_generator(
    name: str, weights: str | None = None, random_init: bool = False, **options: Any
) -> FeatureGenerator:
    """The generator of ``conf/gen/<name>.yaml`` with ``weights`` (path or URL; None: the config's).

    ``options`` override fields of its ``net`` (``truncation_psi=0.7``, ``class_name="tench"``, ...).
    """
    gen = gen_config(name)
    gen.random_init = random_init
    if weights is not None:
        gen.weights = weights
    for key, value in options.items():
        if key not in gen.net:
            raise ConfigError(f"generator '{name}' has no option '{key}'; options: {list(gen.net)}")
        gen.net[key] = value
    return instantiate(OmegaConf.create({"gen": gen}).gen.net)
