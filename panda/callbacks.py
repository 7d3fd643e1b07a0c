"""Lightning callbacks: the pictures of a run, its error history, and ROIR during training."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from panda import visualize
from panda.data import FeatureDataModule, Stream
from panda.masks import REGIONS, LandmarkDetector, check_regions
from panda.model import PandA
from panda.roir import Faces, PandAEditor, Settings, choose, face_set
from panda.runs import Run

log = logging.getLogger(__name__)
PARTS_PNG, OVERLAY_PNG, CURVE_PNG = "parts.png", "overlay.png", "error_curve.png"


class PandaArtifacts(pl.Callback):
    """Records the validation error after every validation and, when training ends, writes
    ``parts.png`` (every part as a mask), ``overlay.png`` (parts over validation samples in
    distinct colours) and ``error_curve.png`` into ``output_dir``, and logs them to the
    run's W&B or TensorBoard logger.
    """

    def __init__(self, output_dir: str, num_images: int = 16) -> None:
        self.output_dir = Path(output_dir)
        self.num_images = num_images
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/rel_error" not in trainer.callback_metrics:
            return
        entry = (trainer.global_step, float(trainer.callback_metrics["val/rel_error"]))
        self.history = [h for h in self.history if h[0] != entry[0]] + [entry]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict["history"]]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(trainer, pl_module, trainer.datamodule)

    def write(self, trainer: pl.Trainer, model: PandA, data: FeatureDataModule) -> list[Path]:
        _, height, width = model.hparams.feature_shape
        with torch.inference_mode():
            images = data.generator(data.latents(Stream.VAL, 0, self.num_images).to(data.generator.device))
        paths = [
            visualize.parts_figure(model.P, (height, width), self.output_dir / PARTS_PNG),
            visualize.overlay_figure(images, model.P, (height, width), self.output_dir / OVERLAY_PNG),
        ]
        if self.history:
            steps, errors = zip(*self.history, strict=True)
            paths.append(visualize.error_curve(steps, errors, self.output_dir / CURVE_PNG))
        log_images(trainer, paths)
        return paths


def log_images(trainer: pl.Trainer, paths: list[Path]) -> None:
    """Send image files to the trainer's W&B and TensorBoard loggers (others ignore them)."""
    for logger in trainer.loggers:
        for path in paths:
            key = f"images/{path.stem}"
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                pixels = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image(key, pixels, trainer.global_step, dataformats="HWC")


class ROIRMonitor(pl.Callback):
    """After every validation, PandA's ROIR per face region on a small calibration set, logged as
    ``roir/<region>``: for each region the (part, appearance) edit with the lowest ROIR at the same
    change inside the region (:func:`panda.roir.choose`; the full benchmark is ``evaluate.py task=roir``).

    Args:
        regions: face regions (``eyes``, ``nose``, ``mouth``).
        samples: calibration samples drawn (those where dlib finds a face are used).
        inside_change: the RMS change inside the region every candidate edit is scaled to.
        screen: faces each candidate is screened on.
    """

    def __init__(
        self, regions: Sequence[str] = REGIONS, samples: int = 16, inside_change: float = 0.1, screen: int = 4
    ) -> None:
        self.regions, self.samples = check_regions(list(regions)), samples
        self.settings = Settings(inside_change=inside_change, screen=screen, finalists=4, iterations=2)
        self.faces: Faces | None = None
        self.measured_step = -1  # a validation repeated at the same step (the final one) is not measured again

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data: FeatureDataModule = trainer.datamodule
        self.faces = face_set(
            data.generator, LandmarkDetector(), data.seed, Stream.CALIBRATION, self.samples, self.samples
        )

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
