"""The training entry point behind ``train.py``: compose, validate, fit, write the results."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator

from panda.config import instantiate
from panda.errors import ConfigError
from panda.io import FACTORS_FILE, METRICS_FILE, save_json, save_torch
from panda.progress import console, progress_bar, quiet_lightning

log = logging.getLogger(__name__)
GPU_ACCELERATORS = {"gpu": (CUDAAccelerator, MPSAccelerator), "cuda": (CUDAAccelerator,), "mps": (MPSAccelerator,)}


def factors_record(model: pl.LightningModule, generator: str, layer: str, cfg: DictConfig) -> dict[str, Any]:
    """The contents of ``factors.pt``: plain tensors and metadata, loadable without panda."""
    return {
        "A": model.A.detach().cpu().clone(),
        "P": model.P.detach().cpu().clone(),
        "generator": generator,
        "layer": layer,
        "feature_shape": list(model.hparams.feature_shape),
        "ranks": {"parts": model.hparams.parts, "appearances": model.hparams.appearances},
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Learn PandA factors as configured; returns the final metrics (also in ``metrics.json``)."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist; pass a checkpoint file such as outputs/<run>/checkpoints/last.ckpt"
        )
    check_accelerator(cfg.trainer.accelerator)
    quiet_lightning()
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

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar(cfg.trainer.log_every_n_steps))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    with console():
        start = time.perf_counter()
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        seconds = time.perf_counter() - start
        if trainer.interrupted:
            raise KeyboardInterrupt
        (final,) = trainer.validate(model, datamodule=data, verbose=False)

    metrics = {
        "val_rel_error": float(final["val/rel_error"]),
        "steps": trainer.global_step,
        "samples": trainer.global_step * data.batch_size,
        "fit_seconds": round(seconds, 2),
        "generator": cfg.gen.name,
        "layer": layer,
        "parts": model.hparams.parts,
        "appearances": model.hparams.appearances,
        "overrides": _overrides(),
    }
    save_torch(factors_record(model, cfg.gen.name, layer, cfg), output_dir / FACTORS_FILE)
    save_json(metrics, output_dir / METRICS_FILE)
    log.info(
        "final validation relative error %.4f after %d steps (%.1f s); results in %s",
        metrics["val_rel_error"],
        metrics["steps"],
        seconds,
        output_dir,
    )
    return metrics


def check_accelerator(accelerator: str) -> None:
    """A :class:`ConfigError` when ``trainer.accelerator`` asks for a GPU this machine does not have."""
    kinds = GPU_ACCELERATORS.get(str(accelerator))
    if kinds is not None and not any(kind.is_available() for kind in kinds):
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no GPU found; accelerator: auto (the default) already uses a GPU "
            "when there is one"
        )


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
