"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig

from panda.errors import PandaError

T = TypeVar("T")
log = logging.getLogger("panda")


def run(task: Callable[[], T]) -> T:
    """Run ``task``; a :class:`PandaError` (bad input) is logged as one line and exits with code 2,
    removing the Hydra run directory if the task wrote nothing into it (:func:`remove_stub`).

    Configs are built with :func:`panda.config.instantiate`, which lets such errors through unwrapped.
    """
    try:
        return task()
    except PandaError as error:
        log.error("error: %s", error)
        remove_stub()
        sys.exit(2)


def remove_stub() -> None:
    """Remove the Hydra run directory if it holds nothing but Hydra's config (``.hydra``) and the job's
    log, and the directories above it inside the working directory that this leaves empty."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir).resolve()
    if not out.is_dir() or {p.name for p in out.iterdir()} - {hydra.output_subdir, f"{hydra.job.name}.log"}:
        return
    shutil.rmtree(out)
    cwd = Path(hydra.runtime.cwd).resolve()
    for parent in out.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            return
        os.rmdir(parent)
