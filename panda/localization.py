"""Concept localisation: where each appearance is present in an image.

Row ``j`` of ``A^T Z_i`` (``[R_C, S]``) says how much appearance ``j`` is present at each spatial
position of sample ``i``. Upsampled to image size and binarised at the dataset mean of that
appearance (over many samples), it becomes a mask of the concept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from panda.data import Stream, batch_generator
from panda.factorization import flatten_features, localization_maps
from panda.runs import Run


def appearance_maps(run: Run, features: Tensor) -> Tensor:
    """Localisation maps ``A^T Z_i`` of features ``[B, C, H, W]`` as ``[B, R_C, H, W]``."""
    Z = flatten_features(features.float().cpu())
    return localization_maps(Z, run.A).reshape(Z.shape[0], run.appearances, *run.hw)


def dataset_maps(run: Run, seed: int, samples: int, batch_size: int) -> Tensor:
    """Localisation maps ``[N, R_C, H, W]`` of ``samples`` fresh samples (the statistics stream)."""
    maps = []
    for index, start in enumerate(range(0, samples, batch_size)):
        size = min(batch_size, samples - start)
        latents = run.generator.sample_latents(size, batch_generator(seed, Stream.STATS, index))
        maps.append(appearance_maps(run, run.features(latents)))
    return torch.cat(maps)


def thresholds(maps: Tensor) -> Tensor:
    """Per-appearance binarisation thresholds ``[R_C]``: the mean of each map over samples and positions."""
    return maps.mean(dim=(0, 2, 3))


def binarize(maps: Tensor, threshold: Tensor) -> Tensor:
    """Boolean masks ``[B, R_C, H, W]``: where appearance ``j`` exceeds its threshold ``threshold[j]``."""
    return maps > threshold[None, :, None, None]


def concept_masks(maps: Tensor, threshold: Tensor, size: int) -> Tensor:
    """Maps ``[B, R_C, H, W]`` upsampled (bilinear) to ``size x size`` and binarised: ``[B, R_C, size, size]``."""
    upsampled = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    return binarize(upsampled, threshold)


def border_coverage(masks: Tensor) -> Tensor:
    """Fraction of border positions each appearance covers, averaged over samples: ``[B, R_C, H, W] -> [R_C]``."""
    border = torch.ones(masks.shape[-2:], dtype=torch.bool)
    border[1:-1, 1:-1] = False
    return masks[..., border].float().mean(dim=(0, 2))


def background_appearance(masks: Tensor) -> int:
    """The appearance whose masks ``[B, R_C, H, W]`` cover the image border most across samples."""
    return int(border_coverage(masks).argmax())
