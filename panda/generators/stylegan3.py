"""StyleGAN3 (configs T and R, "Alias-Free GAN") in plain PyTorch, loading NVIDIA's official pickles.

Module and parameter names follow the official state dict: ``mapping``, ``synthesis.input`` (Fourier
features) and the synthesis layers ``synthesis.L{i}_{size}_{channels}`` (``L0_36_512`` ...
``L14_1024_3``, the last being ToRGB), so layers are module paths such as ``synthesis.L4_84_512``.
A layer's output is ``[B, channels, size, size]``: its sampling grid plus a margin of
``margin_size`` pixels on each side (none at the last two layers).

Each synthesis layer is: modulated convolution (weights times styles, demodulated, times the
stored input gain ``magnitude_ema ** -0.5``), then the filtered leaky ReLU: add the bias, upsample
(zero insertion, Kaiser low-pass ``up_filter``), leaky ReLU times ``sqrt(2)``, clamp, low-pass
``down_filter`` (separable, or radially symmetric jinc for config R), keep every ``down``-th sample.
Everything runs in float32 on any device (the official ``force_fp32=True`` path); StyleGAN3 has no
noise inputs, so a latent always gives the same image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panda.base.errors import WeightsError
from panda.generators.stylegan import OfficialStyleGAN
from panda.generators.stylegan2 import LRELU_GAIN, FullyConnectedLayer, MappingNetwork


def lowpass_filter(taps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> Tensor | None:
    """Kaiser-windowed low-pass FIR: ``[taps]`` (separable) or ``[taps, taps]`` (radial jinc); None if ``taps == 1``.

    ``cutoff`` and the transition ``width`` are in the units of the sampling rate ``fs``; the filter sums to 1.
    """
    if taps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(taps, cutoff, width=width, fs=fs), dtype=torch.float32)
    x = (np.arange(taps) - (taps - 1) / 2) / fs  # taps = filter_size * (a power of 2): even, so r > 0
    r = np.hypot(*np.meshgrid(x, x))
    jinc = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    window = np.kaiser(taps, scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (fs / 2))))
    f = jinc * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def upfirdn2d(x: Tensor, f: Tensor | None, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample ``x [B, C, H, W]`` by zero insertion, pad (negative: crop) by ``pad`` = (before, after) on both
    axes, convolve with ``f`` (``[K]`` separable or ``[K, K]``, times ``up**2``; None: identity), keep every
    ``down``-th sample. Output ``[B, C, (H*up + sum(pad) - K + 1) / down (rounded up), same for W]``.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    if f is not None:
        f = f.flip(list(range(f.dim()))).to(x.dtype)
        if f.dim() == 1:
            f = f * up  # gain up per axis: up**2 in all
            x = F.conv2d(x, f.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            x = F.conv2d(x, f.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        else:
            x = F.conv2d(x, (f * up**2)[None, None].expand(c, 1, -1, -1), groups=c)
    return x[:, :, ::down, ::down]


def filtered_lrelu(
    x: Tensor,
    bias: Tensor,
    up_filter: Tensor | None,
    down_filter: Tensor | None,
    up: int,
    down: int,
    pad: tuple[int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> Tensor:
    """Bias, upsampling by ``up`` (with ``pad``), leaky ReLU times ``gain``, clamp, downsampling by ``down``."""
    x = upfirdn2d(x + bias[None, :, None, None], up_filter, up=up, pad=pad)
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, down_filter, down=down)


class SynthesisInput(nn.Module):
    """Fourier features ``[B, channels, size, size]`` whose frequencies rotate and translate with ``w``.

    The affine layer maps ``w`` to (cos, sin, tx, ty) of a rotation and a translation of the
    sampling grid; frequencies pushed beyond the band by the stored user ``transform`` are damped.
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)  # uniform-ish on a disc of radius `bandwidth`
        radii = freqs.norm(dim=1, keepdim=True)
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # the identity transform until trained
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: Tensor) -> Tensor:
        t = self.affine(w)  # [B, 4]
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        batch = w.shape[0]
        rotation = torch.eye(3, device=w.device).repeat(batch, 1, 1)  # [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]
        rotation[:, 0, 0] = rotation[:, 1, 1] = t[:, 0]
        rotation[:, 0, 1], rotation[:, 1, 0] = -t[:, 1], t[:, 1]
        translation = torch.eye(3, device=w.device).repeat(batch, 1, 1)  # [[1, 0, -tx], [0, 1, -ty], [0, 0, 1]]
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform  # [B, 3, 3]
        phases = self.phases + (self.freqs @ transforms[:, :2, 2:]).squeeze(2)  # [B, channels]
        freqs = self.freqs @ transforms[:, :2, :2]  # [B, channels, 2]
        band = self.sampling_rate / 2 - self.bandwidth
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / band).clamp(0, 1)
        # sample centres of the size x size grid, in units of the image (sampling rate: samples per unit)
        grid = (torch.arange(self.size, device=w.device) + 0.5 - self.size / 2) / self.sampling_rate
        fx, fy = freqs[:, None, None, :, 0], freqs[:, None, None, :, 1]  # [B, 1, 1, channels]
        x = grid[None, None, :, None] * fx + grid[None, :, None, None] * fy
        x = torch.sin((x + phases[:, None, None]) * (2 * math.pi)) * amplitudes[:, None, None]  # [B, H, W, channels]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated convolution and filtered leaky ReLU: ``[B, in, in_size, in_size] -> [B, out, out_size, out_size]``.

    The ToRGB layer (``is_torgb``) is a 1x1 convolution without demodulation, filtering or activation.
    """

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        self.is_torgb, self.conv_clamp = is_torgb, conv_clamp
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))

        tmp_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up, self.down = tmp_rate // in_sampling_rate, tmp_rate // out_sampling_rate
        if self.up * in_sampling_rate != tmp_rate or self.down * out_sampling_rate != tmp_rate:
            raise WeightsError(f"StyleGAN3 sampling rates {in_sampling_rate} -> {out_sampling_rate} are not integer")
        up_taps = filter_size * self.up if self.up > 1 and not is_torgb else 1
        down_taps = filter_size * self.down if self.down > 1 and not is_torgb else 1
        radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("up_filter", lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, out_cutoff, out_half_width * 2, tmp_rate, radial))
        # Pad so that the output has out_size samples, centred as in the paper's symmetric convention (App. C.3).
        pad_total = (out_size - 1) * self.down + 1 - (in_size + self.conv_kernel - 1) * self.up
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + self.up) // 2
        self.pad = (pad_lo, pad_total - pad_lo)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # [B, in]
        weight = self.weight
        if self.is_torgb:
            x = F.conv2d(x * (styles / math.sqrt(weight[0].numel()))[:, :, None, None], weight)
            x = x * self.magnitude_ema.rsqrt() + self.bias[None, :, None, None]
            return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x
        # normalise, then demodulate: the result does not depend on the scale of styles and weights
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        demod = (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()  # [B, out]
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=self.conv_kernel - 1)
        x = x * (demod * self.magnitude_ema.rsqrt())[:, :, None, None]
        args = (self.up_filter, self.down_filter, self.up, self.down, self.pad, LRELU_GAIN, 0.2, self.conv_clamp)
        return filtered_lrelu(x, self.bias, *args)


class SynthesisNetwork(nn.Module):
    """``ws [B, num_layers + 2, w_dim]`` -> images ``[B, img_channels, R, R]``: ``input``, ``L0`` ... ``L{num_layers}``.

    Cutoffs and stopbands grow geometrically from ``first_cutoff`` / ``first_stopband`` to the
    image's Nyquist frequency, reached ``num_critical`` layers before the end (critically sampled).
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,  # training/speed setting of the official code; panda always runs float32
        magnitude_ema_beta: float = 0.999,  # training setting; panda uses the stored magnitude_ema
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_ws, self.output_scale = num_layers + 2, output_scale
        last_cutoff = img_resolution / 2
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_cutoff * last_stopband_rel / first_stopband) ** exponents
        rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, rates / 2) - cutoffs
        sizes = rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), rates[0], cutoffs[0])
        self.layer_names: list[str] = []
        for i in range(num_layers + 1):
            prev = max(i - 1, 0)
            layer = SynthesisLayer(
                w_dim,
                is_torgb=i == num_layers,
                is_critically_sampled=i >= num_layers - num_critical,
                in_channels=int(channels[prev]),
                out_channels=int(channels[i]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[i]),
                in_sampling_rate=int(rates[prev]),
                out_sampling_rate=int(rates[i]),
                in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[i],
                in_half_width=half_widths[prev],
                out_half_width=half_widths[i],
                **layer_kwargs,
            )
            name = f"L{i}_{int(sizes[i])}_{int(channels[i])}"
            self.add_module(name, layer)
            self.layer_names.append(name)

    def forward(self, ws: Tensor) -> Tensor:
        return self.run(self.input(ws[:, 0]), ws, 0)

    def run(self, x: Tensor, ws: Tensor, start: int) -> Tensor:
        """The image from the layers ``layer_names[start:]``, given the input ``x`` of the first."""
        for i, name in enumerate(self.layer_names[start:], start):
            x = getattr(self, name)(x, ws[:, i + 1])
        return x * self.output_scale

    def resume(self, path: str, features: Tensor, ws: Tensor) -> Tensor:
        """The image from the output ``features`` of the layer ``path`` (``input``, ``L4_84_512``; empty: this
        network, the image)."""
        if not path:
            return features
        return self.run(features, ws, 0 if path == "input" else self.layer_names.index(path) + 1)


class StyleGAN3Net(nn.Module):
    """The StyleGAN3 generator; its constructor takes the official pickle's ``_init_kwargs``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        mapping = {"num_layers": 2, **(mapping_kwargs or {})}  # StyleGAN3's default depth
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.synthesis.num_ws, **mapping)

    def forward(self, z: Tensor, c: Tensor | None = None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        return self.synthesis(self.mapping(z, c, psi, cutoff))


class StyleGAN3(OfficialStyleGAN):
    """StyleGAN3 (``gen=stylegan3_ffhq`` ...), from NVIDIA's pickle: :class:`OfficialStyleGAN`'s arguments, no noise."""

    name = "stylegan3"
    network = StyleGAN3Net
