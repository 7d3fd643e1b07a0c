"""SeFa (Shen & Zhou, 2021): closed-form directions from the weights that read the latent code.

With ``M`` ``[D, M_out]`` the weights of those layers (transposed, concatenated over layers,
columns normalised), the directions are the leading eigenvectors of ``M M^T``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.roir.baselines.base import Baseline, first_codes


def code_weight(module: nn.Module, dim: int) -> Tensor:
    """The weight of ``module`` as ``[dim, outputs]``: how each of the first ``dim`` inputs feeds every output."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise ConfigError(f"SeFa needs a layer with a weight; {type(module).__name__} has none")
    if isinstance(module, nn.ConvTranspose2d):  # [in, out, kh, kw]
        matrix = weight.flatten(1)
    elif weight.dim() == 4:  # convolution: [out, in, kh, kw]
        matrix = weight.transpose(0, 1).flatten(1)
    elif weight.dim() == 2:  # linear: [out, in]
        matrix = weight.T
    else:
        raise ConfigError(f"SeFa cannot read the code weights of {type(module).__name__} {tuple(weight.shape)}")
    if matrix.shape[0] < dim:
        raise ConfigError(f"{type(module).__name__} reads {matrix.shape[0]} inputs, fewer than the code's {dim}")
    return matrix[:dim].detach().double()


def sefa_directions(weights: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``[D]`` (descending) and eigenvectors as rows ``[D, D]`` of ``M M^T`` for ``weights`` ``[D, *]``."""
    matrix = torch.cat(weights, dim=1)
    matrix = matrix / matrix.norm(dim=0, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(matrix @ matrix.T)
    return values.flip(0), vectors.flip(1).T


class SeFa(Baseline):
    """Args: gen; layers: module paths of the code-reading layers (``None``: the generator's own choice)."""

    name = "sefa"

    def __init__(self, gen: FeatureGenerator, layers: list[str] | None) -> None:
        super().__init__(gen)
        self.layers = list(layers) if layers else gen.code_layers()
        for layer in self.layers:
            try:
                gen.net.get_submodule(layer)
            except AttributeError:
                raise ConfigError(f"SeFa layer '{layer}' is not a module of generator '{gen.name}'") from None

    def find(self, latents: Tensor, masks: Tensor | None) -> Tensor:
        with torch.inference_mode():
            dim = first_codes(self.gen.codes(latents[:1])).shape[1]
        weights = [code_weight(self.gen.net.get_submodule(layer), dim) for layer in self.layers]
        return sefa_directions(weights)[1].float()
