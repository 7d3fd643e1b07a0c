"""The studio task: the interactive editor in the browser."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from panda.tasks.registry import task
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


@task
def studio(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Serve the interactive editor (:mod:`panda.studio`) until Ctrl-C; Gradio is imported only for this task."""
    from panda.studio.app import serve

    return serve(cfg, factors, out)
