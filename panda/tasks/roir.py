"""The roir task: ROIR of PandA and the baselines per face region (the paper's Table 1, :mod:`panda.roir.benchmark`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from panda.base.config import positive_int
from panda.base.files import METRICS_FILE
from panda.generators.base import FeatureGenerator
from panda.roir.benchmark import benchmark
from panda.roir.report import write_report
from panda.roir.settings import ROIRSettings
from panda.tasks.registry import task
from panda.training.fit import check_processes
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


@task
def roir(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """ROIR of PandA and the baselines per face region: ``roir.md``, ``roir.csv``, edit grids (``roir_<region>.png``:
    the first test faces; ``roir_<region>_worst.png``: each method's worst)."""
    settings = ROIRSettings.from_config(cfg.eval, "eval")
    fabric = _processes(positive_int("eval.devices", cfg.eval.devices), factors.generator)
    metrics = Path(cfg.run) / METRICS_FILE
    fit_seconds = float(json.loads(metrics.read_text()).get("fit_seconds", "nan")) if metrics.is_file() else np.nan
    results = benchmark(factors, settings, cfg.seed, fit_seconds, fabric)
    if fabric is not None and fabric.global_rank != 0:  # rank 0 writes
        return {"rows": results.rows, "skipped": results.skipped, "files": {}}
    wandb = (cfg.eval.wandb_project, f"roir-{factors.name}", {"run": str(cfg.run)}) if cfg.eval.wandb else None
    files = write_report(results, out, wandb=wandb)
    log.info("ROIR (lower is better):\n%s", results.table)
    return {
        "rows": results.rows,
        "test_samples": settings.test_samples,
        "above": settings.above,
        "skipped": results.skipped,
        "calibration_faces": results.calibration_faces,
        "files": files,
    }


def _processes(devices: int, gen: FeatureGenerator) -> Fabric | None:
    """With ``eval.devices > 1``, the launched processes (Lightning Fabric's DDP on the generator's kind of
    device; this process becomes rank 0) with the generator on each one's device; ``None`` for one process."""
    if devices == 1:
        return None
    accelerator = "cuda" if gen.device.type == "cuda" else "cpu"
    check_processes(OmegaConf.create({"accelerator": accelerator, "devices": devices, "strategy": "ddp"}), "eval")
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp")
    fabric.launch()
    gen.to(fabric.device)
    return fabric
