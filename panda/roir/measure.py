"""The test: ROIR of every chosen edit on the faces of the test stream, with each one's worst faces and the
first faces kept for the figures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from panda.roir.baselines.base import Editor
from panda.roir.faces import Faces
from panda.roir.metric import ROIR, inside_change, roir
from panda.roir.search import Choice
from panda.uses.landmarks import FEATURES, LandmarkDetector


@dataclass
class Worst:
    """The ``size`` faces with the highest ROIR seen so far, highest first (ties: the earlier face):
    their ``ratios`` ``[K]``, ``originals`` and ``edits`` ``[K, 3, H, W]`` and ``masks`` ``[K, 1, H, W]``."""

    size: int
    ratios: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))
    originals: Tensor | None = None
    masks: Tensor | None = None
    edits: Tensor | None = None

    def update(self, ratios: Tensor, originals: Tensor, masks: Tensor, edits: Tensor) -> None:
        """Add a batch's faces (``nan`` ratios, unchanged regions, are never kept)."""
        ratios = torch.cat([self.ratios, ratios.double()])
        order = torch.sort(ratios.nan_to_num(float("-inf")), descending=True, stable=True).indices
        keep = order[~ratios[order].isnan()][: self.size]
        self.ratios = ratios[keep]
        self.originals, self.masks, self.edits = (
            (batch if kept is None else torch.cat([kept, batch]))[keep]
            for kept, batch in ((self.originals, originals), (self.masks, masks), (self.edits, edits))
        )


@dataclass
class Result:
    """Test-set ROIR of one method's choice for one target (``seconds``: its time to find directions), its worst
    faces, its mean inside change and (a semantic edit) the mean and mean square of its effect per face."""

    choice: Choice
    seconds: float
    metric: ROIR
    worst: Worst
    change: MeanMetric = field(default_factory=lambda: MeanMetric().set_dtype(torch.float64))
    effect: MeanMetric = field(default_factory=lambda: MeanMetric().set_dtype(torch.float64))
    effect_squared: MeanMetric = field(default_factory=lambda: MeanMetric().set_dtype(torch.float64))

    def update(self, originals: Tensor, edited: Tensor, mask: Tensor) -> None:
        """Measure a batch of edited faces."""
        self.metric.update(originals, edited, mask)
        self.worst.update(roir(originals, edited, mask), originals, mask, edited)
        self.change.update(inside_change(originals, edited, mask).double())


@dataclass
class Examples:
    """The first test faces (of this process): ``originals`` ``[K, 3, H, W]``, region -> ``masks`` ``[K, 1, H, W]``,
    (method, region) -> ``edits`` ``[K, 3, H, W]``."""

    originals: Tensor
    masks: dict[str, Tensor]
    edits: dict[tuple[str, str, str], Tensor]


@dataclass
class Measured:
    """What :func:`measure` found: the results by (method, region), the images skipped (no face), the faces
    measured and the examples (all of this process's)."""

    results: dict[tuple[str, str, str], Result]
    skipped: int
    faces: int
    examples: Examples


def _edit_batch(
    faces: Faces, editors: Mapping[str, Mapping[str, Editor]], choices: Mapping[tuple[str, str, str], Choice]
) -> Iterable[tuple[tuple[str, str, str], Tensor]]:
    """The key of each choice and its edit of ``faces``; an edit two choices share is made once."""
    edits = {key: (*editors[c.method][c.region].edit(c.index), c.scale) for key, c in choices.items()}
    prepared: dict[Hashable, Any] = {}
    made: dict[tuple[Hashable, Hashable, float], Tensor] = {}
    uses = Counter(edits.values())
    for key, edit in edits.items():
        choice = choices[key]
        editor = editors[choice.method][choice.region]
        if edit[0] not in prepared:
            prepared[edit[0]] = editor.prepare(faces.latents)
        if edit not in made:
            made[edit] = editor.images(
                prepared[edit[0]],
                torch.full((len(faces.latents),), choice.index),
                torch.full((len(faces.latents),), choice.scale),
            )
        uses[edit] -= 1
        yield key, made[edit] if uses[edit] else made.pop(edit)


def measure(
    editors: Mapping[str, Mapping[str, Editor]],
    choices: Mapping[tuple[str, str, str], Choice],
    batches: Iterable[Faces],
    dilation: int,
    above: float,
    keep: int,
    detector: LandmarkDetector | None = None,
    effect_faces: int = 0,
) -> Measured:
    """ROIR of every chosen edit on the faces of ``batches`` (:func:`panda.roir.faces.face_batches`).

    ``editors`` maps method -> region -> editor; ``choices``: by (search, method, target); ``dilation``: of the ROI
    masks; ``above``: the ROIR beyond which faces are counted; ``keep``: the worst faces of each result, and the first
    faces kept as examples; ``effect_faces``: the first faces (of this process) on which a semantic edit's effect is
    measured, its landmarks refitted by ``detector``. In a distributed run the results' metrics sum over the
    processes (every process calls ``compute`` in turn).
    """
    results = {
        key: Result(c, editors[c.method][c.region].seconds, ROIR(above), Worst(keep)) for key, c in choices.items()
    }
    skipped, found, originals = 0, 0, []
    masks: dict[str, list[Tensor]] = {}
    edits: dict[tuple[str, str, str], list[Tensor]] = {}
    for faces in batches:
        skipped += faces.skipped
        if not len(faces.latents):
            continue
        take = max(0, keep - sum(len(x) for x in originals))
        effects = faces.head(max(0, effect_faces - found)) if detector is not None else faces.head(0)
        originals.append(faces.originals[:take])
        found += len(faces.latents)
        by_region = {region: faces.masks(region, dilation) for region in {c.region for c in choices.values()}}
        for key, edited in _edit_batch(faces, editors, choices):
            results[key].update(faces.originals, edited, by_region[choices[key].region])
            feature = FEATURES.get(choices[key].target)
            if feature is not None and len(effects.latents):
                points = effects.refit(detector, edited[: len(effects.latents)])
                effect = torch.from_numpy(feature.measure(points) - feature.measure(effects.refit(detector)))
                results[key].effect.update(effect)
                results[key].effect_squared.update(effect.square())
            edits.setdefault(key, []).append(edited[:take])
        for region, mask in by_region.items():
            masks.setdefault(region, []).append(mask[:take])
    examples = Examples(
        torch.cat(originals) if originals else torch.empty(0),
        {region: torch.cat(m) for region, m in masks.items()},
        {key: torch.cat(e) for key, e in edits.items()},
    )
    return Measured(results, skipped, found, examples)
