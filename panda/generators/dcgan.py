"""The DCGAN face generator whose weights ship inside the ``gan-face-generate`` wheel.

A DCGAN (nz=100, ngf=64) trained on the synthetic faces of DigiFace1M; 64x64 RGB images in
``[-1, 1]``. Its ``main`` Sequential goes 512x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 3x64x64
through ConvTranspose2d / BatchNorm2d / ReLU blocks, so its layers are ``main.0`` ... ``main.13``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from panda.base.errors import WeightsError
from panda.generators.base import FeatureGenerator

PACKAGE = "gan_face_generate"
WEIGHTS_KEY = "netG_state_dict"


class DCGANNet(nn.Module):
    """The DCGAN generator architecture: ``z [B, nz] -> image [B, nc, 64, 64]``."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.z_dim = nz
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i in range(1, len(widths)):
            stride, padding = (1, 0) if i == 1 else (2, 1)
            layers += [
                nn.ConvTranspose2d(widths[i - 1], widths[i], 4, stride, padding, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z[:, :, None, None])


def packaged_weights() -> Path:
    """Path of ``weights.tar`` inside the installed ``gan-face-generate`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError(
            "the DCGAN face weights come with the 'gan-face-generate' package, which is not installed: "
            "run `pip install gan-face-generate` (or pass gen.weights=PATH to a weights.tar)"
        )
    return Path(spec.origin).parent / "weights.tar"


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """The generator state dict stored under ``netG_state_dict`` in ``path``."""
    hint = "reinstall it with `pip install --force-reinstall gan-face-generate`, or pass gen.weights=PATH"
    if not path.is_file():
        raise WeightsError(f"DCGAN weights not found at {path}; {hint}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged archive
        raise WeightsError(f"DCGAN weights at {path} are unreadable ({error.__class__.__name__}); {hint}") from None
    if not isinstance(checkpoint, dict) or WEIGHTS_KEY not in checkpoint:
        raise WeightsError(f"{path} has no '{WEIGHTS_KEY}' entry; it is not a gan-face-generate checkpoint; {hint}")
    return checkpoint[WEIGHTS_KEY]


class DCGANFaces(FeatureGenerator):
    """The pretrained DCGAN face generator (``gen=dcgan_faces``)."""

    name = "dcgan_faces"
    sequential_root = "main"

    def __init__(self, weights: str | None = None, random_init: bool = False, nz: int = 100, ngf: int = 64) -> None:
        net = DCGANNet(nz=nz, ngf=ngf)
        if not random_init:
            path = Path(weights).expanduser() if weights else packaged_weights()
            try:
                net.load_state_dict(load_state_dict(path))
            except RuntimeError as error:
                raise WeightsError(f"DCGAN weights at {path} do not fit nz={nz}, ngf={ngf}: {error}") from None
        super().__init__(net)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)

    def code_layers(self) -> list[str]:
        return ["main.0"]
