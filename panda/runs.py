"""A finished training run brought back to life: its factors and the generator they belong to.

The generator is rebuilt from the training config stored in ``factors.pt`` (its ``gen.net``
node, instantiated with Hydra), so the uses of the factors (editing, localisation, refinement)
need only the run directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from panda.config import instantiate
from panda.data import Stream, batch_generator, layer_features
from panda.errors import ConfigError
from panda.factorization import normalized_parts
from panda.generators.base import FeatureGenerator
from panda.io import load_factors


@dataclass
class Run:
    """Factors ``A`` ``[C, R_C]``, ``P`` ``[S, R_S]`` learnt at ``layer`` of ``generator``."""

    A: Tensor
    P: Tensor
    generator: FeatureGenerator
    name: str
    layer: str
    feature_shape: tuple[int, int, int]

    @property
    def parts(self) -> int:
        return self.P.shape[1]

    @property
    def appearances(self) -> int:
        return self.A.shape[1]

    @property
    def hw(self) -> tuple[int, int]:
        return self.feature_shape[1], self.feature_shape[2]

    def part_maps(self) -> Tensor:
        """The parts as ``[R_S, H, W]`` maps, each min-max rescaled to ``[0, 1]``."""
        return normalized_parts(self.P, *self.hw)

    def latents(self, seed: int, indices: Sequence[int]) -> Tensor:
        """Latents of the numbered evaluation samples: sample ``i`` is the same whatever else is asked for."""
        return torch.cat(
            [self.generator.sample_latents(1, batch_generator(seed, Stream.SAMPLES, int(i))) for i in indices]
        )

    def features(self, latents: Tensor) -> Tensor:
        """Feature maps ``[B, C, H, W]`` of ``latents`` at the run's layer."""
        return layer_features(self.generator, self.layer, latents)

    def images(self, features: Tensor, latents: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` from (possibly edited) features at the run's layer.

        ``latents`` are those the features came from: style-based generators need them after the layer.
        """
        device = self.generator.device
        with torch.inference_mode():
            return self.generator.resume(features.to(device), self.layer, latents.to(device)).cpu()

    def check_index(self, value: int, kind: str) -> int:
        """``value`` as a valid part (``kind='part'``) or appearance index; a :class:`ConfigError` otherwise."""
        limit = self.parts if kind == "part" else self.appearances
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            rank = "R_S" if kind == "part" else "R_C"
            raise ConfigError(f"{kind} index {value!r} is out of range: this run has {rank}={limit}, so 0..{limit - 1}")
        return value


def load_run(path: str | Path, generator: str | None = None, layer: str | None = None) -> Run:
    """Load the factors of a training run directory (or ``factors.pt``) and rebuild its generator.

    ``generator`` / ``layer``, when given, are what the caller expects; factors learnt for
    another generator or layer raise a :class:`ConfigError`.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run directory {path} does not exist: pass run=<a training run directory with factors.pt>")
    factors = load_factors(path)
    for label, expected, found in (("generator", generator, factors["generator"]), ("layer", layer, factors["layer"])):
        if expected is not None and expected != found:
            raise ConfigError(
                f"factors in {path} were learnt for {label} '{found}', but {label} '{expected}' is configured"
            )
    if not factors.get("config"):
        raise ConfigError(f"factors in {path} carry no training config, so their generator cannot be rebuilt")
    gen_cfg = OmegaConf.create(factors["config"]).get("gen")
    if gen_cfg is None or "net" not in gen_cfg:
        raise ConfigError(f"the training config stored in {path} has no gen.net node to rebuild the generator from")
    net = instantiate(gen_cfg.net)
    shape = net.check_layer(factors["layer"])
    if list(shape) != list(factors["feature_shape"]):
        raise ConfigError(
            f"factors in {path} were learnt on features {tuple(factors['feature_shape'])} at layer "
            f"'{factors['layer']}', but the rebuilt generator gives {shape} there"
        )
    return Run(
        A=factors["A"].float(),
        P=factors["P"].float(),
        generator=net,
        name=factors["generator"],
        layer=factors["layer"],
        feature_shape=shape,
    )
