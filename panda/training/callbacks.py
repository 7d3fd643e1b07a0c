"""The Lightning callbacks of a training run, configured in ``conf/callbacks/`` (``base.yaml``: what every run needs;
``default.yaml``: the default set, which says what runs after training and how to turn each part off).

During training: :class:`StopOnDivergence`, :class:`FitRecord` (the timing and the final validation error),
:class:`Convergence`. Once training has ended (``on_fit_end``, in the config's order): :class:`PartNames`, then
:class:`PandaArtifacts`. Once every ``on_fit_end`` hook has run (``teardown``): :class:`SaveFactors` writes
``factors.pt``, :class:`FitRecord` ``metrics.json`` (then :class:`panda.training.loggers.WandbSummary`). ROIR during
and after training is :mod:`panda.roir.callbacks`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from panda.base.errors import ConfigError, DivergenceError, WeightsError
from panda.base.factors_file import FACTORS_FILE, save_factors
from panda.base.files import METRICS_FILE, save_json
from panda.base.progress import progress_bar
from panda.method.data import Stream
from panda.method.model import LABELS, PandA, part_labels
from panda.uses import visualize
from panda.uses.face_regions import NamingSettings, name_parts

log = logging.getLogger(__name__)
PARTS_PNG, OVERLAY_PNG, CURVE_PNG = "parts.png", "overlay.png", "error_curve.png"


def published(trainer: pl.Trainer) -> dict[str, Any]:
    """Every ``trainer.callback_metrics`` entry outside ``train/`` and ``val/`` (what callbacks measure and publish,
    e.g. ``roir/<region>`` of :class:`panda.roir.callbacks.FinalROIR`), tensors as numbers."""
    return {
        key: value.item() if isinstance(value, torch.Tensor) else value
        for key, value in trainer.callback_metrics.items()
        if not key.startswith(("train/", "val/"))
    }


def command_overrides() -> list[str]:
    """The command line's overrides (none outside a Hydra application)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def solver_name(model: PandA) -> str:
    """The ``model/solver`` option the run chose (``pgd``, ``stats``), or the solver's class name outside Hydra."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices["model/solver"]
    return type(model.solver).__name__


def progress(every: int, enabled: bool) -> ProgressBar | None:
    """The progress of training (:func:`panda.base.progress.progress_bar`: a tqdm bar on a terminal, else a line every
    ``every`` steps), or ``None`` (no callback) when ``trainer.enable_progress_bar`` is off."""
    return progress_bar(every) if enabled else None


class StopOnDivergence(pl.Callback):
    """Stops training with a :class:`DivergenceError` after the first step whose loss or factors are NaN or
    infinite, or whose parts are all zero (a collapse: the factors reconstruct nothing), before anything of that
    step is saved (Lightning runs checkpoint callbacks last)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        values = [*pl_module.parameters(), *([loss] if isinstance(loss, torch.Tensor) else [])]
        if not all(torch.isfinite(v).all() for v in values):
            raise DivergenceError(
                f"training diverged at step {trainer.global_step}: the loss or the factors became NaN or infinite; "
                "lower the learning rate"
            )
        if not pl_module.P.any():
            raise DivergenceError(
                f"training collapsed at step {trainer.global_step}: every part became zero (P = 0), so the factors "
                "reconstruct nothing; lower the learning rate"
            )


class FitRecord(pl.Callback):
    """The run's record, written to ``metrics.json`` by rank 0 once every ``on_fit_end`` hook has run (``teardown``):
    the final validation error, the steps and samples, the training time, when the first training step started,
    the run's settings, every metric that callbacks published (:func:`published`) and the part labels when named.

    Training validates after its last step (it asks Lightning to stop there, and Lightning validates a run asked to
    stop), so the final error is always that of the final factors. ``fit_seconds``: the training of the factors,
    from the start of ``fit`` to the end of training (what runs after training is not in it), summed over the
    commands that trained them (a resumed run adds its own to what its checkpoint holds; ``command_fit_seconds``:
    this command's alone); ``first_step_seconds``: since ``started``, in the first command that trained.

    Args:
        output_dir: where ``metrics.json`` is written.
        generator: the generator's config name (``gen.name``).
        layer: the layer learnt at.
        lr: the solver's learning rate (``None``: a solver without one).
        started: when the command started (a :func:`time.time`), given by :func:`panda.training.fit.train`.
    """

    def __init__(self, output_dir: str, generator: str, layer: str, lr: float | None, started: float) -> None:
        self.output_dir, self.generator, self.layer, self.lr = Path(output_dir), generator, layer, lr
        self.started = started
        self.began = time.perf_counter()
        self.seconds: float | None = None
        self.first_step_seconds: float | None = None
        self.error: float | None = None  # of the factors as they are now, once validated
        self.earlier_seconds = 0.0  # of the commands that trained the factors before this one

    def state_dict(self) -> dict[str, Any]:
        seconds = self.earlier_seconds + time.perf_counter() - self.began
        return {"fit_seconds": seconds, "first_step_seconds": self.first_step_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        seconds, first = state_dict.get("fit_seconds"), state_dict.get("first_step_seconds")
        if not _seconds(seconds) or not (first is None or _seconds(first)):
            raise ConfigError(f"the checkpoint's FitRecord state {state_dict!r} is not times in seconds")
        self.earlier_seconds, self.first_step_seconds = float(seconds), first  # the first command's start-up

    @staticmethod
    def of(trainer: pl.Trainer) -> FitRecord:
        """The trainer's :class:`FitRecord`; a :class:`ConfigError` when the config turned it off."""
        found = [c for c in trainer.callbacks if isinstance(c, FitRecord)]
        if not found:
            raise ConfigError("callbacks.record is off: training needs it (the final metrics, metrics.json)")
        return found[0]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.began = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.began  # a run resumed at its last step trains no further

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - self.started

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.error = None  # the factors changed
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True  # Lightning validates when a run is asked to stop

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.error = float(trainer.callback_metrics["val/rel_error"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.began

    def metrics(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The run's final metrics (complete once every ``on_fit_end`` hook has run)."""
        model: PandA = trainer.lightning_module
        labels, _ = part_labels(model)
        metrics = {
            "val_rel_error": self.error,
            "steps": trainer.global_step,
            "samples": trainer.global_step * trainer.datamodule.global_batch_size,
            "fit_seconds": None if self.seconds is None else round(self.earlier_seconds + self.seconds, 2),
            "command_fit_seconds": None if self.seconds is None else round(self.seconds, 2),
            "first_step_seconds": None if self.first_step_seconds is None else round(self.first_step_seconds, 2),
            "generator": self.generator,
            "layer": self.layer,
            "solver": solver_name(model),
            "lr": self.lr,
            "parts": model.hparams.parts,
            "appearances": model.hparams.appearances,
            "overrides": command_overrides(),
        }
        return metrics | published(trainer) | ({} if labels is None else {"labels": labels})

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        metrics = self.metrics(trainer)
        save_json(metrics, self.output_dir / METRICS_FILE)
        log.info(
            "final validation relative error %.4f after %d steps (training %.1f s, its first step %s s after the "
            "command started); results in %s",
            metrics["val_rel_error"],
            metrics["steps"],
            metrics["fit_seconds"],
            metrics["first_step_seconds"],
            self.output_dir,
        )


class PartNames(pl.Callback):
    """Once training has ended (``on_fit_end``, rank 0), names the parts after the face region their mass falls on
    (:mod:`panda.uses.face_regions`) and sets their labels and scores on the LightningModule (:func:`part_labels`),
    where :class:`SaveFactors` and :class:`PandaArtifacts` read them. Nothing when ``naming.after_training`` is off;
    a warning, and the parts stay unnamed, when dlib finds no face (a generator of random weights) or its landmark
    model is missing.

    Args:
        naming: the ``naming`` config node (``after_training`` and the fields of :class:`NamingSettings`).
        seed: seed of the samples drawn.
    """

    def __init__(self, naming: Mapping[str, Any], seed: int) -> None:
        self.enabled = bool(naming["after_training"])
        self.settings = NamingSettings.from_config(naming, "naming")
        self.seed = seed

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        _, height, width = pl_module.hparams.feature_shape
        generator = trainer.datamodule.generator
        try:
            naming = name_parts(generator, pl_module.P.detach(), (height, width), self.settings, self.seed)
        except (ConfigError, WeightsError) as error:
            log.warning("the parts are not named: %s", error)
            return
        log.info("the parts, named on %d faces:\n%s", naming.faces, naming.table())
        setattr(pl_module, LABELS, (naming.labels, naming.scores))


class SaveFactors(pl.Callback):
    """Once training has ended (``on_fit_end``, after :class:`PartNames` and before the pictures and the ROIR in the
    config's order, so that a failure of theirs keeps the factors), rank 0 writes the factors to ``factors.pt``
    (:func:`panda.base.factors_file.save_factors`, atomically), with the part labels when they are named.

    Args:
        output_dir: the run directory.
        generator: the generator's config name (``gen.name``).
        layer: the layer learnt at.
        config: the run's config (stored in the file), given by :func:`panda.training.fit.train`.
    """

    def __init__(self, output_dir: str, generator: str, layer: str, config: DictConfig) -> None:
        self.path = Path(output_dir) / FACTORS_FILE
        self.generator, self.layer, self.config = generator, layer, config

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            labels, scores = part_labels(pl_module)
            save_factors(pl_module, self.generator, self.layer, self.config, self.path, labels, scores)


class PandaArtifacts(pl.Callback):
    """Records the validation error after every validation of training; once training has ended (``on_fit_end``,
    rank 0, after :class:`PartNames` in the config's order) writes ``parts.png`` (every part as a mask, with its
    label and score when named), ``overlay.png`` (parts over validation samples in distinct colours) and
    ``error_curve.png`` into ``output_dir`` and logs them to the run's W&B or TensorBoard logger. Training validates
    after its last step (:class:`FitRecord`), so the curve always ends at the final factors.
    """

    def __init__(self, output_dir: str, num_images: int = 16) -> None:
        self.output_dir = Path(output_dir)
        self.num_images = num_images
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        entry = (trainer.global_step, float(trainer.callback_metrics["val/rel_error"]))
        self.history = [h for h in self.history if h[0] != entry[0]] + [entry]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = checked_history(state_dict, type(self).__name__)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(trainer, pl_module)

    def write(self, trainer: pl.Trainer, model: PandA) -> list[Path]:
        """Write and log ``parts.png`` and ``overlay.png`` (with the parts' labels and scores when they are
        named) and ``error_curve.png``."""
        _, height, width = model.hparams.feature_shape
        labels, scores = part_labels(model)
        data = trainer.datamodule
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
        self.history = checked_history(state_dict, type(self).__name__)

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


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


def checked_history(state: Any, name: str) -> list[tuple[int, float]]:
    """The ``history`` of a checkpoint's callback ``state``: ``(step, error)`` pairs; a :class:`ConfigError` for
    anything else (a damaged or crafted checkpoint), before training writes anything."""
    history = state.get("history") if isinstance(state, dict) else None
    if not isinstance(history, list) or not all(
        isinstance(h, (list, tuple))
        and len(h) == 2
        and isinstance(h[0], int)
        and not isinstance(h[0], bool)
        and isinstance(h[1], float)
        for h in history
    ):
        raise ConfigError(f"the checkpoint's {name} history is not (step, error) pairs: the checkpoint is damaged")
    return [(int(step), float(error)) for step, error in history]
