"""Load a configured generator by name: ``load_generator("stylegan2_ffhq", weights="/path/ffhq.pkl")``.

The returned :class:`FeatureGenerator` turns latents into images (``gen(z)``), features at a
layer (``gen.features(z, layer)``) and images from (edited) features (``gen.resume(f, layer, z)``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from panda.base.config import compose, instantiate
from panda.base.config import options as group_options
from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator


def gen_config(name: str) -> DictConfig:
    """The ``gen`` node of ``python train.py gen=<name>``, composed by Hydra (``conf/gen/<name>.yaml`` over the
    configs its defaults list extends)."""
    known = group_options("gen")
    if name not in known:
        raise ConfigError(f"unknown generator '{name}'; configured generators: {', '.join(known)}")
    return compose("train", [f"gen={name}"]).gen


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
    return instantiate(gen.net)
