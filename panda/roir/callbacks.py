"""ROIR of a training run: Lightning callbacks, during training (``python train.py callbacks=roir``,
conf/callbacks/roir.yaml) and once it has ended (``callbacks=roir_final``, conf/callbacks/roir_final.yaml)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from panda.base.config import finite_number, positive_int
from panda.base.errors import ConfigError
from panda.base.files import atomic_write
from panda.method.data import FeatureDataModule, Stream
from panda.method.model import PandA
from panda.roir.protocol import Faces, PandAEditor, Settings, choose, face_batches, face_set, measure
from panda.training.callbacks import AfterFit
from panda.uses.factors import Factors
from panda.uses.landmarks import LandmarkDetector, check_min_face, check_regions

ROIR_CSV = "roir.csv"

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
        self.faces = face_set(
            face_batches(data.generator, detector, data.seed, Stream.CALIBRATION, self.samples, self.samples)
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: PandA) -> None:
        if trainer.sanity_checking or self.faces is None or trainer.global_step == self.measured_step:
            return
        self.measured_step = trainer.global_step
        editor = PandAEditor(trained_factors(trainer, pl_module))
        choices = choose(editor, self.faces, self.regions, self.settings)
        metrics = {f"roir/{region}": choice.calibration_roir for region, choice in choices.items()}
        for region, choice in choices.items():
            log.info("step %d: ROIR %s %.3f (%s)", trainer.global_step, region, choice.calibration_roir, choice.label)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def trained_factors(trainer: pl.Trainer, pl_module: PandA) -> Factors:
    """The factors ``pl_module`` holds now, with the generator and layer of the trainer's data."""
    data: FeatureDataModule = trainer.datamodule
    return Factors(
        A=pl_module.A.detach().float(),
        P=pl_module.P.detach().float(),
        generator=data.generator,
        name=data.generator.name,
        layer=data.layer,
        feature_shape=tuple(pl_module.hparams.feature_shape),
    )


class FinalROIR(AfterFit):
    """Once training has ended, PandA's ROIR per face region as ``evaluate.py task=roir`` measures it (PandA only):
    each region's edit is chosen on the faces among ``calibration`` samples of the calibration stream, and its
    ROIR measured on the faces among ``test_samples`` samples of the test stream.

    Writes ``roir.csv`` (one row per region, the columns of :meth:`panda.roir.protocol.Result.row`) into
    ``output_dir``, logs it as the W&B table ``roir`` to a W&B logger, and returns ``roir/<region>`` (the test
    mean), which :func:`panda.training.fit.train` adds to ``metrics.json``.

    Args:
        output_dir: the run directory.
        regions: face regions (``eyes``, ``nose``, ``mouth``).
        calibration: calibration samples drawn (at least 2).
        test_samples: test samples drawn.
        batch_size: samples per generator pass.
        upscale: side dlib sees the images at.
        min_face: the narrowest face measured, as a share of the image width (:class:`LandmarkDetector`).
        above: the ROIR beyond which faces are counted (the row's ``faces_above_<above>``).
        choose: how the edit is chosen (the fields of :class:`panda.roir.protocol.Settings`).
    """

    def __init__(
        self,
        output_dir: str,
        regions: Sequence[str],
        calibration: int,
        test_samples: int,
        batch_size: int,
        upscale: int,
        min_face: float,
        above: float,
        choose: Mapping[str, Any],
    ) -> None:
        key = "callbacks.roir_final"
        self.min_face = check_min_face(min_face, f"{key}.min_face")
        self.above = finite_number(f"{key}.above", above)
        if positive_int(f"{key}.calibration", calibration) < 2:
            raise ConfigError(f"{key}.calibration={calibration} must be >= 2")
        self.test_samples = positive_int(f"{key}.test_samples", test_samples)
        self.batch_size = positive_int(f"{key}.batch_size", batch_size)
        self.output_dir, self.regions = Path(output_dir), check_regions(list(regions))
        self.calibration, self.upscale = calibration, upscale
        self.settings = Settings(**choose, config_key=f"{key}.choose")

    def after_fit(self, trainer: pl.Trainer, model: PandA) -> dict[str, Any]:
        if not trainer.is_global_zero:
            return {}
        data: FeatureDataModule = trainer.datamodule
        detector = LandmarkDetector(self.upscale, min_face=self.min_face)
        batches = face_batches(
            data.generator, detector, data.seed, Stream.CALIBRATION, self.calibration, self.batch_size
        )
        faces = face_set(batches)
        editor = PandAEditor(trained_factors(trainer, model))
        choices = {(editor.name, r): c for r, c in choose(editor, faces, self.regions, self.settings).items()}
        log.info("ROIR: measuring each region's edit on the faces among %d test samples", self.test_samples)
        results, skipped, _ = measure(
            data.generator,
            detector,
            {editor.name: dict.fromkeys(self.regions, editor)},
            choices,
            data.seed,
            Stream.TEST,
            self.test_samples,
            self.batch_size,
            self.settings.dilation,
            self.above,
            0,
        )
        rows = [results[key].row(skipped) for key in choices]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.output_dir / ROIR_CSV, buffer.getvalue().encode())
        for row in rows:
            log.info("ROIR %s %.3f +- %.3f (%s)", row["region"], row["roir_mean"], row["roir_std"], row["direction"])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("roir", list(rows[0]), [list(row.values()) for row in rows], step=trainer.global_step)
        return {f"roir/{row['region']}": row["roir_mean"] for row in rows}
