"""ROIR, the region-of-interest ratio of an edit (lower is better).

``ROIR = ||(x' - x) * (1 - M)|| / ||(x' - x) * M||`` per image: how much an edit changes the image
outside the region of interest ``M`` relative to inside it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def roir(original: Tensor, edited: Tensor, mask: Tensor) -> Tensor:
    """Per-image ROIR ``[B]`` of images ``[B, 3, H, W]`` and masks ``[B, 1, H, W]`` in ``[0, 1]``.

    Images whose edit does not change the region (inside norm 0) give ``nan``.
    """
    change = edited - original
    outside = (change * (1 - mask)).flatten(1).norm(dim=1)
    inside = (change * mask).flatten(1).norm(dim=1)
    return torch.where(inside > 0, outside / inside, torch.full_like(inside, float("nan")))


class ROIR(Metric):
    """Mean and standard deviation of :func:`roir` over every image seen (batches, devices, DDP).

    ``compute()`` returns ``{"mean", "std", "count", "unchanged"}``; ``unchanged`` counts images
    whose region the edit left exactly as it was (no ratio exists for them).
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for name in ("total", "total_squares", "count", "unchanged"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, original: Tensor, edited: Tensor, mask: Tensor) -> None:
        ratios = roir(original, edited, mask).double()
        valid = ~torch.isnan(ratios)
        self.total += ratios[valid].sum()
        self.total_squares += ratios[valid].square().sum()
        self.count += valid.sum()
        self.unchanged += (~valid).sum()

    def compute(self) -> dict[str, Tensor]:
        mean = self.total / self.count
        variance = (self.total_squares - self.count * mean.square()) / (self.count - 1).clamp_min(1)
        return {"mean": mean, "std": variance.clamp_min(0).sqrt(), "count": self.count, "unchanged": self.unchanged}
