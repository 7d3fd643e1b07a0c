"""Concept localisation: where each appearance is present in an image.

Row ``j`` of ``A^T Z_i`` (``[R_C, S]``) says how much appearance ``j`` is present at each spatial
position of sample ``i``. Upsampled to image size and binarised at the dataset mean of that
appearance (over many samples), it becomes a mask of the concept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from panda.method.data import Stream, batch_generator
from panda.method.factorization import flatten_features, localization_maps
from panda.uses.factors import Factors


def appearance_maps(factors: Factors, features: Tensor) -> Tensor:
    """Localisation maps ``A^T Z_i`` of features ``[B, C, H, W]`` as ``[B, R_C, H, W]``."""
    Z = flatten_features(features.float().cpu())
    return localization_maps(Z, factors.A).reshape(Z.shape[0], factors.appearances, *factors.hw)


def dataset_maps(factors: Factors, seed: int, samples: int, batch_size: int) -> Tensor:
    """Localisation maps ``[N, R_C, H, W]`` of ``samples`` fresh samples (the statistics stream)."""
    maps = []
    for index, start in enumerate(range(0, samples, batch_size)):
        size = min(batch_size, samples - start)
        latents = factors.generator.sample_latents(size, batch_generator(seed, Stream.STATS, index))
        maps.append(appearance_maps(factors, factors.features(latents)))
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


def surroundings(factors: Factors, part: int, width: int = 2) -> Tensor:
    """Where part ``part`` is not but its neighbourhood is: ``[H, W]`` bool, the positions within ``width`` of
    the part's mask (its map above half its maximum) outside it."""
    part_map = factors.part_maps()[part]
    inside = part_map > 0.5 * part_map.max()
    grown = F.max_pool2d(inside[None, None].float(), 2 * width + 1, stride=1, padding=width)[0, 0] > 0
    return grown & ~inside


def coverage(masks: Tensor, region: Tensor) -> Tensor:
    """Fraction of ``region`` (``[H, W]`` bool) each appearance's masks ``[B, R_C, H, W]`` cover over the samples:
    ``[R_C]``."""
    return masks[..., region].float().mean(dim=(0, 2))


def background_appearance(factors: Factors, masks: Tensor, part: int) -> tuple[int, Tensor]:
    """The appearance that covers the surroundings of ``part`` most in the binarised masks ``[B, R_C, H, W]`` (the
    skin around the eyebrows, the scene around the head), and every appearance's coverage of them ``[R_C]``:
    what context-aware removal paints over the part."""
    covered = coverage(masks, surroundings(factors, part))
    return int(covered.argmax()), covered
