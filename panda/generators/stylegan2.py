"""StyleGAN2 (the StyleGAN2-ADA ``Generator``) in plain PyTorch, loading NVIDIA's official pickles.

Module and parameter names follow the official state dict, so layers are paths such as
``synthesis.b16.conv0``, ``synthesis.b16.conv1`` or ``synthesis.b16.torgb``. Stored weights are
scaled at run time (equalised learning rate), every layer runs in float32 (the official
``force_fp32=True`` path), and noise is the stored constant noise (``noise_mode='const'``) or none, so a
latent always gives the same image.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panda.base.errors import WeightsError
from panda.generators.stylegan import OfficialStyleGAN

LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: Tensor, gain: float = LRELU_GAIN, clamp: float | None = None) -> Tensor:
    """Leaky ReLU (slope 0.2) times ``gain``, optionally clamped to ``[-clamp, clamp]``."""
    x = F.leaky_relu(x, 0.2) * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``x [B, D]`` scaled to unit mean square per row."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def blur_filter(taps: tuple[float, ...] = (1, 3, 3, 1)) -> Tensor:
    """The normalised 2-D FIR filter ``[K, K]`` (outer product of ``taps``, sum 1)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def depthwise_fir(x: Tensor, f: Tensor, pad: tuple[int, int], gain: float) -> Tensor:
    """``x [B, C, H, W]`` padded by ``pad`` = (before, after) on both axes, filtered with ``gain * f``."""
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kernel = (f * gain).flip([0, 1])[None, None].expand(x.shape[1], 1, *f.shape).to(x.dtype)
    return F.conv2d(x, kernel, groups=x.shape[1])


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """Upsample ``x [B, C, H, W]`` to ``[B, C, 2H, 2W]``: zero insertion then the FIR ``f`` (gain 4)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    k = f.shape[0]
    return depthwise_fir(up, f, ((k + 1) // 2, (k - 2) // 2), gain=4.0)


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: stored weight ``[out, in]`` scaled by ``lr/sqrt(in)``."""

    def __init__(
        self, in_features: int, out_features: int, lrelu_act: bool = False, lr_multiplier: float = 1.0, bias_init=0.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu_act = lrelu_act

    def forward(self, x: Tensor) -> Tensor:
        x = x.matmul((self.weight * self.weight_gain).t()) + self.bias * self.bias_gain
        return lrelu(x) if self.lrelu_act else x


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` (and class ``c [B, c_dim]``) -> ``w [B, num_ws, w_dim]`` with truncation."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        **_unused: Any,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.num_ws = z_dim, c_dim, num_ws
        embed = w_dim if c_dim else 0
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed)
        widths = [z_dim + embed] + [w_dim] * num_layers
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(widths[i], widths[i + 1], True, lr_multiplier))
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, c: Tensor | None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        parts = [normalize_2nd_moment(z)] if self.z_dim else []
        if self.c_dim:
            parts.append(normalize_2nd_moment(self.embed(c)))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            n = self.num_ws if cutoff is None else cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :n], psi), ws[:, n:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x up), constant noise, bias, leaky ReLU: ``[B, out, R, R]``."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1, conv_clamp=None
    ) -> None:
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", blur_filter())
        self.noise_mode = "const"

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # [B, in]
        demod = (styles.square() @ self.weight.square().sum([2, 3]).t() + 1e-8).rsqrt()  # [B, out]
        x = x * styles[:, :, None, None]
        if self.up == 2:
            x = F.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2)
            x = depthwise_fir(x, self.resample_filter, (1, 1), gain=4.0)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        x = x * demod[:, :, None, None]
        if self.noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None], clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation: features -> ``[B, img_channels, R, R]``."""

    is_torgb = True

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp=None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None], self.weight) + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution of the skip architecture: (features, image) -> (features, image) at ``resolution``."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, conv_clamp=None
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", blur_filter())
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor) -> tuple[Tensor, Tensor]:
        """``ws [B, num_conv + 1, w_dim]``: one w per convolution, then one for ToRGB."""
        if self.in_channels == 0:
            const = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            return self.resume("conv1", self.conv1(const, ws[:, 0]), img, ws)
        return self.resume("conv0", self.conv0(x, ws[:, 0]), img, ws)

    def resume(
        self, part: str, features: Tensor, img: Tensor | None, ws: Tensor, conv1: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(features, image) leaving the block, from the output ``features`` of its layer ``part``
        (``conv0``, ``conv1`` or ``torgb``, whose ``conv1`` output passes on) and the image ``img`` entering it."""
        if part == "torgb":
            x, y = conv1, features
        else:
            x = self.conv1(features, ws[:, 1]) if part == "conv0" else features
            y = self.torgb(x, ws[:, self.num_conv])
        return x, y if img is None else upsample2d(img, self.resample_filter) + y


class SynthesisNetwork(nn.Module):
    """``ws [B, num_ws, w_dim]`` -> image ``[B, img_channels, R, R]`` through blocks ``b4`` ... ``bR``."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        architecture: str = "skip",
        **_unused: Any,
    ) -> None:
        super().__init__()
        if architecture != "skip":
            raise WeightsError(f"StyleGAN2 architecture '{architecture}' is not supported (only 'skip')")
        log2 = int(math.log2(img_resolution))
        if 2**log2 != img_resolution or log2 < 2:
            raise WeightsError(f"StyleGAN2 resolution must be a power of two >= 4, got {img_resolution}")
        self.resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.num_ws = 0
        self.first_w: dict[int, int] = {}  # index of the first w of block r in ws
        for r in self.resolutions:
            in_channels = channels[r // 2] if r > 4 else 0
            block = SynthesisBlock(in_channels, channels[r], w_dim, r, img_channels, conv_clamp)
            self.add_module(f"b{r}", block)
            self.first_w[r] = self.num_ws
            self.num_ws += block.num_conv
        self.num_ws += 1

    def forward(self, ws: Tensor) -> Tensor:
        return self.run(None, None, ws, 0)

    def run(self, x: Tensor | None, img: Tensor | None, ws: Tensor, start: int) -> Tensor:
        """The image from the blocks ``resolutions[start:]``, given the features and image entering the first."""
        for r in self.resolutions[start:]:
            x, img = self.block(r)(x, img, self.block_ws(ws, r))
        return img

    def resume(
        self, path: str, features: Tensor, ws: Tensor, img: Tensor | None = None, conv1: Tensor | None = None
    ) -> Tensor:
        """The image from the output ``features`` of the layer ``path`` (``b16.conv1``; empty: this network, the
        image), with ``img`` the image entering the layer's block and ``conv1`` that block's conv1 output."""
        if not path:
            return features
        name, part = path.split(".")
        r = int(name.removeprefix("b"))
        x, img = self.block(r).resume(part, features, img, self.block_ws(ws, r), conv1)
        return self.run(x, img, ws, self.resolutions.index(r) + 1)

    def block(self, r: int) -> SynthesisBlock:
        return getattr(self, f"b{r}")

    def block_ws(self, ws: Tensor, r: int) -> Tensor:
        """The ws ``[B, num_conv + 1, w_dim]`` of block ``r``: one per convolution, then the ToRGB's."""
        return ws[:, self.first_w[r] : self.first_w[r] + self.block(r).num_conv + 1]


class StyleGAN2Net(nn.Module):
    """The StyleGAN2-ADA generator; its constructor takes the official pickle's ``_init_kwargs``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
        **_unused: Any,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **(synthesis_kwargs or {}))
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.synthesis.num_ws, **(mapping_kwargs or {}))

    def forward(self, z: Tensor, c: Tensor | None = None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        return self.synthesis(self.mapping(z, c, psi, cutoff))


class StyleGAN2(OfficialStyleGAN):
    """StyleGAN2-ADA (``gen=stylegan2_ffhq`` ...), from NVIDIA's pickle: :class:`OfficialStyleGAN`'s arguments."""

    name = "stylegan2"
    network = StyleGAN2Net

    def _captures(self, layer: str) -> dict[str, tuple[str, int | None]]:
        """The image entering the layer's block, and for ``torgb`` the block's ``conv1`` output, which passes on."""
        if layer == "synthesis":
            return {}
        block, part = layer.rsplit(".", 1)
        return {"img": (block, 1), **({"conv1": (f"{block}.conv1", None)} if part == "torgb" else {})}
