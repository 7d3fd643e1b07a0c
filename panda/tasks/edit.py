"""The edit task: a local edit of the numbered samples, as a before/after grid, a strip and a GIF over strengths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from panda.base.config import finite_number
from panda.generators.base import ResumeState
from panda.tasks.common import before_after, sample_features
from panda.tasks.registry import task
from panda.uses import editing
from panda.uses.factors import Factors
from panda.uses.visualize import image_grid, save_gif, to_uint8

log = logging.getLogger(__name__)


@task
def edit(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Before/after grid, a strip and a GIF over strengths; optionally an atlas of every (part, appearance)."""
    settings = cfg.eval
    if settings.name:
        edits = editing.named_edit(factors, settings.name, settings.zoo_dir)
    else:
        edits = editing.parse_edits(OmegaConf.to_container(settings.edits))
    samples, features, state = sample_features(cfg, factors)
    offset = editing.edit_offset(factors, edits)
    scales = [finite_number(f"eval.scales[{i}]", t) for i, t in enumerate(settings.scales)]
    atlas_alpha = finite_number("eval.atlas_alpha", settings.atlas_alpha) if settings.atlas else None
    frames = editing.edited_images(factors, features, state, offset, scales)  # [T, B, 3, H, W]
    files = {"before_after": before_after(factors, features, state, edits, samples, out / "edit_before_after.png")}
    strip = np.concatenate([to_uint8(frames[:, b]) for b in range(len(samples))])
    titles = [f"x{t:g}" for t in scales] * len(samples)
    files["strip"] = image_grid(strip, out / "edit_strip.png", columns=len(scales), titles=titles)
    files["gif"] = save_gif([np.concatenate(list(to_uint8(f)), axis=1) for f in frames], out / "edit.gif")
    if settings.atlas:
        files.update(_atlas(factors, features, state, atlas_alpha, out))
    return {"edits": [vars(e) for e in edits], "samples": samples, "scales": scales, "files": files}


def _atlas(factors: Factors, features: torch.Tensor, state: ResumeState, alpha: float, out: Path) -> dict[str, Path]:
    """For each part: rows = appearances, columns = samples, each edited with ``alpha``."""
    files = {}
    for k in range(factors.parts):
        offsets = [editing.edit_offset(factors, [editing.Edit(k, j, alpha)]) for j in range(factors.appearances)]
        images = torch.cat([editing.edited_images(factors, features, state, o)[0] for o in offsets])
        titles = [f"p{k} a{j}" for j in range(factors.appearances) for _ in range(features.shape[0])]
        files[f"atlas_part{k}"] = image_grid(to_uint8(images), out / f"atlas_part{k}.png", features.shape[0], titles)
    return files
