"""StyleSpace (Wu et al., 2021): single style channels whose effect falls inside the region.

Every channel ``c`` of the generator's style vectors (:meth:`FeatureGenerator.style_layers`) is
nudged by ``delta`` standard deviations on the calibration samples; its score is the mean share
of the image change that lies inside the ROI. Directions are the best-scoring channels; an edit
adds ``scale`` standard deviations to that one channel.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.roir.baselines.base import Baseline, Need


class StyleSpace(Baseline):
    """Args: gen; channels: how many top channels to keep; delta: probe size in standard deviations."""

    name = "stylespace"
    needs = frozenset({Need.STYLE_CHANNELS, Need.REGION_FIT})

    def __init__(self, gen: FeatureGenerator, channels: int, delta: float) -> None:
        super().__init__(gen)
        self.layers = gen.style_layers()
        if not self.layers:
            raise ConfigError(f"StyleSpace needs style channels (a StyleGAN); generator '{gen.name}' has none")
        self.channels, self.delta = channels, delta
        self.selected: list[tuple[str, int]] = []  # (style layer, channel) of each direction
        self.std: dict[str, Tensor] = {}

    @contextmanager
    def _nudged(self, edits: list[tuple[str, int, Tensor]]):
        """While open, add ``amounts[b]`` standard deviations to style ``channel`` of ``layer`` in sample ``b``
        for each ``(layer, channel, amounts [B])`` of ``edits``."""

        def hook(layer: str, channel: int, amounts: Tensor):
            def add(_module: torch.nn.Module, _inputs: object, styles: Tensor) -> Tensor:
                styles = styles.clone()
                styles[:, channel] += amounts.to(styles) * self.std[layer][channel]
                return styles

            return add

        handles = [self.gen.net.get_submodule(edit[0]).register_forward_hook(hook(*edit)) for edit in edits]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _style_std(self, latents: Tensor) -> dict[str, Tensor]:
        recorded: dict[str, Tensor] = {}
        handles = [
            self.gen.net.get_submodule(layer).register_forward_hook(
                lambda _m, _i, out, layer=layer: recorded.__setitem__(layer, out.std(0))
            )
            for layer in self.layers
        ]
        try:
            self.gen(latents)
        finally:
            for handle in handles:
                handle.remove()
        return recorded

    def find(self, latents: Tensor, masks: Tensor | None) -> Tensor:
        with torch.inference_mode():
            self.std = self._style_std(latents)
            original = self.gen(latents)
            scored = []
            for layer in self.layers:
                for channel in range(len(self.std[layer])):
                    with self._nudged([(layer, channel, torch.full((len(latents),), self.delta))]):
                        change = (self.gen(latents) - original).abs().sum(1, keepdim=True)  # [N, 1, H, W]
                    share = (change * masks).flatten(1).sum(1) / change.flatten(1).sum(1).clamp_min(1e-12)
                    scored.append((float(share.mean()), layer, channel))
        scored.sort(key=lambda item: -item[0])
        self.selected = [(layer, channel) for _, layer, channel in scored[: self.channels]]
        return torch.eye(len(self.selected))  # one-hot over the selected channels (they are not code directions)

    def label(self, k: int) -> str:
        layer, channel = self.selected[k]
        return f"{layer}[{channel}]"

    def prepare(self, latents: Tensor) -> Tensor:
        return latents.to(self.gen.device)

    def images(self, prepared: Tensor, directions: Tensor, scales: Tensor) -> Tensor:
        edits = [
            (*self.selected[k], torch.where(directions == k, scales, torch.zeros_like(scales)))
            for k in directions.unique().tolist()
        ]
        with torch.inference_mode(), self._nudged(edits):
            return self.gen(prepared).cpu()
