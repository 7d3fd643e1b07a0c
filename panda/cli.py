"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from panda.errors import PandaError
from panda.sweep import in_multirun, run_job

T = TypeVar("T")
log = logging.getLogger("panda")


def run(task: Callable[[], T]) -> T | None:
    """Run ``task``; a :class:`PandaError` (bad input) is logged as one line and exits with code 2.

    Configs are built with :func:`panda.config.instantiate`, which lets such errors through unwrapped.
    Inside a multirun a failing job is recorded and returns (:func:`panda.sweep.run_job`) instead.
    """
    if in_multirun():
        return run_job(task)
    try:
        return task()
    except PandaError as error:
        log.error("error: %s", error)
        sys.exit(2)
