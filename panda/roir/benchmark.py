"""The ROIR benchmark (the paper's Table 1): how well does each method's best edit of a face region stay in it?

For each region (eyes, nose, mouth) and each method of ``settings.methods`` (:data:`panda.roir.editors.METHODS`):

1. **Calibration** on faces of the ``Stream.CALIBRATION`` stream: the methods that need it are fitted on them, and
   each method's direction for each region is chosen and scaled to the same change inside the region
   (:mod:`panda.roir.search`).
2. **Test** on faces of the disjoint ``Stream.TEST`` stream: ROIR of the chosen edit at its calibrated scale
   (:mod:`panda.roir.measure`), as mean +- std, median and quartiles, the faces above a threshold and the worst
   faces, with the number of images measured and skipped (no face found).

Every method is scaled to the same change inside the region, so ROIR compares only what leaks out. Both
``evaluate.py task=roir`` and ``train.py callbacks=roir_final`` run :func:`benchmark`.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning_fabric import Fabric

from panda.base.errors import ConfigError
from panda.method.data import Stream
from panda.roir.editors import build_editors, direction_seconds
from panda.roir.faces import face_batches, face_set
from panda.roir.measure import measure
from panda.roir.report import Results, row
from panda.roir.search import choose_all
from panda.roir.settings import ROIRSettings
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


def benchmark(
    factors: Factors, settings: ROIRSettings, seed: int, fit_seconds: float = math.nan, fabric: Fabric | None = None
) -> Results:
    """ROIR of each method of ``settings`` on the generator of ``factors`` (PandA: ``factors`` themselves, found in
    ``fit_seconds``), on the samples numbered by ``seed``.

    With ``fabric`` (several processes), every process calibrates, all measure rank 0's choices on their share of
    the test batches (process ``r``: batches ``r, r + world, ...``), and the rows and the count of skipped images
    sum over the processes.
    """
    gen = factors.generator
    detector, cache = settings.detector(), settings.cache
    calibration = face_set(
        face_batches(gen, detector, seed, Stream.CALIBRATION, settings.calibration, settings.batch_size, cache=cache)
    )
    log.info("calibration: %d faces (%d skipped)", len(calibration.latents), calibration.skipped)
    editors = build_editors(factors, calibration, settings, fit_seconds)
    choices = choose_all(editors, calibration, settings.choose)
    rank, world = (0, 1) if fabric is None else (fabric.global_rank, fabric.world_size)
    if fabric is not None:  # every process measures rank 0's choices
        choices = fabric.broadcast(choices)
    log.info("measuring each chosen edit on the faces among %d test samples", settings.test_samples)
    batches = face_batches(
        gen, detector, seed, Stream.TEST, settings.test_samples, settings.batch_size, True, cache, rank, world
    )
    measured = measure(editors, choices, batches, settings.choose.dilation, settings.above, settings.grid)
    if not measured.faces:
        raise ConfigError(f"dlib found no face among the {settings.test_samples} test samples; ROIR needs face images")
    skipped = measured.skipped
    if fabric is not None:
        skipped = int(fabric.all_reduce(torch.tensor(skipped), reduce_op="sum"))
    return Results(
        regions=list(settings.regions),
        above=settings.above,
        choices=choices,
        measured=measured.results,
        rows=[row(measured.results[key], skipped) for key in choices],
        seconds={method: direction_seconds(by_region) for method, by_region in editors.items()},
        skipped=skipped,
        calibration_faces=len(calibration.latents),
        examples=measured.examples,
    )
