"""ProGAN (PGGAN) and StyleGAN1 in plain PyTorch, loading the genforce checkpoints the PandA paper used.

genforce (github.com/genforce/genforce) converted NVIDIA's official TensorFlow generators into
``torch.save`` files ``{'generator': sd, 'discriminator': sd, 'generator_smooth': sd}`` of plain
state dicts (``generator_smooth``, the moving average, is used; genforce's own training runner nests the
same under ``'models'``). The files store no constructor arguments: genforce's model zoo builds every
generator from its resolution and the defaults, so here the architecture comes from ``arch`` with the
resolution read off the checkpoint (its number of ``output{i}`` layers).

Module and parameter names follow genforce's state dicts, so layers are ``layer0`` ... ``layer17``
(ProGAN 1024 px) or ``synthesis.layer0`` ... ``synthesis.layer17`` (StyleGAN1 1024 px): two convolutions
per resolution 4, 8, ..., ``layer{2k+1}`` ending resolution ``4 * 2**k``. The PandA code's
``layer=L`` (stop before resolution ``2**L``) is the output of ``layer{2L-5}``; its default L=5 is
``layer5`` (16x16). Stored weights are scaled at run time (equalised learning rate, genforce's
``wscale``), every layer runs in float32, StyleGAN1 noise is the stored constant noise
(genforce's ``randomize_noise=False``) or none, so a latent always gives the same image.
"""

from __future__ import annotations

import math
import pickle
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panda.base.errors import ConfigError, WeightsError
from panda.generators.base import FeatureGenerator, ResumeState, build_or_load
from panda.generators.stylegan import StyleGANGenerator

CHECKPOINT_KEYS = ("generator_smooth", "generator")
SOURCE = "a genforce checkpoint"
HINT = (
    "replace the file with a genforce checkpoint (.pth; github.com/genforce/genforce MODEL_ZOO.md, whose links "
    "were reported dead in 2026: see docs/generators.md), or pass gen.weights=PATH"
)
CONV_GAIN = math.sqrt(2.0)
MIN_RESOLUTION = 8


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``x [B, C, ...]`` divided by the root mean square over channels."""
    return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + eps)


def instance_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``x [B, C, H, W]`` centred and scaled to unit mean square per channel and sample."""
    x = x - torch.mean(x, dim=[2, 3], keepdim=True)
    return x / torch.sqrt(torch.mean(x**2, dim=[2, 3], keepdim=True) + eps)


def channels(resolution: int, fmaps_base: int, fmaps_max: int) -> int:
    """genforce's feature-map count at ``resolution``."""
    return min(fmaps_base // resolution, fmaps_max)


def resolutions(resolution: int) -> list[int]:
    """The block resolutions 4, 8, ..., ``resolution`` (a power of two >= 8)."""
    log2 = int(math.log2(resolution)) if resolution > 0 else 0
    if 2**log2 != resolution or resolution < MIN_RESOLUTION:
        raise ConfigError(f"genforce resolution must be a power of two >= {MIN_RESOLUTION}, got {resolution}")
    return [2**i for i in range(2, log2 + 1)]


# ----- ProGAN --------------------------------------------------------------------------------------
class ProGANConv(nn.Module):
    """Pixel norm, optional 2x nearest upsampling, equalised-lr convolution (+ bias), optional leaky ReLU.

    genforce normalises every block's input where the official network normalises every conv output:
    the same features after normalisation, but ``layer{i}`` outputs here are the unnormalised ones.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        up: bool = False,
        gain: float = CONV_GAIN,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.wscale = gain / math.sqrt(in_channels * kernel_size**2)
        self.padding, self.up, self.activate = padding, up, activate

    def forward(self, x: Tensor) -> Tensor:
        x = pixel_norm(x)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight * self.wscale, self.bias, padding=self.padding)
        return F.leaky_relu(x, 0.2) if self.activate else x


class ProGANNet(nn.Module):
    """genforce's ``PGGANGenerator``: ``z [B, z_dim]`` -> image ``[B, image_channels, R, R]``.

    ``layer0`` is the dense 4x4 layer (a 4x4 convolution of the 1x1 latent padded by 3), then two 3x3
    convolutions per resolution; ``output{k}`` is the ToRGB of resolution ``4 * 2**k`` (only the last runs).
    """

    def __init__(
        self,
        resolution: int,
        z_dim: int = 512,
        image_channels: int = 3,
        final_tanh: bool = False,
        fmaps_base: int = 16 << 10,
        fmaps_max: int = 512,
    ) -> None:
        super().__init__()
        self.z_dim, self.final_tanh = z_dim, final_tanh
        self.register_buffer("lod", torch.zeros(()))
        res = resolutions(resolution)
        self.num_layers, self.last_output = 2 * len(res), len(res) - 1
        for k, r in enumerate(res):
            c = channels(r, fmaps_base, fmaps_max)
            if k == 0:
                first = ProGANConv(z_dim, c, kernel_size=4, padding=3)
            else:
                first = ProGANConv(channels(r // 2, fmaps_base, fmaps_max), c, up=True)
            self.add_module(f"layer{2 * k}", first)
            self.add_module(f"layer{2 * k + 1}", ProGANConv(c, c))
            self.add_module(f"output{k}", ProGANConv(c, image_channels, 1, 0, gain=1.0, activate=False))

    def forward(self, z: Tensor) -> Tensor:
        return self.run(pixel_norm(z)[:, :, None, None], 0)  # genforce normalises z here, and layer0 again

    def run(self, x: Tensor, start: int) -> Tensor:
        """The image from ``layer{start}`` on, given its input ``x``."""
        for i in range(start, self.num_layers):
            x = getattr(self, f"layer{i}")(x)
        return self.image(getattr(self, f"output{self.last_output}")(x))

    def image(self, rgb: Tensor) -> Tensor:
        """The image from the output of the last ToRGB layer."""
        return torch.tanh(rgb) if self.final_tanh else rgb

    def resume(self, path: str, features: Tensor) -> Tensor:
        """The image from the output ``features`` of the layer ``path`` (``layer5``, or the last ``output{k}``)."""
        if path.startswith("output"):
            return self.image(features)
        return self.run(features, int(path.removeprefix("layer")) + 1)


# ----- StyleGAN1 -----------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """Equalised-lr linear layer + leaky ReLU: stored weight ``[out, in]`` times ``lr_mul * sqrt(2 / in)``."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.wscale = CONV_GAIN / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(F.linear(x, self.weight * self.wscale, self.bias * self.lr_mul), 0.2)


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` -> ``w [B, w_dim]``: pixel norm, then ``dense0`` ... ``dense{L-1}``."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, hidden: int, lr_mul: float) -> None:
        super().__init__()
        self.num_layers = num_layers
        widths = [z_dim] + [hidden] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            self.add_module(f"dense{i}", DenseLayer(widths[i], widths[i + 1], lr_mul))

    def forward(self, z: Tensor) -> Tensor:
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


class Truncation(nn.Module):
    """``w [B, w_dim]`` -> ``wp [B, num_layers, w_dim]``, the first ``cutoff`` pulled towards ``w_avg``."""

    def __init__(self, w_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, w: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        wp = w.unsqueeze(1).repeat(1, self.num_layers, 1)
        if psi != 1:
            n = self.num_layers if cutoff is None else cutoff
            wp = torch.cat([self.w_avg + (wp[:, :n] - self.w_avg) * psi, wp[:, n:]], dim=1)
        return wp


class NoiseInput(nn.Module):
    """Adds the stored noise ``[1, 1, R, R]`` times a per-channel ``weight`` (nothing when mode is ``none``)."""

    def __init__(self, resolution: int, out_channels: int) -> None:
        super().__init__()
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.weight = nn.Parameter(torch.zeros(out_channels))
        self.noise_mode = "const"

    def forward(self, x: Tensor) -> Tensor:
        return x + self.noise * self.weight.view(1, -1, 1, 1) if self.noise_mode == "const" else x


class StyleModulation(nn.Module):
    """AdaIN's style: ``x * (1 + scale) + shift`` with ``[scale, shift] = A w`` (``weight [2C, w_dim]``)."""

    def __init__(self, w_dim: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2 * out_channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(2 * out_channels))
        self.wscale = 1 / math.sqrt(w_dim)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = F.linear(w, self.weight * self.wscale, self.bias).view(len(w), 2, -1, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class Blur(nn.Module):
    """Depthwise 3x3 blur with the normalised ``[1, 2, 1]`` filter (stored as ``kernel [C, 1, 3, 3]``)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16
        self.register_buffer("kernel", kernel.expand(num_channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


class StyleConv(nn.Module):
    """One StyleGAN1 synthesis layer ``[B, C, R, R]``: (the constant, or [2x up] conv [+ blur]), noise,
    bias, leaky ReLU, instance norm, style modulation."""

    def __init__(
        self, in_channels: int, out_channels: int, resolution: int, w_dim: int, up: bool = False, fused: bool = False
    ) -> None:
        super().__init__()
        self.up, self.fused = up, fused
        if in_channels == 0:
            self.const = nn.Parameter(torch.ones(1, out_channels, resolution, resolution))
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
            self.wscale = CONV_GAIN / math.sqrt(in_channels * 9)
            if up:
                self.blur = Blur(out_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.apply_noise = NoiseInput(resolution, out_channels)
        self.style = StyleModulation(w_dim, out_channels)

    def convolve(self, x: Tensor) -> Tensor:
        weight = self.weight * self.wscale
        if self.up and self.fused:  # upsampling and 3x3 conv as one stride-2 transposed 4x4 conv
            weight = F.pad(weight, [1, 1, 1, 1])
            weight = weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]
            return F.conv_transpose2d(x, weight.permute(1, 0, 2, 3), stride=2, padding=1)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.conv2d(x, weight, padding=1)

    def forward(self, x: Tensor | None, w: Tensor) -> Tensor:
        if x is None:
            x = self.const.repeat(len(w), 1, 1, 1)
        else:
            x = self.convolve(x)
            if self.up:
                x = self.blur(x)
        return self.resume("blur", x, w)

    def resume(self, part: str, features: Tensor, w: Tensor) -> Tensor:
        """The layer's output from the output ``features`` of its step ``part``: ``blur`` (what the noise is
        added to: the constant, or the convolution, blurred where upsampling), ``apply_noise`` or ``style``."""
        x = self.apply_noise(features) if part == "blur" else features
        if part == "style":
            return x
        return self.style(instance_norm(F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)), w)


class ToRGB(nn.Module):
    """Equalised-lr 1x1 convolution (gain 1) + bias: features -> ``[B, image_channels, R, R]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.wscale = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.wscale) + self.bias.view(1, -1, 1, 1)


class SynthesisNetwork(nn.Module):
    """``wp [B, num_layers, w_dim]`` -> image: ``layer0`` (the learnt 4x4 constant) ... ``layer{2n-1}``."""

    def __init__(
        self,
        resolution: int,
        w_dim: int,
        image_channels: int,
        final_tanh: bool,
        fused_scale: bool | str,
        fmaps_base: int,
        fmaps_max: int,
    ) -> None:
        super().__init__()
        if fused_scale not in (True, False, "auto"):
            raise ConfigError(f"fused_scale must be true, false or auto, got {fused_scale!r}")
        self.final_tanh = final_tanh
        self.register_buffer("lod", torch.zeros(()))
        res = resolutions(resolution)
        self.num_layers, self.last_output = 2 * len(res), len(res) - 1
        for k, r in enumerate(res):
            c = channels(r, fmaps_base, fmaps_max)
            if k == 0:
                first = StyleConv(0, c, r, w_dim)
            else:
                fused = r >= 128 if fused_scale == "auto" else fused_scale  # genforce's (and NVIDIA's) 'auto'
                first = StyleConv(channels(r // 2, fmaps_base, fmaps_max), c, r, w_dim, up=True, fused=fused)
            self.add_module(f"layer{2 * k}", first)
            self.add_module(f"layer{2 * k + 1}", StyleConv(c, c, r, w_dim))
            self.add_module(f"output{k}", ToRGB(c, image_channels))

    def forward(self, wp: Tensor) -> Tensor:
        return self.run(None, wp, 0)

    def run(self, x: Tensor | None, wp: Tensor, start: int) -> Tensor:
        """The image from ``layer{start}`` on, given its input ``x`` (None for ``layer0``, the constant)."""
        for i in range(start, self.num_layers):
            x = getattr(self, f"layer{i}")(x, wp[:, i])
        return self.image(getattr(self, f"output{self.last_output}")(x))

    def image(self, rgb: Tensor) -> Tensor:
        """The image from the output of the last ToRGB layer."""
        return torch.tanh(rgb) if self.final_tanh else rgb

    def resume(self, path: str, features: Tensor, wp: Tensor) -> Tensor:
        """The image from the output ``features`` of the layer ``path`` (``layer5``, ``layer10.blur``, the last
        ``output{k}``; empty: this network, the image)."""
        if not path:
            return features
        if path.startswith("output"):
            return self.image(features)
        name, _, part = path.partition(".")
        index = int(name.removeprefix("layer"))
        x = getattr(self, name).resume(part, features, wp[:, index]) if part else features
        return self.run(x, wp, index + 1)


class StyleGAN1Net(nn.Module):
    """genforce's ``StyleGANGenerator`` (unconditional, ``repeat_w``, constant input, spatial noise)."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int = 512,
        mapping_lr_mul: float = 0.01,
        image_channels: int = 3,
        final_tanh: bool = False,
        fused_scale: bool | str = "auto",
        fmaps_base: int = 16 << 10,
        fmaps_max: int = 512,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, 0  # unconditional
        self.synthesis = SynthesisNetwork(
            resolution, w_dim, image_channels, final_tanh, fused_scale, fmaps_base, fmaps_max
        )
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_fmaps, mapping_lr_mul)
        self.truncation = Truncation(w_dim, self.synthesis.num_layers)

    def forward(self, z: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        return self.synthesis(self.truncation(self.mapping(z), psi, cutoff))


# ----- checkpoints ---------------------------------------------------------------------------------
def load_checkpoint(path: Path) -> dict[str, Tensor]:
    """The generator state dict of a genforce checkpoint (``generator_smooth`` where there is one)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "torch.load(weights_only=True) refused it: damaged, or objects beyond tensors and plain containers"
        raise WeightsError(f"{path} is not a readable genforce checkpoint ({reason}); {HINT}") from None
    except Exception as error:  # torch raises many types for a damaged archive
        reason = str(error).split(". ")[0] or error.__class__.__name__
        raise WeightsError(f"{path} is not a readable genforce checkpoint ({reason}); {HINT}") from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("models"), dict):
        checkpoint = checkpoint["models"]  # genforce's training runner
    for key in CHECKPOINT_KEYS:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    raise WeightsError(f"{path} holds no '{CHECKPOINT_KEYS[0]}' or '{CHECKPOINT_KEYS[1]}' state dict; {HINT}")


def checkpoint_resolution(state: dict[str, Tensor], prefix: str) -> int | None:
    """The output resolution of a genforce generator state dict, 4 * 2**(number of ToRGB layers - 1);
    None without ToRGB layers under ``prefix`` (not this generator)."""
    pattern = re.compile(rf"{re.escape(prefix)}output(\d+)\.weight")
    outputs = [int(m.group(1)) for key in state if (m := pattern.fullmatch(key))]
    return 4 * 2 ** max(outputs) if outputs else None


def read_checkpoint(path: Path, arch: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``arch`` with the resolution of the genforce checkpoint ``path`` (its layers under ``prefix``), and its state."""
    state = load_checkpoint(path)
    lod = state.get(f"{prefix}lod")
    if isinstance(lod, Tensor) and lod.numel() == 1 and lod.item() != 0:
        raise WeightsError(f"{path} is a progressive-growing snapshot (lod={lod.item()}); only finished ones (lod 0)")
    resolution = checkpoint_resolution(state, prefix)
    return ({**arch, "resolution": resolution} if resolution else arch), state


class GenforceGenerator(FeatureGenerator):
    """What ProGAN and StyleGAN1 share: genforce checkpoints, read by :func:`read_checkpoint`.

    Subclasses set :attr:`net_class` and :attr:`prefix` (the module path of the ``layer{i}`` and
    ``output{k}`` modules); ``style`` goes on to the next base class (:class:`StyleGANGenerator`).
    """

    net_class: type[nn.Module]
    prefix: str = ""

    def __init__(
        self, weights: str | None, random_init: bool, arch: dict[str, Any] | None, cache_name: str | None, **style: Any
    ) -> None:
        read = partial(read_checkpoint, prefix=self.prefix)
        net = build_or_load(self.name, self.net_class, weights, random_init, arch, read, SOURCE, cache_name)
        super().__init__(net, **style)


class ProGAN(GenforceGenerator):
    """A genforce ProGAN (PGGAN) generator split at named layers (``gen=progan_celebahq``).

    Args:
        weights: path or URL of a genforce ``.pth`` checkpoint.
        random_init: build ``arch`` with random weights instead (smoke runs).
        arch: genforce's ``PGGANGenerator`` arguments (``resolution`` is read off a checkpoint).
        cache_name: the file name a downloaded checkpoint gets in the cache.
    """

    name = "progan"
    net_class = ProGANNet

    def __init__(
        self,
        weights: str | None = None,
        random_init: bool = False,
        arch: dict[str, Any] | None = None,
        cache_name: str | None = None,
    ) -> None:
        super().__init__(weights, random_init, arch, cache_name)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)

    def _resume(self, features: Tensor, state: ResumeState) -> Tensor:
        return self.net.resume(state.layer, features)

    def code_layers(self) -> list[str]:
        return ["layer0"]


class StyleGAN1(GenforceGenerator, StyleGANGenerator):
    """A genforce StyleGAN1 generator split at named synthesis layers (``gen=stylegan1_ffhq``).

    Args:
        weights: path or URL of a genforce ``.pth`` checkpoint.
        random_init: build ``arch`` with random weights instead (smoke runs).
        arch: genforce's ``StyleGANGenerator`` arguments (``resolution`` is read off a checkpoint).
        cache_name: the file name a downloaded checkpoint gets in the cache.
        truncation_psi: truncation towards ``w_avg`` (1: none).
        truncation_cutoff: truncate the first this many layers' w only (null: all; genforce's ``trunc_layers``).
        noise_mode: ``const`` (the stored noise) or ``none``.
    """

    name = "stylegan1"
    net_class = StyleGAN1Net
    prefix = "synthesis."

    def __init__(
        self,
        weights: str | None = None,
        random_init: bool = False,
        arch: dict[str, Any] | None = None,
        cache_name: str | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> None:
        super().__init__(
            weights,
            random_init,
            arch,
            cache_name,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            noise_mode=noise_mode,
        )

    def ws(self, latents: Tensor) -> Tensor:
        """``wp [B, num_layers, w_dim]`` for ``z`` latents, truncated as configured."""
        return self.net.truncation(self.net.mapping(latents), self.truncation_psi, self.truncation_cutoff)

    def code_layers(self) -> list[str]:
        """The AdaIN style affines (they read ``w``; their outputs modulate features, not style vectors)."""
        return [path for path, module in self.net.named_modules() if isinstance(module, StyleModulation)]
