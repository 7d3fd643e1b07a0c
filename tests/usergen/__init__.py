"""A generator of a user's own, outside panda: a small network of seeded random weights whose forward is not one
``nn.Sequential`` (a dense layer, reshaped, then blocks, then ``tanh``), so it runs from a layer on through the
user's ``resume`` function. Its config is ``conf/gen/tiny_gan.yaml`` (``PANDA_CONFIG_PATH=tests/usergen/conf``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from panda import FeatureGenerator

Z_DIM, WIDTH = 16, 16


class TinyGAN(nn.Module):
    """``z [B, 16] -> images [B, 3, 32, 32]`` in ``[-1, 1]``; ``blocks.<i>`` gives ``8 * 2**i`` pixels square."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(Z_DIM, WIDTH * 4 * 4)
        self.blocks = nn.Sequential(*(_up(WIDTH, WIDTH) for _ in range(3)))
        self.to_rgb = nn.Conv2d(WIDTH, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.finish(self.blocks(self.fc(z).view(len(z), WIDTH, 4, 4)))

    def finish(self, x: Tensor) -> Tensor:
        return torch.tanh(self.to_rgb(x))


def _up(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.ReLU())


def generator(seed: int = 0) -> FeatureGenerator:
    """The network with the weights of ``seed``, wrapped; it resumes from ``blocks.<i>``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = TinyGAN()

    def resume(features: Tensor, layer: str, latents: Tensor) -> Tensor:
        index = int(layer.removeprefix("blocks."))  # the layers blocks.0, blocks.1, blocks.2
        return net.finish(net.blocks[index + 1 :](features))

    return FeatureGenerator.from_module(net, Z_DIM, name="tiny_gan", resume=resume)
