"""What every StyleGAN (1, 2 and 3) shares: z -> w (mapping, truncation, class) -> synthesis.

:class:`StyleGANGenerator` wraps a network with ``mapping``, ``synthesis(ws) -> images``, ``z_dim``
and ``c_dim``; latent-space baselines edit its ``w`` (:meth:`StyleGANGenerator.codes`). Every
layer lies inside ``synthesis``, whose ``resume(path, x, ws, ...)`` runs the modules after one.
:func:`read_official` reads NVIDIA's StyleGAN2-ADA / StyleGAN3 pickles for :func:`build_or_load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator, ResumeState, build_or_load
from panda.generators.pickles import load_network

NOISE_MODES = ("const", "none")
OFFICIAL = "an official pickle"


def read_official(path: Path, _arch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The constructor kwargs and state dict of ``G_ema`` in an official pickle (its own kwargs, not ``arch``)."""
    official = load_network(path)
    return official.init_kwargs, official.state_dict


def set_noise_mode(net: nn.Module, noise_mode: str) -> None:
    """Set the noise of every synthesis layer to ``const`` or ``none``."""
    if noise_mode not in NOISE_MODES:
        raise ConfigError(f"noise_mode must be one of {NOISE_MODES} (deterministic), got '{noise_mode}'")
    for module in net.modules():
        if hasattr(module, "noise_mode"):
            module.noise_mode = noise_mode


class StyleGANGenerator(FeatureGenerator):
    """A style-based generator: ``net.mapping`` gives ``ws``, ``net.synthesis(ws)`` the images.

    Args:
        net: the network (``mapping(z, c, psi, cutoff) -> ws`` unless :meth:`ws` is overridden).
        truncation_psi: truncation towards ``w_avg`` (1: none).
        truncation_cutoff: apply truncation to the first this many ws only (null: all).
        class_index: the class of a conditional model (``c_dim > 0``).
        noise_mode: ``const`` (the stored noise) or ``none``; None for networks without noise inputs.
    """

    style_based = True
    resume_needs_latents = True

    def __init__(
        self,
        net: nn.Module,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        class_index: int | None = None,
        noise_mode: str | None = None,
    ) -> None:
        super().__init__(net)
        self.truncation_psi, self.truncation_cutoff = truncation_psi, truncation_cutoff
        self.class_index = class_index
        if net.c_dim and class_index is None:
            raise ConfigError(f"this {self.name} generator is conditional (c_dim={net.c_dim}): set gen.class_index")
        if noise_mode is not None:
            set_noise_mode(net, noise_mode)

    def labels(self, n: int) -> Tensor | None:
        """One-hot class labels ``[n, c_dim]`` for a conditional model, else None."""
        if not self.net.c_dim:
            return None
        return F.one_hot(torch.full((n,), self.class_index), self.net.c_dim).float().to(self.device)

    def ws(self, latents: Tensor) -> Tensor:
        """``w [B, num_ws, w_dim]`` for ``z`` latents, truncated as configured."""
        return self.net.mapping(latents, self.labels(len(latents)), self.truncation_psi, self.truncation_cutoff)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net.synthesis(self.ws(latents))

    def codes(self, latents: Tensor) -> Tensor:
        return self.ws(latents)

    def _latent_values(self, latents: Tensor) -> dict[str, Tensor]:
        return {"ws": self.ws(latents)}

    def _resume(self, features: Tensor, state: ResumeState) -> Tensor:
        """``net.synthesis.resume(path, features, ws, **captured)``: the images from the output ``features``
        of its module ``path`` (empty: the synthesis network's own output, the images)."""
        values = dict(state.values)
        path = state.layer.removeprefix("synthesis").removeprefix(".")
        return self.net.synthesis.resume(path, features, values.pop("ws"), **values)

    def synthesize(self, codes: Tensor) -> Tensor:
        return self.net.synthesis(codes)

    def code_layers(self) -> list[str]:
        """The style affines of the convolutions (not of the ToRGB layers)."""
        return [path for path in self.style_layers() if not self._is_torgb(path)]

    def style_layers(self) -> list[str]:
        """Every synthesis layer's style affine (StyleGAN3's input transform is not a style)."""
        paths = (path for path, _ in self.net.named_modules())
        return [
            p for p in paths if p.startswith("synthesis.") and p.endswith(".affine") and p != "synthesis.input.affine"
        ]

    def _is_torgb(self, affine: str) -> bool:
        return bool(getattr(self.net.get_submodule(affine.removesuffix(".affine")), "is_torgb", False))


class OfficialStyleGAN(StyleGANGenerator):
    """A StyleGAN2-ADA or StyleGAN3 generator (:attr:`network`) split at named synthesis layers.

    Args:
        weights: path or URL of an official pickle (``G_ema`` is used).
        random_init: build ``arch`` with random weights instead (smoke runs).
        arch: the official ``_init_kwargs`` (used with ``random_init``).
        truncation_psi: truncation towards ``w_avg`` (1: none).
        truncation_cutoff: apply truncation to the first this many ws only (null: all).
        class_index: the class of a conditional model (``c_dim > 0``).
        noise_mode: ``const`` (the stored noise) or ``none``; StyleGAN3 has no noise inputs.
    """

    network: type[nn.Module]  # the project's code of the official network

    def __init__(
        self,
        weights: str | None = None,
        random_init: bool = False,
        arch: dict[str, Any] | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        class_index: int | None = None,
        noise_mode: str | None = None,
    ) -> None:
        net = build_or_load(self.name, self.network, weights, random_init, arch, read_official, OFFICIAL)
        super().__init__(net, truncation_psi, truncation_cutoff, class_index, noise_mode)
