"""The roir task: ROIR of PandA and the baselines per face region (the paper's Table 1)."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from panda.base.config import finite_number, positive_int
from panda.base.errors import ConfigError
from panda.base.files import METRICS_FILE, atomic_write
from panda.base.resources import cache_dir
from panda.generators.base import FeatureGenerator
from panda.method.data import Stream
from panda.roir import protocol
from panda.tasks.registry import task
from panda.training.fit import check_processes
from panda.training.loggers import log_results_to_wandb
from panda.uses.factors import Factors
from panda.uses.landmarks import LandmarkDetector, check_min_face, check_regions
from panda.uses.visualize import image_grid, mask_overlay, to_uint8

log = logging.getLogger(__name__)


@task
def roir(cfg: DictConfig, run: Factors, out: Path) -> dict[str, Any]:
    """ROIR of PandA and the baselines per face region (:mod:`panda.roir`): ``roir.md``, ``roir.csv``, edit grids
    (``roir_<region>.png``: the first test faces; ``roir_<region>_worst.png``: each method's worst)."""
    settings = cfg.eval
    regions = check_regions([str(r) for r in settings.regions])
    if settings.test_samples < 1 or settings.calibration < 2 or settings.grid < 1:
        raise ConfigError("eval.test_samples and eval.grid must be >= 1, eval.calibration >= 2")
    above = finite_number("eval.above", settings.above)
    choosing = protocol.Settings(**settings.choose, config_key="eval.choose")
    detector = LandmarkDetector(settings.upscale, min_face=check_min_face(settings.min_face, "eval.min_face"))
    cache = cache_dir() / "landmarks" if settings.landmark_cache else None
    gen = run.generator
    fabric = _processes(settings.devices, gen)
    rank, world = (0, 1) if fabric is None else (fabric.global_rank, fabric.world_size)
    calibration = protocol.face_set(
        protocol.face_batches(
            gen, detector, cfg.seed, Stream.CALIBRATION, settings.calibration, settings.batch_size, cache=cache
        )
    )
    log.info("calibration: %d faces (%d skipped)", len(calibration.latents), calibration.skipped)
    metrics = Path(cfg.run) / METRICS_FILE
    run_seconds = float(json.loads(metrics.read_text()).get("fit_seconds", "nan")) if metrics.is_file() else np.nan
    options = OmegaConf.to_container(settings.baselines)
    editors = protocol.build_editors(
        list(settings.methods), run, calibration, regions, options, choosing.dilation, run_seconds
    )
    choices = {}
    for method, by_region in editors.items():
        for editor in protocol.unique(by_region):  # an editor shared by regions chooses for all of them at once
            shared = [region for region, e in by_region.items() if e is editor]
            for region, choice in protocol.choose(editor, calibration, shared, choosing).items():
                choices[method, region] = choice
                log.info("%s / %s: %s x %.3g", method, region, choice.label, choice.scale)
    if fabric is not None:  # every process measures rank 0's choices
        choices = fabric.broadcast(choices)
    results, skipped, examples = protocol.measure(
        gen,
        detector,
        editors,
        choices,
        cfg.seed,
        Stream.TEST,
        settings.test_samples,
        settings.batch_size,
        choosing.dilation,
        above,
        settings.grid,
        cache,
        rank=rank,
        world=world,
    )
    if fabric is not None:
        skipped = int(fabric.all_reduce(torch.tensor(skipped), reduce_op="sum"))
    rows = [results[key].row(skipped) for key in choices]
    if fabric is not None and rank != 0:  # rank 0 writes
        return {"rows": rows, "skipped": skipped, "files": {}}
    seconds = {m: protocol.direction_seconds(by_region) for m, by_region in editors.items()}
    markdown = protocol.table(rows, regions, seconds, above)
    files = {"table": atomic_write(out / "roir.md", markdown.encode())}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    files["csv"] = atomic_write(out / "roir.csv", buffer.getvalue().encode())
    for region in examples["masks"]:  # the regions some method has a direction for
        shown = [mask_overlay(examples["originals"], examples["masks"][region][:, 0])]
        methods = [method for method in editors if (method, region) in choices]
        shown += [to_uint8(examples["edits"][method, region]) for method in methods]
        titles = [name for name in ["original", *methods] for _ in range(len(examples["originals"]))]
        columns = max(1, len(examples["originals"]))
        files[f"grid_{region}"] = image_grid(np.concatenate(shown), out / f"roir_{region}.png", columns, titles)
        worst = {method: results[method, region].worst for method in methods}
        files[f"grid_{region}_worst"] = _worst_faces(worst, out / f"roir_{region}_worst.png")
    if settings.wandb:
        images = [path for key, path in files.items() if key.startswith("grid_")]
        log_results_to_wandb(out, settings.wandb_project, f"roir-{run.name}", {"run": str(cfg.run)}, rows, images)
    log.info("ROIR (lower is better):\n%s", markdown)
    return {
        "rows": rows,
        "test_samples": int(settings.test_samples),
        "above": above,
        "skipped": skipped,
        "calibration_faces": len(calibration.latents),
        "files": files,
    }


def _worst_faces(worst: dict[str, protocol.Worst], path: Path) -> Path:
    """Per method, a row of its worst test faces (region tinted, ROIR in the title) above a row of their edits."""
    columns = max(1, *(len(w.ratios) for w in worst.values()))
    shown, titles = [], []
    for method, faces in worst.items():
        if not len(faces.ratios):
            continue
        blank = np.full((columns - len(faces.ratios), *faces.originals.shape[-2:], 3), 255, dtype=np.uint8)
        shown += [mask_overlay(faces.originals, faces.masks[:, 0]), blank, to_uint8(faces.edits), blank]
        titles += [f"{method} {r:.2f}" for r in faces.ratios.tolist()] + [""] * len(blank)
        titles += ["edited"] * len(faces.ratios) + [""] * len(blank)
    return image_grid(np.concatenate(shown), path, columns, titles)


def _processes(devices: int, gen: FeatureGenerator) -> Fabric | None:
    """With ``eval.devices > 1``, the launched processes (Lightning Fabric's DDP on the generator's kind of
    device; this process becomes rank 0) with the generator on each one's device; ``None`` for one process."""
    positive_int("eval.devices", devices)
    if devices == 1:
        return None
    accelerator = "cuda" if gen.device.type == "cuda" else "cpu"
    check_processes(OmegaConf.create({"accelerator": accelerator, "devices": devices, "strategy": "ddp"}), "eval")
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp")
    fabric.launch()
    gen.to(fabric.device)
    return fabric
