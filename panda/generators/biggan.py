"""BigGAN-deep through ``pytorch-pretrained-biggan``: one ImageNet class, truncated latents.

Weights are a directory holding ``config.json`` + ``pytorch_model.bin``, or one of the names
``biggan-deep-128/256/512``, whose two files download once into the panda cache (see
:mod:`panda.generators.weights`). Layers are module paths such as ``generator.layers.4``
(``generator.layers.8`` is the self-attention block).
"""

from __future__ import annotations

import difflib
import json
import pickle
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_pretrained_biggan import BigGAN as BigGANNet
from pytorch_pretrained_biggan import BigGANConfig
from pytorch_pretrained_biggan.model import GenBlock
from torch import Tensor

from panda.base.errors import ConfigError, WeightsError
from panda.generators.base import FeatureGenerator, ResumeState
from panda.generators.weights import cached_path, resolve_weights

BASE_URL = "https://s3.amazonaws.com/models.huggingface.co/biggan"
MODELS = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "pytorch_model.bin"
BLOCK_LAYERS = ("bn_0", "conv_0", "bn_1", "conv_1", "bn_2", "conv_2", "bn_3", "conv_3")  # a GenBlock's, in order


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in index order."""
    return tuple((Path(__file__).with_name("imagenet_classes.txt")).read_text().splitlines())


def class_index(name_or_index: str | int, num_classes: int = 1000) -> int:
    """The ImageNet index of a class given by index or by name (case-insensitive, e.g. 'golden retriever')."""
    if isinstance(name_or_index, int) or str(name_or_index).isdigit():
        index = int(name_or_index)
        if not 0 <= index < num_classes:
            raise ConfigError(f"class index {index} is outside 0..{num_classes - 1}")
        return index
    names = [n.lower() for n in imagenet_classes()]
    key = str(name_or_index).strip().lower().replace("_", " ")
    if key in names:
        return names.index(key)
    close = difflib.get_close_matches(key, names, n=5)
    raise ConfigError(f"unknown ImageNet class '{name_or_index}'; close names: {close or 'none'} (or give an index)")


def truncated_normal(n: int, dim: int, generator: torch.Generator, bound: float = 2.0) -> Tensor:
    """``[n, dim]`` standard normal samples redrawn until all lie in ``[-bound, bound]``."""
    z = torch.randn(n, dim, generator=generator)
    outside = z.abs() > bound
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = z.abs() > bound
    return z


def model_files(weights: str) -> tuple[Path, Path]:
    """``(config.json, pytorch_model.bin)`` for a directory or a model name (downloaded once)."""
    if weights in MODELS:
        urls = [f"{BASE_URL}/{weights}-{name}" for name in (CONFIG_FILE, WEIGHTS_FILE)]
        try:
            config, state = (resolve_weights(url) for url in urls)
        except WeightsError as error:
            missing = ", ".join(f"{cached_path(url)} (from {url})" for url in urls if not cached_path(url).is_file())
            raise WeightsError(
                f"BigGAN '{weights}' needs files that are not in the cache: {missing}. The download failed: {error}. "
                f"Place each file at its path by hand, or pass gen.weights=DIR, a directory holding {CONFIG_FILE} "
                f"and {WEIGHTS_FILE}"
            ) from None
        return config, state
    directory = Path(weights).expanduser()
    config, state = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    missing = [str(path) for path in (config, state) if not path.is_file()]
    if missing:
        raise WeightsError(
            f"BigGAN weights '{weights}' must be one of {MODELS} or a directory holding {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}; missing: {', '.join(missing)}"
        )
    return config, state


def load_biggan(weights: str) -> BigGANNet:
    config_path, state_path = model_files(weights)
    try:
        config = BigGANConfig.from_dict(json.loads(config_path.read_text()))
        net = BigGANNet(config)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        missing = net.load_state_dict(state, strict=False).missing_keys
    except pickle.UnpicklingError:
        raise WeightsError(
            f"BigGAN weights in {state_path} are refused: they need more than tensors and plain data to load (loading "
            "them could run code), or they are damaged"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as error:
        raise WeightsError(f"BigGAN weights in {state_path} do not load: {error.__class__.__name__}: {error}") from None
    if missing:
        raise WeightsError(f"BigGAN weights in {state_path} lack {len(missing)} tensors, e.g. {missing[:3]}")
    return net


def random_biggan(arch: dict[str, Any] | None) -> BigGANNet:
    """A BigGAN with random weights (``arch``: BigGANConfig fields; default the 128 px model)."""
    net = BigGANNet(BigGANConfig.from_dict(dict(arch)) if arch else BigGANConfig())
    config = net.config
    with torch.no_grad():  # the package leaves the final batch norm's affine uninitialised
        net.generator.bn.weight.fill_(1.0)
        net.generator.bn.bias.zero_()
        net.train()  # power iterations settle the spectral norms' random singular vectors
        for _ in range(10):
            net(torch.zeros(1, config.z_dim), torch.zeros(1, config.num_classes), 1.0)
    return net.eval()


class BigGAN(FeatureGenerator):
    """BigGAN-deep for one ImageNet class (``gen=biggan``).

    Args:
        weights: ``biggan-deep-128/256/512`` (downloaded once) or a directory with config.json + pytorch_model.bin.
        random_init: random weights for the architecture ``arch`` (BigGANConfig fields; default: the 128 px model).
        class_name: ImageNet class name (e.g. ``golden retriever``) or index.
        truncation: in ``(0, 1]``; latents are truncated normals in ``[-2, 2]`` scaled by it.
    """

    name = "biggan"
    resume_needs_latents = True

    def __init__(
        self,
        weights: str | None = "biggan-deep-256",
        random_init: bool = False,
        arch: dict[str, Any] | None = None,
        class_name: str | int = "golden retriever",
        truncation: float = 0.4,
    ) -> None:
        if not 0 < truncation <= 1:
            raise ConfigError(f"BigGAN truncation must be in (0, 1], got {truncation}")
        if random_init:
            net = random_biggan(arch)
        elif not weights:
            raise WeightsError(f"BigGAN needs gen.weights: one of {MODELS} or a directory (or gen.random_init=true)")
        else:
            net = load_biggan(weights)
        super().__init__(net)
        self.truncation = truncation
        self.class_id = class_index(class_name, net.config.num_classes)

    def sample_latents(self, n: int, generator: torch.Generator) -> Tensor:
        return truncated_normal(n, self.net.config.z_dim, generator) * self.truncation

    def condition(self, latents: Tensor) -> Tensor:
        """The condition vector ``[B, 2 z_dim]`` every block reads: the latents, then the class embedding."""
        labels = torch.full((len(latents),), self.class_id, device=latents.device)
        one_hot = F.one_hot(labels, self.net.config.num_classes).to(latents.dtype)
        return torch.cat((latents, self.net.embeddings(one_hot)), dim=1)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net.generator(self.condition(latents), self.truncation)

    def resumable_layers(self) -> list[str]:
        """The blocks ``generator.layers.N``, their ``bn_k`` and ``conv_k``, and the modules after the blocks
        (not a block's ``relu``, which runs four times, nor the inside of the self-attention block)."""
        layers = []
        for i, block in enumerate(self.net.generator.layers):
            layers.append(f"generator.layers.{i}")
            if isinstance(block, GenBlock):
                layers += [f"generator.layers.{i}.{name}" for name in BLOCK_LAYERS]
        return [*layers, *(name for name, _ in self._tail()), "generator"]

    def _latent_values(self, latents: Tensor) -> dict[str, Tensor]:
        return {"condition": self.condition(latents)}

    def _captures(self, layer: str) -> dict[str, tuple[str, int | None]]:
        """Inside a block: the block's input (its residual)."""
        block, _, part = layer.removeprefix("generator.layers.").partition(".")
        inside = layer.startswith("generator.layers.") and part
        return {"block_input": (f"generator.layers.{block}", 0)} if inside else {}

    def _resume(self, features: Tensor, state: ResumeState) -> Tensor:
        """The rest of the package's ``Generator.forward`` from the output ``features`` of ``state.layer``."""
        generator, x, layer = self.net.generator, features, state.layer
        condition, tail = state.values["condition"], self._tail()
        if layer.startswith("generator.layers."):
            index, _, part = layer.removeprefix("generator.layers.").partition(".")
            blocks = generator.layers[int(index) :]
            if part:
                x = self._rest_of_block(blocks[0], part, x, state.values["block_input"], condition)
            for block in blocks[1:]:
                x = block(x, condition, self.truncation) if isinstance(block, GenBlock) else block(x)
            start = 0
        else:
            start = [name for name, _ in tail].index(layer) + 1 if layer != "generator" else len(tail)
        for _, step in tail[start:]:
            x = step(x)
        return x

    def _rest_of_block(self, block: GenBlock, part: str, x: Tensor, block_input: Tensor, condition: Tensor) -> Tensor:
        """The output of ``block`` from the output ``x`` of its module ``part``: the rest of ``GenBlock.forward``."""
        steps: list[tuple[str, Callable[[Tensor], Tensor]]] = []
        for k in range(4):
            bn = partial(getattr(block, f"bn_{k}"), truncation=self.truncation, condition_vector=condition)
            steps += [(f"bn_{k}", bn), ("", block.relu)]
            if k == 1 and block.up_sample:
                steps.append(("", partial(F.interpolate, scale_factor=2, mode="nearest")))
            steps.append((f"conv_{k}", getattr(block, f"conv_{k}")))
        for _, step in steps[[name for name, _ in steps].index(part) + 1 :]:
            x = step(x)
        if block.drop_channels:
            block_input = block_input[:, : block_input.shape[1] // 2, ...]
        if block.up_sample:
            block_input = F.interpolate(block_input, scale_factor=2, mode="nearest")
        return x + block_input

    def _tail(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """The steps after the blocks, each with the module path of its output."""
        generator = self.net.generator
        return [
            ("generator.bn", partial(generator.bn, truncation=self.truncation)),
            ("generator.relu", generator.relu),
            ("generator.conv_to_rgb", generator.conv_to_rgb),
            ("generator.tanh", lambda x: generator.tanh(x[:, :3])),
        ]

    def code_layers(self) -> list[str]:
        return ["generator.gen_z"]  # reads [z, class embedding]: z comes first
