"""The refine task: sample-specific parts refined from the global ones."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from panda.base.config import finite_number, positive_int
from panda.base.errors import ConfigError
from panda.method.factorization import flatten_features
from panda.tasks.common import sample_features
from panda.tasks.registry import task
from panda.uses.factors import Factors
from panda.uses.refinement import refine_parts
from panda.uses.visualize import image_grid, overlay, parts_figure

log = logging.getLogger(__name__)


@task
def refine(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Sample-specific parts ``P_i`` from the global ``P``: errors before/after, global vs refined parts."""
    samples, images, refined, errors = refined_parts(cfg, factors)
    tiles, titles = refined_overlays(factors, images, refined, samples)
    files = {"overlays": image_grid(tiles, out / "refine_overlays.png", len(samples), titles)}
    files["global_parts"] = parts_figure(factors.P, factors.hw, out / "refine_parts_global.png")
    for b, i in enumerate(samples):
        files[f"parts_{i}"] = parts_figure(refined[b], factors.hw, out / f"refine_parts_sample{i}.png")
    return {
        "samples": samples,
        "error_before": [float(e) for e in errors[0]],
        "error_after": [float(e) for e in errors[-1]],
        "files": files,
    }


def refined_parts(cfg: DictConfig, factors: Factors) -> tuple[list[int], Tensor, Tensor, Tensor]:
    """The samples, their images ``[B, 3, H, W]``, their refined parts ``P_i`` ``[B, S, R_S]`` and each sample's
    error before every step and after the last ``[steps + 1, B]`` (:func:`panda.uses.refinement.refine_parts`)."""
    steps = positive_int("eval.steps", cfg.eval.steps)
    lr = finite_number("eval.lr", cfg.eval.lr)
    if lr <= 0:
        raise ConfigError(f"eval.lr={lr} must be > 0")
    samples, features, state = sample_features(cfg, factors)
    refined, errors = refine_parts(flatten_features(features.cpu()), factors.A, factors.P, steps, lr)  # A, P: CPU
    return samples, factors.images(features, state), refined, errors


def refined_overlays(
    factors: Factors, images: Tensor, refined: Tensor, samples: list[int]
) -> tuple[np.ndarray, list[str]]:
    """The samples with the global parts (first row) and with their own refined parts (second), ``[2B, H, W, 3]``,
    and their titles."""
    rows = [overlay(images, factors.P, factors.hw)]
    rows += [overlay(images[b : b + 1], refined[b], factors.hw) for b in range(len(samples))]
    titles = [f"global P, {i}" for i in samples] + [f"refined P_{i}" for i in samples]
    return np.concatenate(rows), titles
