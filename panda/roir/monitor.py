"""ROIR during training: a Lightning callback (``python train.py callbacks=roir``, conf/callbacks/roir.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl

from panda.data import FeatureDataModule, Stream
from panda.model import PandA
from panda.roir.masks import LandmarkDetector, check_min_face, check_regions
from panda.roir.protocol import Faces, PandAEditor, Settings, choose, face_set
from panda.runs import Run

log = logging.getLogger(__name__)


class ROIRMonitor(pl.Callback):
    """After every validation, PandA's ROIR per face region on a small calibration set, logged as
    ``roir/<region>``: for each region the (part, appearance) edit with the lowest ROIR at the same
    change inside the region (:func:`panda.roir.protocol.choose`; the full benchmark is ``evaluate.py task=roir``).

    Args:
        regions: face regions (``eyes``, ``nose``, ``mouth``).
        samples: calibration samples drawn (those where dlib finds a face are used).
        upscale: side dlib sees the images at.
        min_face: the narrowest face measured, as a share of the image width (:class:`LandmarkDetector`).
        choose: how the edit is chosen (the fields of :class:`panda.roir.protocol.Settings`).
    """

    def __init__(
        self, regions: Sequence[str], samples: int, upscale: int, min_face: float, choose: Mapping[str, Any]
    ) -> None:
        self.regions, self.samples, self.upscale = check_regions(list(regions)), samples, upscale
        self.min_face = check_min_face(min_face, "callbacks.roir.min_face")
        self.settings = Settings(**choose, config_key="callbacks.roir.choose")
        self.faces: Faces | None = None
        self.measured_step = -1  # a validation repeated at the same step (the final one) is not measured again

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data: FeatureDataModule = trainer.datamodule
        detector = LandmarkDetector(self.upscale, min_face=self.min_face)
        self.faces = face_set(data.generator, detector, data.seed, Stream.CALIBRATION, self.samples, self.samples)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: PandA) -> None:
        if trainer.sanity_checking or self.faces is None or trainer.global_step == self.measured_step:
            return
        self.measured_step = trainer.global_step
        data: FeatureDataModule = trainer.datamodule
        run = Run(
            A=pl_module.A.detach().float(),
            P=pl_module.P.detach().float(),
            generator=data.generator,
            name=data.generator.name,
            layer=data.layer,
            feature_shape=tuple(pl_module.hparams.feature_shape),
        )
        editor = PandAEditor(run)
        choices = {region: choose(editor, self.faces, region, self.settings) for region in self.regions}
        metrics = {f"roir/{region}": choice.calibration_roir for region, choice in choices.items()}
        for region, choice in choices.items():
            log.info("step %d: ROIR %s %.3f (%s)", trainer.global_step, region, choice.calibration_roir, choice.label)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
