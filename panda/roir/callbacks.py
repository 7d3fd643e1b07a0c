"""ROIR of a training run: Lightning callbacks, during training (``python train.py callbacks=roir``,
conf/callbacks/roir.yaml) and once it has ended (``callbacks=roir_final``, conf/callbacks/roir_final.yaml). Both
take the benchmark's settings (conf/roir/default.yaml, :class:`panda.roir.settings.ROIRSettings`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from panda.base.errors import ConfigError
from panda.method.data import FeatureDataModule, Stream
from panda.method.model import PandA, part_labels
from panda.roir.benchmark import benchmark
from panda.roir.editors import PandAEditor
from panda.roir.faces import Faces, face_batches, face_set
from panda.roir.report import write_report
from panda.roir.search import BUDGET, choose
from panda.roir.settings import ROIRSettings
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


class ROIRMonitor(pl.Callback):
    """After every validation, PandA's ROIR per face region on the calibration faces, logged as ``roir/<region>``:
    for each region the (part, appearance) edit with the lowest ROIR at the same change inside the region among the
    ``choose.candidates`` PandA preselects (:func:`panda.roir.search.choose`; the whole benchmark is
    ``evaluate.py task=roir``). Of the benchmark's
    settings it takes those of the calibration (``calibration``, ``batch_size``, ``regions``, ``upscale``,
    ``min_face``, ``landmark_cache``, ``choose``); ``methods`` must be ``[panda]``.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings = ROIRSettings.from_config(settings, "callbacks.roir")
        if self.settings.methods != (PandAEditor.name,):
            raise ConfigError(f"callbacks.roir.methods={list(self.settings.methods)}: the monitor measures [panda]")
        self.faces: Faces | None = None
        self.measured_step = -1  # a validation repeated at the same step (the final one) is not measured again

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data: FeatureDataModule = trainer.datamodule
        settings = self.settings
        batches = face_batches(
            data.generator,
            settings.detector(),
            data.seed,
            Stream.CALIBRATION,
            settings.calibration,
            settings.batch_size,
            cache=settings.cache,
        )
        self.faces = face_set(batches)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: PandA) -> None:
        if trainer.sanity_checking or self.faces is None or trainer.global_step == self.measured_step:
            return
        self.measured_step = trainer.global_step
        editor = PandAEditor(trained_factors(trainer, pl_module)).fit(self.faces.latents)
        choices = choose(
            editor, self.faces, self.settings.regions, self.settings.choose, self.settings.choose.candidates
        )
        metrics = {f"roir/{region}": choice.calibration_roir for region, choice in choices.items()}
        for region, choice in choices.items():
            log.info("step %d: ROIR %s %.3f (%s)", trainer.global_step, region, choice.calibration_roir, choice.label)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def trained_factors(trainer: pl.Trainer, pl_module: PandA) -> Factors:
    """The factors ``pl_module`` holds now, with the generator and layer of the trainer's data and the parts' labels
    once they are named (PandA's candidates are then the parts named after each region)."""
    data: FeatureDataModule = trainer.datamodule
    return Factors(
        A=pl_module.exported_appearances().float(),
        P=pl_module.P.detach().float(),
        generator=data.generator,
        name=data.generator.name,
        layer=data.layer,
        feature_shape=tuple(pl_module.hparams.feature_shape),
        labels=part_labels(pl_module)[0],
        canonical=True,
    )


class FinalROIR(pl.Callback):
    """Once training has ended (``on_fit_end``, on global rank 0), the benchmark of ``evaluate.py task=roir`` on the
    final factors (:func:`panda.roir.benchmark.benchmark`; by default of PandA only, on fewer samples), measured on
    the ROIR validation stream, never the test stream: the ablations choose the defaults by it.

    Writes ``roir.csv`` and ``roir.md`` into ``output_dir`` (the run directory), logs the rows as the W&B table
    ``roir`` to a W&B logger, and publishes each region's test mean of the first method measured (PandA by default) as
    the scalar ``trainer.callback_metrics["roir/<region>"]`` (training copies it into ``metrics.json``).

    Args:
        output_dir: the run directory.
        settings: the benchmark's (the fields of :class:`panda.roir.settings.ROIRSettings`).
    """

    def __init__(self, output_dir: str, **settings: Any) -> None:
        self.output_dir = Path(output_dir)
        self.settings = ROIRSettings.from_config(settings, "callbacks.roir_final")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: PandA) -> None:
        if not trainer.is_global_zero:
            return
        data: FeatureDataModule = trainer.datamodule
        factors = trained_factors(trainer, pl_module)
        results = benchmark(factors, self.settings, data.seed, fit_seconds=0.0, stream=Stream.ROIR_VALIDATION)
        write_report(results, self.output_dir, figures=False)
        rows = results.rows
        for row in rows:
            log.info(
                "ROIR %s %s %.3f +- %.3f (%s)",
                row["method"],
                row["region"],
                row["roir_mean"],
                row["roir_std"],
                row["direction"],
            )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("roir", list(rows[0]), [list(row.values()) for row in rows], step=trainer.global_step)
        first = next(iter(results.seconds))
        for row in rows:
            if row["method"] == first and row["search"] == BUDGET and row["target"] == row["region"]:
                trainer.callback_metrics[f"roir/{row['region']}"] = torch.tensor(row["roir_mean"], dtype=torch.float64)
