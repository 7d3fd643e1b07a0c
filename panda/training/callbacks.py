"""Lightning callbacks: the pictures of a run, its error history and a stop at convergence.

ROIR during training is :mod:`panda.roir.callbacks`.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from panda.base.errors import ConfigError
from panda.method.data import FeatureDataModule, Stream
from panda.method.model import PandA
from panda.uses import visualize

log = logging.getLogger(__name__)
PARTS_PNG, OVERLAY_PNG, CURVE_PNG = "parts.png", "overlay.png", "error_curve.png"


class PandaArtifacts(pl.Callback):
    """Records the validation error after every validation; :func:`panda.training.fit.train` calls :meth:`write`
    once training has ended and the parts are named, which writes ``parts.png`` (every part as a mask),
    ``overlay.png`` (parts over validation samples in distinct colours) and ``error_curve.png`` into
    ``output_dir`` and logs them to the run's W&B or TensorBoard logger. Training also validates after its
    last step (whether or not that step is a multiple of ``val_check_interval``), so the curve always ends at
    the final factors.
    """

    def __init__(self, output_dir: str, num_images: int = 16) -> None:
        self.output_dir = Path(output_dir)
        self.num_images = num_images
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True  # Lightning validates when a run is asked to stop

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/rel_error" not in trainer.callback_metrics:
            return
        entry = (trainer.global_step, float(trainer.callback_metrics["val/rel_error"]))
        self.history = [h for h in self.history if h[0] != entry[0]] + [entry]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict["history"]]

    def write(
        self,
        trainer: pl.Trainer,
        model: PandA,
        data: FeatureDataModule,
        labels: list[str] | None = None,
        scores: list[float] | None = None,
    ) -> list[Path]:
        """Write and log ``parts.png`` and ``overlay.png`` (with the parts' labels and scores when they are
        named) and ``error_curve.png``."""
        _, height, width = model.hparams.feature_shape
        log.info("rendering %s", PARTS_PNG)
        paths = [visualize.parts_figure(model.P, (height, width), self.output_dir / PARTS_PNG, labels, scores)]
        log.info("rendering %s: generating %d validation images", OVERLAY_PNG, self.num_images)
        with torch.inference_mode():
            images = data.generator(data.latents(Stream.VAL, 0, self.num_images).to(data.generator.device))
        paths.append(visualize.overlay_figure(images, model.P, (height, width), self.output_dir / OVERLAY_PNG, labels))
        if self.history:
            log.info("rendering %s", CURVE_PNG)
            steps, errors = zip(*self.history, strict=True)
            paths.append(visualize.error_curve(steps, errors, self.output_dir / CURVE_PNG))
        log_images(trainer, paths)
        return paths


def log_images(trainer: pl.Trainer, paths: list[Path]) -> None:
    """Send image files to the trainer's W&B and TensorBoard loggers (others ignore them)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger | TensorBoardLogger):
            log.info("logging %d images to %s", len(paths), type(logger).__name__)
        for path in paths:
            key = f"images/{path.stem}"
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                pixels = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image(key, pixels, trainer.global_step, dataformats="HWC")
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()  # written now: the pictures come after training, once the logger has finished


class AfterFit(pl.Callback):
    """A callback that measures the trained factors once training has ended: :func:`panda.training.fit.train` calls
    :meth:`after_fit` after ``fit`` (outside ``fit_seconds``) and adds what it returns to ``metrics.json``."""

    def after_fit(self, trainer: pl.Trainer, model: PandA) -> dict[str, Any]:
        """The metrics measured on ``model``'s final factors (e.g. ``roir/<region>``)."""
        raise NotImplementedError


class Convergence(pl.Callback):
    """Stops training once ``monitor`` has converged, and logs why training stopped.

    Converged: at each of the last ``patience`` validations ``monitor`` moved by at most ``rel_tol``
    times its previous value, up or down. An error that still falls, or rises, by more keeps the
    run going, up to ``trainer.max_steps``. Checked at every validation of ``fit``
    (``trainer.val_check_interval`` sets how often); the defaults are in ``conf/callbacks/early_stop.yaml``.

    Args:
        monitor: the logged metric, e.g. ``val/rel_error``.
        rel_tol: the largest relative change, ``|e_k - e_{k-1}| / e_{k-1}``, that counts as converged.
        patience: consecutive validations that must each change by at most ``rel_tol``.
    """

    def __init__(self, monitor: str, rel_tol: float, patience: int) -> None:
        if not rel_tol > 0:
            raise ConfigError(f"callbacks.early_stop.rel_tol={rel_tol} must be > 0")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"callbacks.early_stop.patience={patience!r} must be an integer >= 1")
        self.monitor, self.rel_tol, self.patience = monitor, rel_tol, patience
        self.history: list[tuple[int, float]] = []
        self.converged = False

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict["history"]]

    def recent_changes(self) -> list[float]:
        """The relative changes of ``monitor`` at the last ``patience`` validations (fewer early on)."""
        pairs = list(itertools.pairwise(value for _, value in self.history))[-self.patience :]
        return [(b - a) / a for a, b in pairs]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return  # not a validation of training (e.g. train.py's final trainer.validate)
        self.history.append((trainer.global_step, float(trainer.callback_metrics[self.monitor])))
        changes = self.recent_changes()
        if len(changes) == self.patience and all(abs(change) <= self.rel_tol for change in changes):
            self.converged = trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history:
            return
        step, value = self.history[-1]
        changes = ", ".join(f"{change:+.3%}" for change in self.recent_changes()) or "none"
        if self.converged:
            log.info(
                "converged at step %d of at most %d: %s = %.4f; its relative changes at the last %d validations %s "
                "are all within rel_tol = %g",
                step,
                trainer.max_steps,
                self.monitor,
                value,
                self.patience,
                changes,
                self.rel_tol,
            )
        elif trainer.global_step >= trainer.max_steps:
            log.info(
                "reached trainer.max_steps = %d before converging: %s = %.4f at step %d, relative changes at the "
                "last validations %s (rel_tol = %g)",
                trainer.max_steps,
                self.monitor,
                value,
                step,
                changes,
                self.rel_tol,
            )
