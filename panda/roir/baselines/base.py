"""What every edit method offers the ROIR benchmark: ranked candidate directions and edited images.

An :class:`Editor` turns a batch of latents into edited images along its ``k``-th candidate
direction at a signed ``scale``, and declares what it :class:`Need` s beyond a generator. A :class:`Baseline`
is an editor whose directions ``[K, D]`` live in the generator's code space (:meth:`FeatureGenerator.codes`:
``z``, or ``w`` for StyleGAN) and are found by :meth:`Baseline.fit`, which records how long that took.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from enum import Enum
from typing import Any

import torch
from torch import Tensor

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator, ResumeState


class Need(Enum):
    """What a method needs beyond a generator and calibration latents; the benchmark skips a method whose need the
    generator or the run cannot meet, or meets it (a fit per region)."""

    STYLE_CHANNELS = "style channels"  # the generator's style vectors (StyleGAN2/3)
    REGION_FIT = "a fit per region"  # its directions are found on each region's calibration masks
    NAMED_PARTS = "parts named after the region"  # the run's part labels (panda.uses.face_regions)


class Editor(ABC):
    """Edits images along ranked candidate directions (the first is the method's best guess)."""

    name: str = "editor"
    seconds: float = 0.0  # time spent finding the directions
    needs: frozenset[Need] = frozenset()

    @property
    @abstractmethod
    def count(self) -> int:
        """The number of candidate directions."""

    def preselect(self, region: str, budget: int | None) -> list[int]:
        """The candidates a search for ``region`` tries, best guess first, chosen without looking at ROIR: at most
        ``budget`` (``None``: all). A baseline's are its leading directions."""
        return list(range(self.count if budget is None else min(budget, self.count)))

    def label(self, k: int) -> str:
        """A readable name of direction ``k``."""
        return f"direction {k}"

    @property
    def source(self) -> Hashable:
        """What found the directions: editors of one source prepare batches alike and took its time once."""
        return id(self)

    def edit(self, k: int) -> tuple[Hashable, Hashable]:
        """What direction ``k`` is: editors that give equal values prepare batches alike, and their
        directions of equal values make equal images at equal scales (so an evaluation makes them once)."""
        return self.source, k

    def fit(self, latents: Tensor, masks: Tensor | None = None) -> Editor:
        """This editor with its directions found on calibration ``latents`` (and ROI ``masks`` ``[N, 1, H, W]``);
        an editor whose directions need no fitting is ready as it is."""
        return self

    def fit_regions(self, latents: Tensor, masks: Mapping[str, Tensor]) -> dict[str, Editor]:
        """A copy of this editor fitted to each region's calibration ``masks``."""
        return {region: copy.copy(self).fit(latents, mask) for region, mask in masks.items()}

    def prepare(self, latents: Tensor) -> Any:
        """What :meth:`images` needs of a batch (a tensor, a resume state or a tuple of them, the batch
        first), computed once for every direction and scale."""
        return latents

    @abstractmethod
    def images(self, prepared: Any, directions: Tensor, scales: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` of the prepared batch, sample ``b`` edited along candidate
        ``directions[b]`` by ``scales[b]`` (``directions`` ``[B]`` long, ``scales`` ``[B]``)."""


def repeat(prepared: Any, times: int) -> Any:
    """A prepared batch (a tensor, a resume state, or a tuple of them) repeated ``times`` along the batch axis."""
    if isinstance(prepared, tuple):
        return tuple(repeat(x, times) for x in prepared)
    if isinstance(prepared, ResumeState):
        values = {name: None if value is None else repeat(value, times) for name, value in prepared.values.items()}
        return replace(prepared, values=values)
    return prepared.repeat(times, *([1] * (prepared.dim() - 1)))


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``values`` ``[B, ...]`` reshaped to broadcast over every axis of ``like`` ``[B, ...]`` after the batch's."""
    return values.reshape(len(values), *([1] * (like.dim() - values.dim())), *values.shape[1:]).to(like)


class Baseline(Editor):
    """A latent-space method: unit directions ``[K, D]`` in the generator's code space, best first.

    Subclasses implement :meth:`find`; those that need :attr:`Need.REGION_FIT` use the calibration ``masks``.
    """

    def __init__(self, gen: FeatureGenerator) -> None:
        self.gen = gen
        self.directions = torch.empty(0)

    @property
    def count(self) -> int:
        return len(self.directions)

    @abstractmethod
    def find(self, latents: Tensor, masks: Tensor | None) -> Tensor:
        """Ranked unit directions ``[K, D]`` from calibration ``latents`` (and ROI ``masks`` ``[N, 1, H, W]``)."""

    def fit(self, latents: Tensor, masks: Tensor | None = None) -> Baseline:
        """Find the directions and record the seconds it took in :attr:`seconds`."""
        if Need.REGION_FIT in self.needs and masks is None:
            raise ConfigError(f"{self.name} is region-conditioned: it needs ROI masks of its calibration samples")
        device = self.gen.device
        return self._found(lambda: self.find(latents.to(device), None if masks is None else masks.to(device)))

    def _found(self, find: Callable[[], Tensor], seconds: float = 0.0) -> Baseline:
        """This baseline with ``find()``'s directions; :attr:`seconds`: its time plus ``seconds``."""
        start = time.perf_counter()
        self.directions = find()
        if self.directions.is_cuda:
            torch.cuda.synchronize()
        self.seconds = seconds + time.perf_counter() - start
        return self

    def prepare(self, latents: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.gen.codes(latents.to(self.gen.device))

    def images(self, prepared: Tensor, directions: Tensor, scales: Tensor) -> Tensor:
        offsets = scales[:, None].to(prepared) * self.directions[directions].to(prepared)  # [B, D]
        with torch.inference_mode():
            return self.gen.synthesize(prepared + per_sample(offsets, prepared)).cpu()


def first_codes(codes: Tensor) -> Tensor:
    """``[N, D]``: one code per sample (style-based generators repeat ``w`` over their layers)."""
    return codes.reshape(len(codes), -1, codes.shape[-1])[:, 0]


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` ``[K, D]`` scaled to unit norm."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
