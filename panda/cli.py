"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from panda.config import check_overrides
from panda.errors import Interrupted, PandaError
from panda.sweep import in_multirun, run_job

T = TypeVar("T")
log = logging.getLogger("panda")


def run(task: Callable[[], T]) -> T | None:
    """Run ``task``; a :class:`PandaError` (bad input) is logged as one line and exits with code 2, an
    :class:`Interrupted` run as one line with its exit code (143 after ``SIGTERM``, 130 after Ctrl-C).

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
    except Interrupted as stop:
        log.error("%s", stop)
        sys.exit(stop.exit_code)


def check_command_line(config_name: str) -> None:
    """Exit with code 2 and one line when the command line names an option a config group lacks (``gen=<unknown>``)
    or an unknown key (``rank.part=16``): checked before Hydra composes ``config_name``."""
    try:
        check_overrides(sys.argv[1:], config_name)
    except PandaError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
