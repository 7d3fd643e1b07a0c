"""The training entry point behind ``train.py``: compose, instantiate, fit.

Everything else a run does is a configured Lightning callback (``conf/callbacks/``): the divergence stop, the
timing and the final metrics (``metrics.json``), the config in every checkpoint, the part names, the pictures,
``factors.pt``, the W&B summary; a resumed run's CSV log is its logger's (``conf/logger/csv.yaml``).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.utilities import rank_zero_only

from panda.base.config import instantiate, integer, positive_int
from panda.base.errors import ConfigError, Interrupted
from panda.base.files import lock_directory
from panda.base.progress import console, quiet_lightning
from panda.generators.base import FeatureGenerator
from panda.training.callbacks import FitRecord, command_overrides
from panda.training.checkpoints import (
    CHECKPOINT_DIR,
    SafeCheckpointIO,
    check_checkpoint,
    resume_checkpoint,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
STRATEGIES = ("auto", "ddp")  # one process, or DDP (trainer=ddp)
GPU_ACCELERATORS = {"gpu": (CUDAAccelerator, MPSAccelerator), "cuda": (CUDAAccelerator,), "mps": (MPSAccelerator,)}
# What a callback or logger config may leave ``???`` for train() to give: facts of this run that no config holds
FACTS = ("config", "started", "resume_step")


def train(cfg: DictConfig, started: float | None = None, generator: FeatureGenerator | None = None) -> dict[str, Any]:
    """Learn PandA factors as configured; returns the final metrics, those of ``metrics.json``
    (:meth:`~panda.training.callbacks.FitRecord.metrics`). ``started``: when the command started (``train.py``'s
    first line), from which ``first_step_seconds`` counts; this process's start when that is later or not given.
    ``generator``: the generator to learn on, given as an object (``panda.fit``), instead of ``cfg.gen.net``'s.

    The run holds the lock of its output directory throughout (:func:`panda.base.files.lock_directory`).
    """
    positive_int("trainer.max_steps", cfg.trainer.max_steps)  # the stream of samples is endless
    integer("seed", cfg.seed)
    check_accelerator(cfg.trainer.accelerator)
    check_processes(cfg.trainer)
    output_dir = Path(cfg.paths.output_dir)
    # never before this process started: a SLURM job of Hydra's submitit launcher runs a pickled train.py, whose
    # start is its submission's
    created = psutil.Process().create_time()
    started = created if started is None else max(started, created)
    if rank_zero_only.rank != 0:  # another process of data-parallel training: rank 0 holds the lock and reports
        logging.getLogger("panda").setLevel(logging.WARNING)
        return _train(cfg, output_dir, started, generator)
    with lock_directory(output_dir):
        return _train(cfg, output_dir, started, generator)


def _train(cfg: DictConfig, output_dir: Path, started: float, generator: FeatureGenerator | None) -> dict[str, Any]:
    """Instantiate the run's objects as ``cfg`` says, fit, return the final metrics."""
    quiet_lightning()
    resume = resume_checkpoint(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    model, data = _method(cfg, generator)
    step = None if resume is None else resume[1]["global_step"]
    if resume is not None:
        check_checkpoint(*resume, model)
        log.info("resuming from %s (step %d)", resume[0], step)
    trainer = _trainer(cfg, {"config": cfg, "started": started, "resume_step": step})
    record = FitRecord.of(trainer)
    with console():
        _until_interrupted(trainer, output_dir, lambda: _fit(trainer, model, data, resume))
    return record.metrics(trainer)


def _method(cfg: DictConfig, generator: FeatureGenerator | None) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The model and the stream of features of the layer of the configured (or the given) generator."""
    generator = instantiate(cfg.gen.net) if generator is None else generator
    feature_shape = generator.check_layer(cfg.gen.layer)
    ranks = {"parts": cfg.rank.parts, "appearances": cfg.rank.appearances}
    model = instantiate(cfg.model, feature_shape=feature_shape, **ranks)
    data = instantiate(cfg.data, generator=generator, layer=cfg.gen.layer)
    log.info(
        "generator %s, layer %s with features %s; ranks R_S=%d, R_C=%d",
        cfg.gen.name,
        cfg.gen.layer,
        tuple(feature_shape),
        model.hparams.parts,
        model.hparams.appearances,
    )
    return model, data


def _trainer(cfg: DictConfig, facts: Mapping[str, Any]) -> pl.Trainer:
    """The trainer with the objects the entries of ``callbacks`` and ``logger`` build (an entry set to ``null`` or
    building ``None`` is off); the values an entry leaves ``???`` are given from ``facts`` (:data:`FACTS`)."""
    built: dict[str, list[Any]] = {"callbacks": [], "logger": []}
    for group, objects in built.items():
        for name, node in (cfg.get(group) or {}).items():
            if node is None:
                continue
            if "_target_" not in node:
                raise ConfigError(f"{group}.{name} has no _target_: nothing to build (~{group}.{name} removes it)")
            given = [key for key in node if OmegaConf.is_missing(node, key)]
            unknown = [key for key in given if key not in facts]
            if unknown:
                raise ConfigError(
                    f"{group}.{name}.{unknown[0]} is not set (??? only stands for one of {', '.join(FACTS)})"
                )
            made = instantiate(node, _partial_=True)(**{k: facts[k] for k in given}) if given else instantiate(node)
            if made is not None:
                objects.append(made)
    logger = built["logger"] or False
    return instantiate(cfg.trainer, callbacks=built["callbacks"], logger=logger, plugins=[SafeCheckpointIO()])


def _fit(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    resume: tuple[Path, dict[str, Any]] | None,
) -> None:
    """``trainer.fit``, resuming from ``resume`` (a checkpoint path and its contents) when given. A checkpoint of the
    last step leaves ``fit`` nothing to train, nor to validate, so its factors are validated first (not logged: the
    run that wrote it logged that validation)."""
    ckpt_path = None if resume is None else resume[0]
    if resume is not None and resume[1]["global_step"] >= trainer.max_steps:
        loggers, trainer.loggers = trainer.loggers, []
        try:
            trainer.validate(model, datamodule=data, ckpt_path=ckpt_path, verbose=False)
        finally:
            trainer.loggers = loggers
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)


def _until_interrupted(trainer: pl.Trainer, output_dir: Path, stage: Callable[[], T]) -> T:
    """``stage()`` (the trainer's ``fit``); :class:`Interrupted`, saying how to resume, when a signal stopped it
    (Lightning raises ``SystemExit`` for ``SIGTERM`` and Ctrl-C, or, in older versions, returns with the trainer
    interrupted)."""
    try:
        result = stage()
    except SystemExit:
        if not trainer.interrupted:
            raise
    if not trainer.interrupted:
        return result
    name, code = ("SIGTERM", 128 + signal.SIGTERM) if trainer.received_sigterm else ("Ctrl-C", 128 + signal.SIGINT)
    command = resume_command(output_dir)
    if any((output_dir / CHECKPOINT_DIR).glob("*.ckpt")):  # a re-run resumes from the newest readable one
        hint = f"its checkpoints are in {output_dir / CHECKPOINT_DIR}; resume with: {command}"
    else:
        hint = f"no checkpoint was written, so a new run starts over: {command}"
    raise Interrupted(f"training stopped by {name} at step {trainer.global_step}; {hint}", code)


def resume_command(output_dir: Path) -> str:
    """The command that resumes the run in ``output_dir``: its overrides without ``ckpt_path`` (a re-run resumes
    from its directory's newest checkpoint) and the directory, quoted for Hydra and for the shell."""
    overrides = [o for o in command_overrides() if not o.lstrip("+~").startswith("ckpt_path=")]
    directory = str(output_dir)
    try:
        plain = OverridesParser.create().parse_override(f"hydra.run.dir={directory}").value() == directory
    except HydraException:
        plain = False
    if not plain:  # e.g. a non-ASCII, comma or quote in the path
        directory = '"' + directory.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return shlex.join(["python", "train.py", *overrides, f"hydra.run.dir={directory}"])


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


def _cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
