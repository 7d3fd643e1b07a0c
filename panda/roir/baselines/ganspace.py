"""GANSpace (Härkönen et al., 2020): principal components of early activations as edit directions.

Style-based generators: PCA of ``w`` itself. Others: PCA of the activations at an early layer,
whose coordinates are regressed back to the latent codes by least squares, so component ``k``
becomes the code direction that moves along it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from panda.generators.base import FeatureGenerator
from panda.method.data import Stream, batch_generator
from panda.roir.baselines.base import Baseline, first_codes, unit_rows

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Tanh)


def first_activation(gen: FeatureGenerator) -> str:
    """The first feature layer that is a non-linearity (earlier ones are linear in ``z``, where PCA
    would only re-derive SeFa's factorisation), else the first feature layer."""
    layers = list(gen.layer_shapes())
    activations = [path for path in layers if isinstance(gen.net.get_submodule(path), ACTIVATIONS)]
    return (activations or layers)[0]


class GANSpace(Baseline):
    """Args:
    gen: the generator.
    layer: module path of the activations; ``"auto"``: ``w`` for style-based generators, else
        :func:`first_activation`; ``None``: PCA of the codes.
    samples: latents drawn (from their own stream) for the PCA.
    components: principal components kept (capped by the data).
    seed: seed of the PCA's samples.
    batch_size: samples per forward pass.
    """

    name = "ganspace"

    def __init__(
        self,
        gen: FeatureGenerator,
        layer: str | None,
        samples: int,
        components: int,
        seed: int,
        batch_size: int,
    ) -> None:
        super().__init__(gen)
        if layer == "auto":
            layer = None if gen.style_based else first_activation(gen)
        elif layer is not None:
            gen.check_layer(layer)
        self.layer, self.samples, self.components, self.seed, self.batch_size = (
            layer,
            samples,
            components,
            seed,
            batch_size,
        )

    def find(self, latents: Tensor, masks: Tensor | None) -> Tensor:
        codes, activations = [], []
        with torch.inference_mode():
            for i, start in enumerate(range(0, self.samples, self.batch_size)):
                size = min(self.batch_size, self.samples - start)
                z = self.gen.sample_latents(size, batch_generator(self.seed, Stream.FIT, i)).to(self.gen.device)
                code = first_codes(self.gen.codes(z))
                codes.append(code)
                activations.append(code if self.layer is None else self.gen.features(z, self.layer).flatten(1))
        codes_, x = torch.cat(codes).double(), torch.cat(activations).double()
        q = min(self.components, codes_.shape[1], *x.shape)  # at most one direction per code dimension
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            _, _, basis = torch.pca_lowrank(x, q=q, center=True, niter=4)  # [F, q], by variance
        if self.layer is None:
            return unit_rows(basis.T).float()
        coordinates = (x - x.mean(0)) @ basis  # [N, q]
        centred = codes_ - codes_.mean(0)
        regression = torch.linalg.lstsq(coordinates, centred).solution  # [q, D]: codes ~ coordinates @ regression
        return unit_rows(regression).float()
