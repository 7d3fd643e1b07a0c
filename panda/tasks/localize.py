"""The localize task: where each appearance is on the numbered samples."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from panda.tasks.common import sample_features, statistics
from panda.tasks.registry import task
from panda.uses import localization
from panda.uses.factors import Factors
from panda.uses.visualize import image_grid, mask_overlay, to_uint8

log = logging.getLogger(__name__)


@task
def localize(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Masks of every appearance over the samples, thresholded at the dataset mean of its map."""
    samples, images, masks, threshold = localized(cfg, factors)
    files = {}
    for j in range(factors.appearances):
        tinted = mask_overlay(images, masks[:, j])
        both = np.concatenate([to_uint8(images), tinted])
        files[f"appearance{j}"] = image_grid(both, out / f"localize_appearance{j}.png", columns=len(samples))
    summary = np.concatenate([mask_overlay(images, masks[:, j]) for j in range(factors.appearances)])
    titles = [f"a{j}" for j in range(factors.appearances) for _ in samples]
    files["all"] = image_grid(summary, out / "localize_all.png", columns=len(samples), titles=titles)
    return {
        "statistics": cfg.eval.statistics,
        "thresholds": [round(float(t), 5) for t in threshold],
        "samples": samples,
        "files": files,
    }


def localized(cfg: DictConfig, factors: Factors) -> tuple[list[int], Tensor, Tensor, Tensor]:
    """The samples, their images ``[B, 3, H, W]``, every appearance's mask on them ``[B, R_C, H, W]`` (bool) and
    the thresholds ``[R_C]`` of the masks: the dataset mean of each appearance's map."""
    maps = localization.dataset_maps(factors, cfg.seed, *statistics(cfg.eval))
    threshold = localization.thresholds(maps)
    samples, features, state = sample_features(cfg, factors)
    images = factors.images(features, state)
    masks = localization.concept_masks(localization.appearance_maps(factors, features), threshold, images.shape[-1])
    return samples, images, masks, threshold
