"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from panda.errors import PandaError

T = TypeVar("T")
log = logging.getLogger("panda")


def run(task: Callable[[], T]) -> T:
    """Run ``task``; a :class:`PandaError` (bad input) is reported as one line and exit code 2."""
    try:
        return task()
    except PandaError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
