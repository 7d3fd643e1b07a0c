"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from panda.base.config import check_overrides
from panda.base.errors import BusyError, Interrupted, PandaError, as_bad_input
from panda.base.files import LOCK_FILE, check_writable, lock_if_free
from panda.base.multirun import in_multirun
from panda.cli.sweep import sweep_job

T = TypeVar("T")
log = logging.getLogger("panda")


def command(task: Callable[[], T]) -> T | None:
    """Run ``task``; bad input (a :class:`PandaError`, a full disk, a key the config lacks: :func:`as_bad_input`)
    is logged as one line and exits with code 2, removing the Hydra run directory if the task wrote nothing into it
    (:func:`remove_stub`); an :class:`Interrupted` run is one line with its exit code (143 after ``SIGTERM``, 130
    after Ctrl-C). Inside a multirun a failing job is recorded and returns (:func:`panda.cli.sweep.sweep_job`)
    instead.

    The command ends with the task: its objects are left to the process's exit, not to the interpreter's final
    garbage collection (``gc.freeze``), which is slow once Lightning is imported
    (``experiments/results/commands_cpu.md``).
    """
    if in_multirun():
        return sweep_job(task)
    try:
        return task()
    except Interrupted as stop:
        log.error("%s", stop)
        sys.exit(stop.exit_code)
    except Exception as error:
        problem = as_bad_input(error)
        if problem is None:
            raise
        log.error("error: %s", problem)
        if not isinstance(problem, BusyError):  # a busy directory is another run's
            remove_stub()
        sys.exit(2)
    finally:
        gc.freeze()


def check_command_line(config_name: str) -> None:
    """Exit with code 2 and one line unless Hydra composes ``config_name`` (or ``--config-name``) with the command
    line's overrides (:func:`panda.base.config.check_overrides`): checked before Hydra starts, whose own error is
    several lines and exit code 1."""
    args = get_args_parser().parse_args()
    try:
        check_overrides(args.overrides, args.config_name or config_name, multirun=args.multirun)
        for override in OverridesParser.create().parse_overrides(args.overrides):  # Hydra writes into it first
            directory = None if override.is_sweep_override() else Path(str(override.value()))
            if override.key_or_group in ("hydra.run.dir", "hydra.sweep.dir") and directory:
                check_writable(directory)
    except PandaError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def remove_stub() -> None:
    """Remove the Hydra run directory if it holds nothing but Hydra's config (``.hydra``), the job's log and the run's
    lock file, and no live process holds that lock, and the directories above it inside the working directory that
    this leaves empty."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir).resolve()
    if not out.is_dir() or {p.name for p in out.iterdir()} - {hydra.output_subdir, f"{hydra.job.name}.log", LOCK_FILE}:
        return
    with lock_if_free(out) as free:
        if not free:  # a live run's directory, whatever it holds so far
            return
        shutil.rmtree(out)
    cwd = Path(hydra.runtime.cwd).resolve()
    for parent in out.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            return
        os.rmdir(parent)
