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
    """Run ``task``; a :class:`PandaError` (bad input) is logged as one line and exits with code 2.

    The error is also found behind the wrappers Hydra puts around exceptions raised while
    instantiating a config (``InstantiationException``).
    """
    try:
        return task()
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, PandaError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        log.error("error: %s", cause)
        sys.exit(2)
