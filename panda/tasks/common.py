"""What several evaluate tasks share: the numbered samples, their features and a before/after grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from panda.base.config import positive_int
from panda.base.errors import ConfigError
from panda.generators.base import ResumeState
from panda.uses import editing
from panda.uses.factors import Factors
from panda.uses.visualize import image_grid, to_uint8


def sample_features(cfg: DictConfig, factors: Factors) -> tuple[list[int], torch.Tensor, ResumeState]:
    """The requested sample indices, their features at the run's layer and the state resuming from them."""
    samples = list(cfg.samples) if OmegaConf.is_list(cfg.samples) else cfg.samples
    if not isinstance(samples, list) or not samples or not all(_index(i) for i in samples):
        raise ConfigError(f"samples={samples} must be a non-empty list of sample indices >= 0")
    latents = factors.latents(cfg.seed, samples)
    return samples, *factors.features_and_state(latents)


def before_after(
    factors: Factors,
    features: torch.Tensor,
    state: ResumeState,
    edits: list[editing.Edit],
    samples: list[int],
    path: Path,
) -> Path:
    """The samples before (top) and after (bottom) ``edits``, as one grid at ``path``."""
    offset = editing.edit_offset(factors, edits)
    before, after = editing.edited_images(factors, features, state, offset, scales=(0.0, 1.0))
    titles = [f"sample {i}" for i in samples] + ["edited"] * len(samples)
    return image_grid(np.concatenate([to_uint8(before), to_uint8(after)]), path, columns=len(samples), titles=titles)


def statistics(settings: DictConfig) -> tuple[int, int]:
    """``(eval.statistics, eval.batch_size)``: the samples of the dataset statistics and their batch size."""
    return positive_int("eval.statistics", settings.statistics), positive_int("eval.batch_size", settings.batch_size)


def _index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
