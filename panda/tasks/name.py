"""The name task: the run's parts named after the face region their mass falls on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from panda.base.factors_file import save_labels
from panda.base.files import atomic_write
from panda.tasks.common import sample_features
from panda.tasks.registry import task
from panda.uses.face_regions import REGIONS, NamingSettings, name_parts
from panda.uses.factors import Factors
from panda.uses.visualize import overlay_figure, parts_figure

log = logging.getLogger(__name__)


@task
def name(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Name the run's parts after face regions (:mod:`panda.uses.face_regions`): ``names.md`` (each part's label, score
    and shares), ``parts.png`` and ``overlay.png`` with the labels; stored in the run's ``factors.pt`` with
    ``eval.store``."""
    settings = NamingSettings.from_config(cfg.naming, "naming")
    naming = name_parts(factors.generator, factors.P, factors.hw, settings, cfg.seed)
    files = {"table": atomic_write(out / "names.md", naming.table().encode())}
    files["parts"] = parts_figure(factors.P, factors.hw, out / "parts.png", naming.labels, naming.scores)
    samples, features, state = sample_features(cfg, factors)
    images = factors.images(features, state)
    files["overlay"] = overlay_figure(images, factors.P, factors.hw, out / "overlay.png", naming.labels)
    if cfg.eval.store:
        files["factors"] = save_labels(cfg.run, naming.labels, naming.scores)
    shares = {
        label: {region: round(float(s), 4) for region, s in zip(REGIONS, row.tolist(), strict=True)}
        for label, row in zip(naming.labels, naming.shares, strict=True)
    }
    return {
        "labels": naming.labels,
        "scores": [round(s, 4) for s in naming.scores],
        "faces": naming.faces,
        "naming_samples": settings.samples,
        "samples": samples,
        "shares": shares,
        "files": files,
    }
