"""Shared fixtures: a run with the real DCGAN face generator and made-up factors (no training)."""

from __future__ import annotations

import pytest
import torch

from panda.factorization import orthonormalize
from panda.generators.dcgan import DCGANFaces
from panda.runs import Run

LAYER, SHAPE = "main.8", (128, 16, 16)


def made_up_factors(parts: int = 8, appearances: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``A`` ``[128, R_C]`` and ``P >= 0`` ``[256, R_S]``; part 0 is zero on the top half."""
    generator = torch.Generator().manual_seed(seed)
    A = orthonormalize(torch.randn(SHAPE[0], appearances, generator=generator))
    P = torch.rand(SHAPE[1] * SHAPE[2], parts, generator=generator) * 0.1
    P.view(16, 16, parts)[:8, :, 0] = 0
    return A, P


@pytest.fixture(scope="session")
def dcgan() -> DCGANFaces:
    return DCGANFaces()


@pytest.fixture
def run(dcgan: DCGANFaces) -> Run:
    A, P = made_up_factors()
    return Run(A=A, P=P, generator=dcgan, name="dcgan_faces", layer=LAYER, feature_shape=SHAPE)
