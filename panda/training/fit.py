"""The training entry point behind ``train.py``: compose, validate, fit, write the results."""

from __future__ import annotations

import csv
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from panda.base.config import instantiate, positive_int
from panda.base.errors import ConfigError, DivergenceError, Interrupted, WeightsError
from panda.base.factors_file import FACTORS_FILE, load_factors, save_factors
from panda.base.files import METRICS_FILE, lock_directory, save_json
from panda.base.progress import console, progress_bar, quiet_lightning
from panda.training.callbacks import AfterFit, PandaArtifacts
from panda.training.checkpoints import (
    CHECKPOINT_DIR,
    RESUMABLE,
    ConfigInCheckpoint,
    SafeCheckpointIO,
    check_checkpoint,
    resume_checkpoint,
)
from panda.training.loggers import finish_wandb
from panda.uses.face_regions import Naming, NamingSettings, name_parts

log = logging.getLogger(__name__)
T = TypeVar("T")
STRATEGIES = ("auto", "ddp")  # one process, or DDP (trainer=ddp)
GPU_ACCELERATORS = {"gpu": (CUDAAccelerator, MPSAccelerator), "cuda": (CUDAAccelerator,), "mps": (MPSAccelerator,)}


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
    """When the first training step started, in seconds since ``started`` (a :func:`time.time`; start-up as a user
    waits for it: imports, the generator, the initialisation), and the step and error of the last validation of
    ``fit``."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_step_seconds: float | None = None
        self.last_validation: tuple[int, float] | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - self.started

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.last_validation = (trainer.global_step, float(trainer.callback_metrics["val/rel_error"]))


def train(cfg: DictConfig, started: float | None = None) -> dict[str, Any]:
    """Learn PandA factors as configured; returns the final metrics (also in ``metrics.json``): the final
    validation error, the training time, when the first step started (``first_step_seconds``, since ``started``,
    ``train.py``'s first line, or since this process started if that is later or not given), the run's
    settings (solver, ``lr`` of a gradient solver), the part ``labels`` when ``factors.pt`` holds them, and what the
    :class:`~panda.training.callbacks.AfterFit` callbacks measure on the final factors
    (:class:`panda.roir.callbacks.FinalROIR`: ``roir/<region>``). W&B runs get them in their summary.

    The run holds the lock of its output directory throughout (:func:`panda.base.files.lock_directory`).
    """
    positive_int("trainer.max_steps", cfg.trainer.max_steps)  # the stream of samples is endless
    check_accelerator(cfg.trainer.accelerator)
    check_processes(cfg.trainer)
    NamingSettings.from_config(cfg.naming, "naming")
    output_dir = Path(cfg.paths.output_dir)
    # never before this process started: a SLURM job of Hydra's submitit launcher runs a pickled train.py, whose
    # start is its submission's
    created = psutil.Process().create_time()
    started = created if started is None else max(started, created)
    if rank_zero_only.rank != 0:  # another process of data-parallel training: rank 0 holds the lock and reports
        logging.getLogger("panda").setLevel(logging.WARNING)
        return _train(cfg, output_dir, started)
    with lock_directory(output_dir):
        return _train(cfg, output_dir, started)


def _train(cfg: DictConfig, output_dir: Path, started: float) -> dict[str, Any]:
    quiet_lightning()
    resume = resume_checkpoint(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    generator = instantiate(cfg.gen.net)
    layer = cfg.gen.layer
    feature_shape = generator.check_layer(layer)
    model = instantiate(cfg.model, feature_shape=feature_shape, parts=cfg.rank.parts, appearances=cfg.rank.appearances)
    data = instantiate(cfg.data, generator=generator, layer=layer)
    log.info(
        "generator %s, layer %s with features %s; ranks R_S=%d, R_C=%d",
        cfg.gen.name,
        layer,
        tuple(feature_shape),
        model.hparams.parts,
        model.hparams.appearances,
    )

    ckpt_path = None
    if resume is not None:
        ckpt_path, checkpoint = resume
        check_checkpoint(ckpt_path, checkpoint, model)
        log.info("resuming from %s (step %d)", ckpt_path, checkpoint["global_step"])

    config = OmegaConf.to_container(cfg, resolve=True)
    record = FitRecord(started)
    callbacks = [
        record,
        ConfigInCheckpoint(config),
        StopOnDivergence(),
        *(instantiate(c) for c in cfg.get("callbacks", {}).values()),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar(cfg.trainer.log_every_n_steps))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    logged = _logged_rows(loggers, checkpoint["global_step"]) if resume is not None else {}
    for logger in loggers:
        logger.log_hyperparams(config)
    for logger, rows in logged.items():
        for row in rows:
            values = {k: _number(v) for k, v in row.items() if k != "step" and v != ""}
            logger.experiment.log_metrics(values, int(row["step"]))
        logger.save()
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[SafeCheckpointIO()]
    )

    with console():
        start = time.perf_counter()
        _until_interrupted(trainer, output_dir, lambda: trainer.fit(model, datamodule=data, ckpt_path=ckpt_path))
        seconds = time.perf_counter() - start
        if record.last_validation is not None and record.last_validation[0] == trainer.global_step:
            error = record.last_validation[1]  # fit's last validation saw the final factors
        else:
            (final,) = _until_interrupted(
                trainer, output_dir, lambda: trainer.validate(model, datamodule=data, verbose=False)
            )
            error = float(final["val/rel_error"])
        measured: dict[str, Any] = {}  # on the final factors, after training (not in fit_seconds)
        for callback in callbacks:
            if isinstance(callback, AfterFit):
                measured |= callback.after_fit(trainer, model)

    metrics = {
        "val_rel_error": error,
        "steps": trainer.global_step,
        "samples": trainer.global_step * data.global_batch_size,
        "fit_seconds": round(seconds, 2),
        "first_step_seconds": None if record.first_step_seconds is None else round(record.first_step_seconds, 2),
        "generator": cfg.gen.name,
        "layer": layer,
        "solver": _solver_name(model),
        "lr": cfg.model.solver.get("lr"),
        "parts": model.hparams.parts,
        "appearances": model.hparams.appearances,
        "overrides": _overrides(),
    }
    metrics |= measured
    if not trainer.is_global_zero:  # every process holds the same factors; rank 0 writes them
        return metrics
    naming = _name_parts(cfg, generator, model) if cfg.naming.after_training else None
    labels, scores = (naming.labels, naming.scores) if naming else (None, None)
    path = save_factors(model, cfg.gen.name, layer, cfg, output_dir / FACTORS_FILE, labels, scores)
    for artifacts in (c for c in callbacks if isinstance(c, PandaArtifacts)):
        artifacts.write(trainer, model, data, labels, scores)
    labels = load_factors(path).get("labels")
    if labels is not None:
        metrics["labels"] = labels
    save_json(metrics, output_dir / METRICS_FILE)
    finish_wandb(loggers, metrics)
    log.info(
        "final validation relative error %.4f after %d steps (training %.1f s, its first step %s s after the "
        "command started); results in %s",
        metrics["val_rel_error"],
        metrics["steps"],
        seconds,
        metrics["first_step_seconds"],
        output_dir,
    )
    return metrics


def _name_parts(cfg: DictConfig, generator: Any, model: pl.LightningModule) -> Naming | None:
    """The parts named after face regions (:mod:`panda.uses.face_regions`), or ``None`` with a warning when dlib finds
    no face (a generator of random weights) or its landmark model is missing: the factors are kept unnamed."""
    _, height, width = model.hparams.feature_shape
    settings = NamingSettings.from_config(cfg.naming, "naming")
    try:
        naming = name_parts(generator, model.P.detach(), (height, width), settings, cfg.seed)
    except (ConfigError, WeightsError) as error:
        log.warning("the parts are not named: %s", error)
        return None
    log.info("the parts, named on %d faces:\n%s", naming.faces, naming.table())
    return naming


def _logged_rows(loggers: list[Any], step: int) -> dict[CSVLogger, list[dict[str, str]]]:
    """The rows each CSV logger's ``metrics.csv`` holds before ``step`` (the logger rewrites the file: a resumed
    run logs them again, then its own)."""
    found = {}
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is not None and path.is_file():
            with path.open(newline="") as handle:
                found[logger] = [row for row in csv.DictReader(handle) if int(row["step"]) < step]
    return found


def _number(text: str) -> int | float:
    """A logged value as it was logged: an integer or a float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _until_interrupted(trainer: pl.Trainer, output_dir: Path, stage: Callable[[], T]) -> T:
    """``stage()`` (the trainer's ``fit`` or ``validate``); :class:`Interrupted`, saying how to resume, when a
    signal stopped it (Lightning raises ``SystemExit`` for ``SIGTERM`` and Ctrl-C, or, in older versions,
    returns with the trainer interrupted)."""
    try:
        result = stage()
    except SystemExit:
        if not trainer.interrupted:
            raise
    if not trainer.interrupted:
        return result
    name, code = ("SIGTERM", 128 + signal.SIGTERM) if trainer.received_sigterm else ("Ctrl-C", 128 + signal.SIGINT)
    command = shlex.join(["python", "train.py", *_resume_overrides(), f"hydra.run.dir={output_dir}"])
    if any((output_dir / CHECKPOINT_DIR / name).is_file() for name in RESUMABLE):
        hint = f"its checkpoints are in {output_dir / CHECKPOINT_DIR}; resume with: {command}"
    else:
        hint = f"no checkpoint was written, so a new run starts over: {command}"
    raise Interrupted(f"training stopped by {name} at step {trainer.global_step}; {hint}", code)


def _resume_overrides() -> list[str]:
    """The command line's overrides without ``ckpt_path``: a re-run resumes from its directory's newest checkpoint."""
    return [o for o in _overrides() if not o.lstrip("+~").startswith("ckpt_path=")]


def check_accelerator(accelerator: str) -> None:
    """A :class:`ConfigError` when ``trainer.accelerator`` asks for a GPU this machine does not have."""
    kinds = GPU_ACCELERATORS.get(str(accelerator))
    if kinds is not None and not any(kind.is_available() for kind in kinds):
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no GPU found; accelerator: auto (the default) already uses a GPU "
            "when there is one"
        )


def check_processes(trainer: DictConfig, group: str = "trainer") -> None:
    """A :class:`ConfigError` for a ``trainer.strategy`` other than one process or DDP, or more ``trainer.devices``
    than this machine has (GPUs, or CPU cores with ``trainer.accelerator=cpu`` or without a GPU); ``group`` names
    the devices' key (``eval``: ``eval.devices`` of ``evaluate.py``)."""
    strategy = trainer.get("strategy", "auto")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"trainer.strategy={strategy} cannot train PandA; choices: {', '.join(STRATEGIES)} "
            "(data-parallel training: trainer=ddp)"
        )
    devices = trainer.devices
    if isinstance(devices, bool) or not isinstance(devices, int) or devices in (-1, 0):
        return  # "auto", -1 (all) and lists are Lightning's to check
    accelerator = str(trainer.accelerator)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        available, kind = torch.cuda.device_count(), "GPUs"
    elif accelerator == "cpu" or (accelerator == "auto" and not MPSAccelerator.is_available()):
        available, kind = _cpu_cores(), "CPU cores, one process each"
    else:
        return  # Lightning checks the others
    if devices > available:
        raise ConfigError(f"{group}.devices={devices} is more than this machine has ({available} {kind})")


def _solver_name(model: pl.LightningModule) -> str:
    """The ``model/solver`` option the run chose (``pgd``, ``stats``), or the solver's class name outside Hydra."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices["model/solver"]
    return type(model.solver).__name__


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
