"""What a run says while it works: Lightning's irrelevant messages filtered, log lines kept off the
progress bar, and progress as a tqdm bar on a terminal, a notebook bar in Jupyter, or as plain log lines when
output goes to a file.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

T = TypeVar("T")
log = logging.getLogger("panda")

# Lightning warnings that do not apply to panda's runs, by message (regular expressions) and category.
IRRELEVANT_WARNINGS = (
    # fit(ckpt_path=None) with an OnExceptionCheckpoint means "resume from the run directory's last
    # checkpoint if there is one"; these two say "no model" and "set save_last=True", neither of which holds.
    (r"`\.fit\(ckpt_path=None\)` was called without a model", UserWarning),
    (r'\.fit\(ckpt_path="last"\) is set, but there is no last checkpoint available', UserWarning),
    # the stats solver steps in training_step by design; the checkpoint holds the state after the step
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", UserWarning),
    # panda.method.data's fixed streams are iterable so that no sampler shards them again, and are read without workers
    (r"Your `IterableDataset` has `__len__` defined", UserWarning),
    # Lightning's own use of a torch API that recent torch deprecates
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
# Lightning's advertisements, logged at INFO by this logger.
LIGHTNING_TIPS = ("💡 Tip:",)
LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"
SECONDS_BETWEEN_LINES = 10.0  # of tracked()'s progress lines when output is not a terminal


def on_terminal() -> bool:
    """Whether both stdout and stderr are terminals or this runs in a Jupyter kernel (else progress is written as plain
    lines)."""
    return (sys.stdout.isatty() and sys.stderr.isatty()) or in_notebook()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm draws a notebook bar, given ``ipywidgets``)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def _no_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LIGHTNING_TIPS)


def quiet_lightning() -> None:
    """Filter the Lightning warnings and tips listed above (each by its message; idempotent)."""
    for message, category in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if _no_tips not in logger.filters:
        logger.addFilter(_no_tips)


@contextlib.contextmanager
def console() -> Iterator[None]:
    """Within: console log lines (and warnings, through logging) are written above tqdm bars, not glued to them."""
    logging.captureWarnings(True)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logging.captureWarnings(False)


class StepLines(ProgressBar):
    """Training progress as one log line every ``every`` steps (and at the last step), plus one
    line after every validation during training: ``step 100/600, 2.91 steps/s, 2.9 min left,
    train/rel_error 0.5321, val/rel_error 0.5204``. For output that is not a terminal.
    """

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = max(1, every)
        self.enabled = True
        self._start: tuple[float, int] = (0.0, 0)

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step, last = trainer.global_step, trainer.max_steps
        if not self.enabled or (step % self.every and step != last):
            return
        parts = [f"step {step}/{last}" if last > 0 else f"step {step}"]
        seconds, done = time.perf_counter() - self._start[0], step - self._start[1]
        if done > 0 and seconds > 0:
            rate = done / seconds
            parts.append(f"{rate:.2f} steps/s")
            if last > step:
                parts.append(f"{_duration((last - step) / rate)} left")
        parts += [f"{key} {float(value):.4f}" for key, value in trainer.progress_bar_metrics.items()]
        log.info(", ".join(parts))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = trainer.callback_metrics
        values = ", ".join(f"{key} {float(metrics[key]):.4f}" for key in metrics if key.startswith("val/"))
        log.info("validation at step %d: %s", trainer.global_step, values)


def progress_bar(every: int) -> ProgressBar:
    """Lightning's tqdm bar on a terminal or in a notebook, else :class:`StepLines` every ``every`` steps."""
    return TQDMProgressBar() if on_terminal() else StepLines(every)


def tracked(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """The ``total`` batches of ``items``, announced as ``description``, with progress while they are
    iterated (a tqdm bar on a terminal, else a log line at most every :data:`SECONDS_BETWEEN_LINES`
    seconds), then a line with the time they took.
    """
    log.info("%s (%d batches) ...", description, total)
    start = last_line = time.perf_counter()
    if on_terminal():
        yield from tqdm(items, total=total, unit="batch", leave=False, file=sys.stdout, dynamic_ncols=True)
    else:
        for done, item in enumerate(items, 1):
            yield item
            now = time.perf_counter()
            if done < total and now - last_line >= SECONDS_BETWEEN_LINES:
                log.info("%s: %d/%d batches", description, done, total)
                last_line = now
    log.info("%s: done in %s", description, _duration(time.perf_counter() - start))


def _duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
