"""The tasks behind ``evaluate.py``: each takes the composed config, the loaded run and an output directory.

Add a task by writing ``task(cfg, run, out) -> dict`` here, registering it in :data:`TASKS`, and
adding ``conf/task/<name>.yaml`` (selects it) and ``conf/eval/<name>.yaml`` (its settings).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from panda import editing, localization
from panda.config import check_known_keys, finite_number, positive_int
from panda.data import Stream
from panda.errors import ConfigError
from panda.factorization import flatten_features
from panda.factors import save_labels
from panda.generators.base import FeatureGenerator, ResumeState
from panda.generators.weights import cache_dir
from panda.io import METRICS_FILE, atomic_write, save_json
from panda.loggers import log_results_to_wandb
from panda.naming import REGIONS, NamingSettings, name_parts
from panda.refinement import refine_parts
from panda.roir import protocol
from panda.roir.masks import LandmarkDetector, check_min_face, check_regions
from panda.runs import Run, load_run
from panda.training import check_processes
from panda.visualize import image_grid, mask_overlay, overlay, overlay_figure, parts_figure, save_gif, to_uint8

log = logging.getLogger(__name__)
Task = Callable[[DictConfig, Run, Path], dict[str, Any]]


def _sample_features(cfg: DictConfig, run: Run) -> tuple[list[int], torch.Tensor, ResumeState]:
    """The requested sample indices, their features at the run's layer and the state resuming from them."""
    samples = [int(i) for i in cfg.samples]
    if not samples or min(samples) < 0:
        raise ConfigError(f"samples={samples} must be a non-empty list of sample indices >= 0")
    latents = run.latents(cfg.seed, samples)
    return samples, *run.features_and_state(latents)


def _before_after(
    run: Run, features: torch.Tensor, state: ResumeState, edits: list[editing.Edit], samples: list[int], path: Path
) -> Path:
    offset = editing.edit_offset(run, edits)
    before, after = editing.edited_images(run, features, state, offset, scales=(0.0, 1.0))
    titles = [f"sample {i}" for i in samples] + ["edited"] * len(samples)
    return image_grid(np.concatenate([to_uint8(before), to_uint8(after)]), path, columns=len(samples), titles=titles)


def edit(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Before/after grid, a strip and a GIF over strengths; optionally an atlas of every (part, appearance)."""
    settings = cfg.eval
    if settings.name:
        edits = editing.named_edit(run, settings.name, settings.zoo_dir)
    else:
        edits = editing.parse_edits(OmegaConf.to_container(settings.edits))
    samples, features, state = _sample_features(cfg, run)
    offset = editing.edit_offset(run, edits)
    scales = [finite_number(f"eval.scales[{i}]", t) for i, t in enumerate(settings.scales)]
    atlas_alpha = finite_number("eval.atlas_alpha", settings.atlas_alpha) if settings.atlas else None
    frames = editing.edited_images(run, features, state, offset, scales)  # [T, B, 3, H, W]
    files = {"before_after": _before_after(run, features, state, edits, samples, out / "edit_before_after.png")}
    strip = np.concatenate([to_uint8(frames[:, b]) for b in range(len(samples))])
    titles = [f"x{t:g}" for t in scales] * len(samples)
    files["strip"] = image_grid(strip, out / "edit_strip.png", columns=len(scales), titles=titles)
    files["gif"] = save_gif([np.concatenate(list(to_uint8(f)), axis=1) for f in frames], out / "edit.gif")
    if settings.atlas:
        files.update(_atlas(run, features, state, atlas_alpha, out))
    return {"edits": [vars(e) for e in edits], "samples": samples, "scales": scales, "files": files}


def _atlas(run: Run, features: torch.Tensor, state: ResumeState, alpha: float, out: Path) -> dict[str, Path]:
    """For each part: rows = appearances, columns = samples, each edited with ``alpha``."""
    files = {}
    for k in range(run.parts):
        offsets = [editing.edit_offset(run, [editing.Edit(k, j, alpha)]) for j in range(run.appearances)]
        images = torch.cat([editing.edited_images(run, features, state, o)[0] for o in offsets])
        titles = [f"p{k} a{j}" for j in range(run.appearances) for _ in range(features.shape[0])]
        files[f"atlas_part{k}"] = image_grid(to_uint8(images), out / f"atlas_part{k}.png", features.shape[0], titles)
    return files


def remove(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Paint the background appearance over a part; found around the part unless given."""
    settings = cfg.eval
    part = run.check_index(settings.part, "part")
    alpha = finite_number("eval.alpha", settings.alpha)
    coverage = None
    if settings.background is None:
        maps = localization.dataset_maps(run, cfg.seed, *_statistics(settings))
        masks = localization.binarize(maps, localization.thresholds(maps))
        background, coverage = localization.background_appearance(run, masks, part)
        log.info("background appearance %d (covers %.3f of the part's surroundings)", background, coverage[background])
    else:
        background = run.check_index(settings.background, "appearance")
    samples, features, state = _sample_features(cfg, run)
    edits = editing.removal(part, background, alpha)
    path = _before_after(run, features, state, edits, samples, out / "remove_before_after.png")
    return {
        "part": part,
        "background": background,
        "alpha": alpha,
        "surroundings_coverage": None if coverage is None else [round(float(c), 4) for c in coverage],
        "samples": samples,
        "files": {"before_after": path},
    }


def localize(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Masks of every appearance over the samples, thresholded at the dataset mean of its map."""
    settings = cfg.eval
    maps = localization.dataset_maps(run, cfg.seed, *_statistics(settings))
    threshold = localization.thresholds(maps)
    samples, features, state = _sample_features(cfg, run)
    images = run.images(features, state)
    masks = localization.concept_masks(localization.appearance_maps(run, features), threshold, images.shape[-1])
    files = {}
    for j in range(run.appearances):
        tinted = mask_overlay(images, masks[:, j])
        both = np.concatenate([to_uint8(images), tinted])
        files[f"appearance{j}"] = image_grid(both, out / f"localize_appearance{j}.png", columns=len(samples))
    summary = np.concatenate([mask_overlay(images, masks[:, j]) for j in range(run.appearances)])
    titles = [f"a{j}" for j in range(run.appearances) for _ in samples]
    files["all"] = image_grid(summary, out / "localize_all.png", columns=len(samples), titles=titles)
    return {
        "statistics": settings.statistics,
        "thresholds": [round(float(t), 5) for t in threshold],
        "samples": samples,
        "files": files,
    }


def _statistics(settings: DictConfig) -> tuple[int, int]:
    """``(eval.statistics, eval.batch_size)``: the samples of the dataset statistics and their batch size."""
    return positive_int("eval.statistics", settings.statistics), positive_int("eval.batch_size", settings.batch_size)


def refine(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Sample-specific parts ``P_i`` from the global ``P``: errors before/after, global vs refined parts."""
    settings = cfg.eval
    samples, features, state = _sample_features(cfg, run)
    refined, errors = refine_parts(flatten_features(features), run.A, run.P, settings.steps, settings.lr)
    images = run.images(features, state)
    rows = [overlay(images, run.P, run.hw)]
    rows += [overlay(images[b : b + 1], refined[b], run.hw) for b in range(len(samples))]
    titles = [f"global P, {i}" for i in samples] + [f"refined P_{i}" for i in samples]
    files = {"overlays": image_grid(np.concatenate(rows), out / "refine_overlays.png", len(samples), titles)}
    files["global_parts"] = parts_figure(run.P, run.hw, out / "refine_parts_global.png")
    for b, i in enumerate(samples):
        files[f"parts_{i}"] = parts_figure(refined[b], run.hw, out / f"refine_parts_sample{i}.png")
    return {
        "samples": samples,
        "error_before": [float(e) for e in errors[0]],
        "error_after": [float(e) for e in errors[-1]],
        "files": files,
    }


def roir(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
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


def name(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Name the run's parts after face regions (:mod:`panda.naming`): ``names.md`` (each part's label, score
    and shares), ``parts.png`` and ``overlay.png`` with the labels; stored in the run's ``factors.pt`` with
    ``eval.store``."""
    settings = NamingSettings.from_config(cfg.naming, "naming")
    naming = name_parts(run.generator, run.P, run.hw, settings, cfg.seed)
    files = {"table": atomic_write(out / "names.md", naming.table().encode())}
    files["parts"] = parts_figure(run.P, run.hw, out / "parts.png", naming.labels, naming.scores)
    samples, features, state = _sample_features(cfg, run)
    images = run.images(features, state)
    files["overlay"] = overlay_figure(images, run.P, run.hw, out / "overlay.png", naming.labels)
    if cfg.eval.store:
        files["factors"] = save_labels(cfg.run, naming.labels, naming.scores)
    shares = {
        label: {region: round(float(s), 4) for region, s in zip(REGIONS, row.tolist(), strict=True)}
        for label, row in zip(naming.labels, naming.shares, strict=True)
    }
    return {
        "labels": naming.labels,
        "scores": [round(s, 4) for s in naming.scores],
        "faces": naming.faces,
        "naming_samples": settings.samples,
        "samples": samples,
        "shares": shares,
        "files": files,
    }


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


def studio(cfg: DictConfig, run: Run, out: Path) -> dict[str, Any]:
    """Serve the interactive editor (:mod:`panda.studio`) until Ctrl-C; Gradio is imported only for this task."""
    from panda.studio.app import serve

    return serve(cfg, run, out)


TASKS: dict[str, Task] = {
    "edit": edit,
    "remove": remove,
    "localize": localize,
    "refine": refine,
    "roir": roir,
    "name": name,
    "studio": studio,
}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task`` on the factors of ``cfg.run``; writes ``evaluate.json`` and the task's images."""
    check_known_keys(cfg, "evaluate")
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task '{cfg.task}'; known tasks: {', '.join(TASKS)}")
    if cfg.run is None:
        raise ConfigError("no run given: pass run=<a training run directory holding factors.pt>")
    run = load_run(cfg.run, cfg.generator, cfg.layer)
    out = Path(cfg.output_dir)
    result = TASKS[cfg.task](cfg, run, out)
    if rank_zero_only.rank != 0:  # another process of a distributed task: rank 0 writes
        return result
    result = {"task": cfg.task, "run": str(cfg.run), "generator": run.name, "layer": run.layer, **result}
    result["files"] = {key: str(path) for key, path in result["files"].items()}
    save_json(result, out / "evaluate.json")
    log.info("%s: results in %s", cfg.task, out)
    return result
