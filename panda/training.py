"""The training entry point behind ``train.py``: compose, validate, fit, write the results."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from panda.checkpoints import ConfigInCheckpoint, SafeCheckpointIO, check_checkpoint, resume_checkpoint
from panda.config import instantiate, positive_int
from panda.errors import DivergenceError
from panda.factors import FACTORS_FILE, save_factors
from panda.io import METRICS_FILE, lock_directory, save_json

log = logging.getLogger(__name__)


class StopOnNonFinite(pl.Callback):
    """Stops training with a :class:`DivergenceError` after the first step whose loss or factors are NaN or
    infinite, before anything of that step is saved (Lightning runs checkpoint callbacks last)."""

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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Learn PandA factors as configured; returns the final metrics (also in ``metrics.json``).

    The run holds the lock of its output directory throughout (:func:`panda.io.lock_directory`).
    """
    positive_int("trainer.max_steps", cfg.trainer.max_steps)  # the stream of samples is endless
    output_dir = Path(cfg.paths.output_dir)
    with lock_directory(output_dir):
        return _train(cfg, output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
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
    callbacks = [
        ConfigInCheckpoint(config),
        StopOnNonFinite(),
        *(instantiate(c) for c in cfg.get("callbacks", {}).values()),
    ]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    for logger in loggers:
        logger.log_hyperparams(config)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[SafeCheckpointIO()]
    )

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
    save_factors(model, cfg.gen.name, layer, cfg, output_dir / FACTORS_FILE)
    save_json(metrics, output_dir / METRICS_FILE)
    log.info(
        "final validation relative error %.4f after %d steps (%.1f s); results in %s",
        metrics["val_rel_error"],
        metrics["steps"],
        seconds,
        output_dir,
    )
    return metrics


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
