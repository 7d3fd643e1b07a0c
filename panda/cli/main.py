"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import errno
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
from omegaconf.errors import OmegaConfBaseException

from panda.base.config import check_overrides
from panda.base.errors import BusyError, ConfigError, Interrupted, PandaError
from panda.base.files import LOCK_FILE, locked_by_another
from panda.base.multirun import in_multirun
from panda.cli.sweep import sweep_job

T = TypeVar("T")
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
TRANSLATED = (OSError, OmegaConfBaseException)  # said in one line when bad_input knows them
log = logging.getLogger("panda")


def command(task: Callable[[], T]) -> T | None:
    """Run ``task``; a :class:`PandaError` (bad input) is logged as one line and exits with code 2,
    removing the Hydra run directory if the task wrote nothing into it (:func:`remove_stub`); an
    :class:`Interrupted` run is one line with its exit code (143 after ``SIGTERM``, 130 after Ctrl-C).

    Configs are built with :func:`panda.base.config.instantiate`, which lets such errors through unwrapped.
    Inside a multirun a failing job is recorded and returns (:func:`panda.cli.sweep.sweep_job`) instead.

    The command ends with the task: its objects are left to the process's exit, not to the interpreter's final
    garbage collection (``gc.freeze``), which takes 1-1.5 s once Lightning is imported
    (``experiments/results/commands_cpu.md``).
    """
    if in_multirun():
        return sweep_job(task)
    try:
        return task()
    except (PandaError, *TRANSLATED) as error:
        error = error if isinstance(error, PandaError) else bad_input(error)
        log.error("error: %s", error)
        if not isinstance(error, BusyError):  # a busy directory is another run's
            remove_stub()
        sys.exit(2)
    except Interrupted as stop:
        log.error("%s", stop)
        sys.exit(stop.exit_code)
    finally:
        gc.freeze()


def bad_input(error: Exception) -> PandaError:
    """A full disk, an unwritable directory or a key the config lacks, said in one line with what to do; any other
    error as it is."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
        return ConfigError(
            f"cannot write {error.filename or 'a result'}: {error.strerror}; make room or make it writable, then run "
            "the same command again (training resumes from its last checkpoint)"
        )
    if isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        reason = str(error.msg).splitlines()[0]
        return ConfigError(f"the config has no value for {error.full_key}, which this command needs ({reason})")
    raise error


def check_command_line(config_name: str) -> None:
    """Exit with code 2 and one line unless Hydra composes ``config_name`` (or ``--config-name``) with the command
    line's overrides (:func:`panda.base.config.check_overrides`): checked before Hydra starts, whose own error is
    several lines and exit code 1."""
    args = get_args_parser().parse_args()
    try:
        check_overrides(args.overrides, args.config_name or config_name, multirun=args.multirun)
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
    if locked_by_another(out):  # a live run's directory, whatever it holds so far
        return
    shutil.rmtree(out)
    cwd = Path(hydra.runtime.cwd).resolve()
    for parent in out.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            return
        os.rmdir(parent)
