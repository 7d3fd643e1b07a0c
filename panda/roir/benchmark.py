"""The ROIR benchmark (the paper's Table 1): how well does each method's edit of a face region stay in it?

For each target (a region: eyes, nose, mouth; a semantic edit: eyes_open, nose_length, open_mouth, smile) and each
method of ``settings.methods`` (:data:`panda.roir.editors.METHODS`):

1. **Calibration** on faces of the ``Stream.CALIBRATION`` stream: the methods that need it are fitted on them, and
   each method's direction for each target is chosen among the same number of preselected candidates for every
   method (and, with ``full_search``, among all of them) and scaled to the same change inside the region, or the same
   landmark effect (:mod:`panda.roir.search`).
2. **Measurement** on faces of a disjoint stream: ``Stream.TEST`` for the final table (``evaluate.py task=roir``),
   ``Stream.ROIR_VALIDATION`` for every choice made by looking at the result (``callbacks=roir_final`` and the
   ablations): ROIR of the chosen edit at its calibrated scale (:mod:`panda.roir.measure`), as mean +- std, median
   and quartiles, the faces above a threshold and the worst faces, with the number of images measured and skipped
   (no face found), and a semantic edit's effect achieved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric

from panda.base.errors import ConfigError
from panda.method.data import Stream
from panda.roir.editors import METHODS, build_editors, direction_seconds, unmet
from panda.roir.faces import Faces, face_batches, face_set
from panda.roir.measure import measure
from panda.roir.report import Results, Tuned, row
from panda.roir.search import BUDGET, FULL, choose_all, targets
from panda.roir.settings import ROIRSettings
from panda.uses.factors import Factors
from panda.uses.landmarks import LandmarkDetector

log = logging.getLogger(__name__)


MEASURED = (Stream.TEST, Stream.ROIR_VALIDATION)  # the streams the benchmark may measure on


def benchmark(
    factors: Factors,
    settings: ROIRSettings,
    seed: int,
    fit_seconds: float = math.nan,
    fabric: Fabric | None = None,
    stream: Stream = Stream.TEST,
) -> Results:
    """ROIR of each method of ``settings`` on the generator of ``factors`` (PandA: ``factors`` themselves, found in
    ``fit_seconds``), chosen on the calibration samples numbered by ``seed`` and measured on the first
    ``settings.test_samples`` samples of ``stream`` (``Stream.TEST`` only for the final table).

    With ``fabric`` (several processes), every process calibrates, all measure rank 0's choices on their share of
    the test batches (process ``r``: batches ``r, r + world, ...``), and the rows and the count of skipped images
    sum over the processes.
    """
    if stream not in MEASURED:
        raise ConfigError(f"ROIR is measured on {' or '.join(s.name for s in MEASURED)}, not {stream!r}")
    gen = factors.generator
    detector, cache = settings.detector(), settings.cache
    calibration = face_set(
        face_batches(gen, detector, seed, Stream.CALIBRATION, settings.calibration, settings.batch_size, cache=cache)
    )
    log.info("calibration: %d faces (%d skipped)", len(calibration.latents), calibration.skipped)
    tuned = tune(factors, calibration, settings, seed, detector)
    settings = dataclasses.replace(
        settings,
        baselines={**settings.baselines, **{m: dict(settings.baselines[m], **t.best) for m, t in tuned.items()}},
    )
    editors = build_editors(factors, calibration, settings, fit_seconds)
    aims = targets(settings.regions, settings.features)
    searches = {BUDGET: settings.choose.candidates} | ({FULL: None} if settings.full_search else {})
    choices = {}
    for search, budget in searches.items():
        choices |= choose_all(editors, calibration, aims, settings.choose, budget, detector, search)
    rank, world = (0, 1) if fabric is None else (fabric.global_rank, fabric.world_size)
    if fabric is not None:  # every process measures rank 0's choices
        choices = fabric.broadcast(choices)
    log.info("measuring each chosen edit on the faces among %d samples of %s", settings.test_samples, stream.name)
    batches = face_batches(
        gen, detector, seed, stream, settings.test_samples, settings.batch_size, True, cache, rank, world
    )
    choose = settings.choose
    measured = measure(
        editors, choices, batches, choose.dilation, settings.above, settings.grid, detector, settings.effect_faces
    )
    if not measured.faces:
        raise ConfigError(f"dlib found no face among the {settings.test_samples} measured samples; ROIR needs faces")
    skipped = measured.skipped
    if fabric is not None:
        skipped = int(fabric.all_reduce(torch.tensor(skipped), reduce_op="sum"))
    return Results(
        regions=list(settings.regions),
        features=list(settings.features),
        budget=settings.choose.candidates,
        above=settings.above,
        choices=choices,
        measured=measured.results,
        rows=[row(measured.results[key], skipped) for key in choices],
        seconds={method: direction_seconds(by_region) for method, by_region in editors.items()},
        skipped=skipped,
        calibration_faces=len(calibration.latents),
        examples=measured.examples,
        tuned=tuned,
    )


def tune(
    factors: Factors, calibration: Faces, settings: ROIRSettings, seed: int, detector: LandmarkDetector
) -> dict[str, Tuned]:
    """Per baseline of ``settings.methods`` with knobs in ``settings.tune``, the value of each knob (in turn, the
    others at their chosen values) whose edits, fitted and chosen on the ``calibration`` faces as the benchmark
    chooses them (regions, equal budget), have the lowest ROIR averaged over the regions (each region's mean) on the
    faces among ``settings.tune_samples`` samples of the ROIR validation stream; the same rule for every baseline."""
    knobs = {m: k for m, k in settings.tune.items() if m in settings.methods and k}
    applicable = {m for m in knobs if not [need for need in METHODS[m].needs if unmet(need, factors)]}
    if not applicable:
        return {}
    faces = face_set(
        face_batches(
            factors.generator,
            detector,
            seed,
            Stream.ROIR_VALIDATION,
            settings.tune_samples,
            settings.batch_size,
            cache=settings.cache,
        )
    )
    aims = targets(settings.regions)
    tuned = {}
    for method in [m for m in settings.methods if m in applicable]:
        best: dict[str, Any] = {}
        scores: dict[str, dict[str, float]] = {}
        for knob, values in knobs[method].items():
            scores[knob] = {}
            for value in values:
                options = {**settings.baselines[method], **best, knob: value}
                trial = dataclasses.replace(settings, methods=(method,), features=(), baselines={method: options})
                editors = build_editors(factors, calibration, trial, math.nan)
                choices = choose_all(editors, calibration, aims, trial.choose, trial.choose.candidates, None, BUDGET)
                measured = measure(editors, choices, [faces], trial.choose.dilation, trial.above, 0)
                means = [float(r.metric.compute()["mean"]) for r in measured.results.values()]
                scores[knob][str(value)] = float(np.mean(means))
                log.info("%s %s=%s: validation ROIR %.3f", method, knob, value, scores[knob][str(value)])
            best[knob] = values[[str(v) for v in values].index(min(scores[knob], key=scores[knob].get))]
        tuned[method] = Tuned(best, scores, len(faces.latents))
    return tuned
