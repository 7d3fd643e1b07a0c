"""ROIR, the region-of-interest ratio of an edit (lower is better).

``ROIR = ||(x' - x) * (1 - M)|| / ||(x' - x) * M||`` per image: how much an edit changes the image
outside the region of interest ``M`` relative to inside it; :func:`inside_change` measures an edit's strength.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def roir(original: Tensor, edited: Tensor, mask: Tensor) -> Tensor:
    """Per-image ROIR ``[B]`` of images ``[B, 3, H, W]`` and masks ``[B, 1, H, W]`` in ``[0, 1]``.

    Images whose edit does not change the region (inside norm 0) give ``nan``.
    """
    change = edited - original
    outside = (change * (1 - mask)).flatten(1).norm(dim=1)
    inside = (change * mask).flatten(1).norm(dim=1)
    return torch.where(inside > 0, outside / inside, torch.full_like(inside, float("nan")))


def inside_change(original: Tensor, edited: Tensor, mask: Tensor) -> Tensor:
    """RMS change ``[B]`` per pixel and channel inside the ROI of images ``[B, 3, H, W]`` and masks ``[B, 1, H, W]``:
    every method's edit is scaled to the same inside change, so that ROIR compares only what leaks out."""
    area = 3 * mask.flatten(1).sum(1)
    return ((edited - original) * mask).flatten(1).norm(dim=1) / area.clamp_min(1).sqrt()


class ROIR(Metric):
    """Statistics of :func:`roir` over every image seen (batches, devices, DDP).

    ``compute()`` returns ``mean`` and ``std`` (from running sums), ``median``, ``q1`` and ``q3`` (the
    quartiles, linearly interpolated; the interquartile range is ``q3 - q1``), ``above`` (images whose
    ROIR exceeds ``above``), ``count`` (images with a ratio) and ``unchanged`` (images whose region the
    edit left exactly as it was: no ratio exists for them). The quartiles need every ratio: one float
    per image is kept.

    Args:
        above: the ROIR beyond which an image is counted in ``above``.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, above: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.above = above
        for name in ("total", "total_squares", "count", "unchanged"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ratios", default=[], dist_reduce_fx="cat")

    def update(self, original: Tensor, edited: Tensor, mask: Tensor) -> None:
        ratios = roir(original, edited, mask).double()
        valid = ~torch.isnan(ratios)
        self.total += ratios[valid].sum()
        self.total_squares += ratios[valid].square().sum()
        self.count += valid.sum()
        self.unchanged += (~valid).sum()
        self.ratios.append(ratios[valid])

    def compute(self) -> dict[str, Tensor]:
        mean = self.total / self.count
        variance = (self.total_squares - self.count * mean.square()) / (self.count - 1).clamp_min(1)
        ratios = dim_zero_cat(self.ratios) if len(self.ratios) else torch.empty(0, dtype=torch.float64)
        if len(ratios):
            q1, median, q3 = torch.quantile(ratios, ratios.new_tensor([0.25, 0.5, 0.75]))
        else:
            q1 = median = q3 = torch.tensor(float("nan"), dtype=torch.float64)
        return {
            "mean": mean,
            "std": variance.clamp_min(0).sqrt(),
            "median": median,
            "q1": q1,
            "q3": q3,
            "above": (ratios > self.above).sum().double(),
            "count": self.count,
            "unchanged": self.unchanged,
        }
