"""The remove task: a part painted over with the appearance of its surroundings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import Tensor

from panda.base.config import finite_number
from panda.tasks.common import before_after, sample_features, statistics
from panda.tasks.registry import task
from panda.uses import editing, localization
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


@task
def remove(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Paint the background appearance over a part; found around the part unless given."""
    edit, coverage = removal(cfg, factors)
    samples, features, state = sample_features(cfg, factors)
    path = before_after(factors, features, state, [edit], samples, out / "remove_before_after.png")
    return {
        "part": edit.part,
        "background": edit.appearance,
        "alpha": edit.alpha,
        "surroundings_coverage": None if coverage is None else [round(float(c), 4) for c in coverage],
        "samples": samples,
        "files": {"before_after": path},
    }


def removal(cfg: DictConfig, factors: Factors) -> tuple[editing.Edit, Tensor | None]:
    """The removal ``cfg.eval`` asks for, as an edit, and when its background was found around the part (not given),
    how much of the part's surroundings each appearance covers ``[R_C]``."""
    settings = cfg.eval
    part = factors.check_index(settings.part, "part")
    alpha = finite_number("eval.alpha", settings.alpha)
    coverage = None
    if settings.background is None:
        maps = localization.dataset_maps(factors, cfg.seed, *statistics(settings))
        masks = localization.binarize(maps, localization.thresholds(maps))
        background, coverage = localization.background_appearance(factors, masks, part)
        log.info("background appearance %d (covers %.3f of the part's surroundings)", background, coverage[background])
    else:
        background = factors.check_index(settings.background, "appearance")
    return editing.removal(part, background, alpha)[0], coverage
