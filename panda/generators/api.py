"""Load a configured generator by name: ``load_generator("stylegan2_ffhq", weights="/path/ffhq.pkl")``.

The returned :class:`FeatureGenerator` turns latents into images (``gen(z)``), features at a
layer (``gen.features(z, layer)``) and images from (edited) features (``gen.resume(f, layer, z)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from panda.config import instantiate
from panda.errors import ConfigError
from panda.generators.base import FeatureGenerator

GEN_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "gen"


def load_generator(
    name: str, weights: str | None = None, random_init: bool = False, **options: Any
) -> FeatureGenerator:
    """The generator of ``conf/gen/<name>.yaml`` with ``weights`` (path or URL; None: the config's).

    ``options`` override fields of its ``net`` (``truncation_psi=0.7``, ``class_name="tench"``, ...).
    """
    path = GEN_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in GEN_CONFIGS.glob("*.yaml"))
        raise ConfigError(f"unknown generator '{name}'; configured generators: {known}")
    gen = OmegaConf.load(path)
    gen.random_init = random_init
    if weights is not None:
        gen.weights = weights
    for key, value in options.items():
        if key not in gen.net:
            raise ConfigError(f"generator '{name}' has no option '{key}'; options: {list(gen.net)}")
        gen.net[key] = value
    return instantiate(OmegaConf.create({"gen": gen}).gen.net)
