"""The ROIR protocol (the paper's Table 1): how well does each method's best edit of a face region stay in it?

For each region (eyes, nose, mouth) and each method (PandA and the baselines of :mod:`panda.roir.baselines`):

1. **Calibration** on faces of the ``Stream.CALIBRATION`` stream: every candidate direction (PandA: each
   part x appearance; a baseline: its ranked directions; both signs) is screened on ``screen`` faces by
   its ROIR at unit scale (one set of edits serves every region); the ``finalists`` with the lowest are
   scaled on the whole calibration set so that the mean RMS change inside the ROI (:func:`inside_change`)
   equals ``inside_change``, and the lowest calibration ROIR at that change wins.
2. **Test** on faces of the disjoint ``Stream.TEST`` stream: ROIR of the chosen edit at its calibrated
   scale, as mean +- std, median and quartiles, the faces above a threshold and the worst faces,
   with the number of images measured and skipped (no face found).

Every method is scaled to the same change inside the region, so ROIR compares only what leaks out.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator, ResumeState
from panda.method.data import batch_generator
from panda.method.factorization import edit_delta
from panda.roir.baselines import BASELINES, StyleSpace
from panda.roir.baselines.base import Editor, repeat
from panda.roir.metric import ROIR, roir
from panda.uses.factors import Factors
from panda.uses.landmarks import LandmarkDetector, detect, roi_masks
from panda.uses.visualize import to_uint8

log = logging.getLogger(__name__)
NAMED = "panda_named"  # PandA's candidates restricted to the parts named after the region


class PandAEditor(Editor):
    """PandA's candidates: every (part ``k``, appearance ``j``), edited as ``Z + scale a_j p_k^T``; with
    ``parts``, only those parts' (``panda_named``: the parts named after a region)."""

    name = "panda"
    ranked = False

    def __init__(
        self, run: Factors, seconds: float = 0.0, parts: Sequence[int] | None = None, name: str = "panda"
    ) -> None:
        self.run, self.seconds, self.name = run, seconds, name
        self.parts = list(range(run.parts)) if parts is None else list(parts)
        ks = torch.tensor(self.parts).repeat_interleave(run.appearances)
        appearances = torch.arange(run.appearances).repeat(len(self.parts))
        maps = run.part_maps()
        self.deltas = torch.stack(  # [parts * R_C, C, H, W]
            [edit_delta(run.A, maps, k[None], j[None], torch.ones(1)) for k, j in zip(ks, appearances, strict=True)]
        )

    @property
    def count(self) -> int:
        return len(self.deltas)

    def label(self, k: int) -> str:
        part = self.parts[k // self.run.appearances]
        named = f" ({self.run.labels[part]})" if self.run.labels else ""
        return f"part {part}{named}, appearance {k % self.run.appearances}"

    def edit(self, k: int) -> tuple[Hashable, Hashable]:
        return id(self.run), (self.parts[k // self.run.appearances], k % self.run.appearances)

    def prepare(self, latents: Tensor) -> tuple[Tensor, ResumeState]:
        return self.run.features_and_state(latents)

    def images(self, prepared: tuple[Tensor, ResumeState], directions: Tensor, scales: Tensor) -> Tensor:
        features, state = prepared
        offsets = scales[:, None, None, None].to(features) * self.deltas[directions].to(features)
        return self.run.images(features + offsets, state)


def inside_change(original: Tensor, edited: Tensor, mask: Tensor) -> Tensor:
    """RMS change ``[B]`` per pixel and channel inside the ROI of images ``[B, 3, H, W]`` and masks ``[B, 1, H, W]``."""
    area = 3 * mask.flatten(1).sum(1)
    return ((edited - original) * mask).flatten(1).norm(dim=1) / area.clamp_min(1).sqrt()


@dataclass
class Faces:
    """Samples whose faces dlib found: latents ``[N, ...]``, images ``[N, 3, H, W]``, landmarks ``[68, 2]`` each."""

    latents: Tensor
    originals: Tensor
    landmarks: list[np.ndarray]
    skipped: int = 0

    def masks(self, region: str, dilation: int) -> Tensor:
        return roi_masks(self.landmarks, self.originals.shape[-1], region, dilation)[0]


def face_batches(
    gen: FeatureGenerator,
    detector: LandmarkDetector,
    seed: int,
    stream: int,
    samples: int,
    batch_size: int,
    progress: bool = False,
    cache: Path | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[Faces]:
    """The first ``samples`` samples of ``stream`` in batches, each keeping the images with a face (landmarks
    kept in and read from ``cache``, see :func:`panda.uses.landmarks.detect`); with ``world`` processes, process
    ``rank`` takes the batches ``rank, rank + world, ...``."""
    indices = range(rank, -(-samples // batch_size), world)
    for index in tqdm(indices, desc="faces", disable=not progress, unit="batch"):
        size = min(batch_size, samples - index * batch_size)
        latents = gen.sample_latents(size, batch_generator(seed, stream, index))
        with torch.inference_mode():
            originals = gen(latents.to(gen.device)).cpu()
        landmarks = detect(detector, to_uint8(originals), cache)
        found = torch.tensor([points is not None for points in landmarks], dtype=torch.bool)
        yield Faces(latents[found], originals[found], [p for p in landmarks if p is not None], int((~found).sum()))


def face_set(batches: Iterable[Faces]) -> Faces:
    """The faces of :func:`face_batches`' ``batches`` as one set (at least two of them)."""
    batches = list(batches)
    faces = Faces(
        torch.cat([b.latents for b in batches]),
        torch.cat([b.originals for b in batches]),
        [p for b in batches for p in b.landmarks],
        sum(b.skipped for b in batches),
    )
    if len(faces.latents) < 2:
        samples = len(faces.latents) + faces.skipped
        raise ConfigError(f"dlib found {len(faces.latents)} faces in {samples} samples; ROIR needs face images")
    return faces


@dataclass
class Settings:
    """How directions are chosen: the target change inside the ROI and the search's budget
    (``eval.choose`` in conf/task/roir.yaml, which explains each; ``config_key``: where they come from)."""

    inside_change: float
    screen: int
    finalists: int
    iterations: int
    candidates: int
    dilation: int
    chunk: int
    config_key: InitVar[str]

    def __post_init__(self, config_key: str) -> None:
        counts = {"screen": self.screen, "finalists": self.finalists, "iterations": self.iterations}
        counts |= {"candidates": self.candidates, "chunk": self.chunk}
        for key, value in counts.items():
            if value < 1:
                raise ConfigError(f"{config_key}.{key}={value} must be >= 1")
        if not self.inside_change > 0 or self.dilation < 0:
            raise ConfigError(f"{config_key}.inside_change must be > 0 and {config_key}.dilation >= 0")


@dataclass
class Choice:
    """The direction a method uses for a region, its calibrated scale and its calibration ROIR."""

    method: str
    region: str
    index: int
    label: str
    scale: float
    calibration_roir: float


def _edit_each(
    editor: Editor, prepared: Any, faces: int, directions: Sequence[int], scales: Sequence[float], chunk: int
) -> Iterator[Tensor]:
    """Images ``[faces, 3, H, W]`` of the prepared faces for each (direction, scale), several per forward pass."""
    per_pass = max(1, chunk // faces)
    for start in range(0, len(directions), per_pass):
        ks, ss = directions[start : start + per_pass], scales[start : start + per_pass]
        edited = editor.images(
            repeat(prepared, len(ks)),
            torch.tensor(ks).repeat_interleave(faces),
            torch.tensor(ss, dtype=torch.float32).repeat_interleave(faces),
        )
        yield from edited.split(faces)


def _measure(
    editor: Editor,
    prepared: Any,
    originals: Tensor,
    masks: Mapping[str, Tensor],
    candidates: Sequence[tuple[int, float]],
    chunk: int,
) -> dict[str, list[tuple[float, float]]]:
    """The mean inside change and the mean ROIR of each candidate ``(direction, scale)`` in each region of
    ``masks``, from one set of edited images."""
    measured: dict[str, list[tuple[float, float]]] = {region: [] for region in masks}
    ks, ss = [k for k, _ in candidates], [s for _, s in candidates]
    for edited in _edit_each(editor, prepared, len(originals), ks, ss, chunk):
        for region, mask in masks.items():
            change = float(inside_change(originals, edited, mask).mean())
            measured[region].append((change, float(roir(originals, edited, mask).nanmean())))
    return measured


def choose(editor: Editor, faces: Faces, regions: Sequence[str], settings: Settings) -> dict[str, Choice]:
    """For each region, the candidate of ``editor`` with the lowest ROIR on ``faces`` at the target inside change.

    Screening edits the first ``settings.screen`` faces once with every candidate at unit scale, for all the
    regions; each region's ``finalists`` with the lowest ROIR there are rescaled to the target change on all
    ``faces`` (``iterations`` times) and compared at it.
    """
    count = min(editor.count, settings.candidates) if editor.ranked else editor.count
    candidates = [(k, sign) for k in range(count) for sign in (1.0, -1.0)]
    screen = slice(0, settings.screen)
    masks = {region: faces.masks(region, settings.dilation) for region in regions}
    prepared = editor.prepare(faces.latents[screen])
    unit = _measure(
        editor, prepared, faces.originals[screen], {r: m[screen] for r, m in masks.items()}, candidates, settings.chunk
    )
    everyone = editor.prepare(faces.latents)
    choices = {}
    for region, mask in masks.items():
        screened = [
            (ratio, k, s * settings.inside_change / change)
            for (k, s), (change, ratio) in zip(candidates, unit[region], strict=True)
            if change > 0 and np.isfinite(ratio)
        ]
        if not screened:
            raise ConfigError(f"no direction of '{editor.name}' changes the {region} region")
        final = [(k, s) for _, k, s in sorted(screened, key=lambda item: item[0])[: settings.finalists]]
        for _ in range(settings.iterations):  # changes are close to linear in the scale
            changes = _measure(editor, everyone, faces.originals, {region: mask}, final, settings.chunk)[region]
            final = [
                (k, s * settings.inside_change / c) for (k, s), (c, _) in zip(final, changes, strict=True) if c > 0
            ]
        measured = _measure(editor, everyone, faces.originals, {region: mask}, final, settings.chunk)[region]
        ratios = [(r, k, s) for (k, s), (_, r) in zip(final, measured, strict=True) if np.isfinite(r)]
        if not ratios:
            raise ConfigError(f"no direction of '{editor.name}' changes the {region} region on the calibration set")
        ratio, k, scale = min(ratios, key=lambda item: item[0])
        choices[region] = Choice(editor.name, region, k, editor.label(k), scale, ratio)
    return choices


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
    """Test-set ROIR of one method on one region, and its worst faces."""

    choice: Choice
    seconds: float
    metric: ROIR
    worst: Worst
    change: MeanMetric = field(default_factory=lambda: MeanMetric().set_dtype(torch.float64))

    def row(self, skipped: int) -> dict[str, Any]:
        """The table's row; ``skipped``: test samples without a face (of all processes). Summed over the
        processes of a distributed run (every process calls it, in turn)."""
        values = {key: float(value) for key, value in self.metric.compute().items()}
        return {
            "method": self.choice.method,
            "region": self.choice.region,
            "roir_mean": round(values["mean"], 4),
            "roir_std": round(values["std"], 4),
            "roir_median": round(values["median"], 4),
            "roir_q1": round(values["q1"], 4),
            "roir_q3": round(values["q3"], 4),
            above_key(self.metric.above): int(values["above"]),
            "images": int(values["count"]),
            "unchanged": int(values["unchanged"]),
            "skipped": skipped,
            "inside_change": round(float(self.change.compute()), 4),
            "direction": self.choice.label,
            "scale": round(self.choice.scale, 5),
            "calibration_roir": round(self.choice.calibration_roir, 4),
            "find_seconds": round(self.seconds, 2),
        }


def above_key(above: float) -> str:
    """The row's column counting the faces whose ROIR exceeds ``above``."""
    return f"faces_above_{above:g}"


def measure(
    gen: FeatureGenerator,
    detector: LandmarkDetector,
    editors: Mapping[str, Mapping[str, Editor]],
    choices: Mapping[tuple[str, str], Choice],
    seed: int,
    stream: int,
    samples: int,
    batch_size: int,
    dilation: int,
    above: float,
    keep: int,
    cache: Path | None = None,
    rank: int = 0,
    world: int = 1,
) -> tuple[dict[tuple[str, str], Result], int, dict[str, Any]]:
    """ROIR of every chosen edit on the faces among ``samples`` samples of ``stream``.

    ``editors`` maps method -> region -> editor. Returns the results by (method, region) (with each one's
    ``keep`` worst faces), the number of images skipped (no face) and the first ``keep`` faces' originals,
    masks and edits (for figures). ``above``: the ROIR beyond which faces are counted. With ``world``
    processes, process ``rank`` measures its batches (:func:`face_batches`); the results' metrics sum over
    the processes, the count of skipped images, the worst faces and the faces kept are this process's.
    """
    results = {key: Result(c, editors[key[0]][key[1]].seconds, ROIR(above), Worst(keep)) for key, c in choices.items()}
    skipped, kept = 0, {"originals": [], "masks": {}, "edits": {}}
    edits = {key: (*editors[key[0]][key[1]].edit(c.index), c.scale) for key, c in choices.items()}
    batches = face_batches(
        gen, detector, seed, stream, samples, batch_size, progress=True, cache=cache, rank=rank, world=world
    )
    for faces in batches:
        skipped += faces.skipped
        if not len(faces.latents):
            continue
        take = max(0, keep - sum(len(x) for x in kept["originals"]))
        kept["originals"].append(faces.originals[:take])
        masks = {region: faces.masks(region, dilation) for region in {region for _, region in choices}}
        prepared: dict[Hashable, Any] = {}
        made: dict[tuple[Hashable, Hashable, float], Tensor] = {}  # an edit two methods share is made once
        uses = Counter(edits.values())
        for (method, region), edit in edits.items():
            editor, choice = editors[method][region], choices[method, region]
            if edit[0] not in prepared:
                prepared[edit[0]] = editor.prepare(faces.latents)
            if edit not in made:
                made[edit] = editor.images(
                    prepared[edit[0]],
                    torch.full((len(faces.latents),), choice.index),
                    torch.full((len(faces.latents),), choice.scale),
                )
            uses[edit] -= 1
            edited = made[edit] if uses[edit] else made.pop(edit)
            result, mask = results[method, region], masks[region]
            result.metric.update(faces.originals, edited, mask)
            result.worst.update(roir(faces.originals, edited, mask), faces.originals, mask, edited)
            result.change.update(inside_change(faces.originals, edited, mask).double())
            kept["edits"].setdefault((method, region), []).append(edited[:take])
        for region, mask in masks.items():
            kept["masks"].setdefault(region, []).append(mask[:take])
    if not kept["originals"]:
        raise ConfigError(f"dlib found no face among the {samples} test samples; ROIR needs face images")
    examples = {
        "originals": torch.cat(kept["originals"]),
        "masks": {region: torch.cat(m) for region, m in kept["masks"].items()},
        "edits": {key: torch.cat(e) for key, e in kept["edits"].items()},
    }
    return results, skipped, examples


def table(rows: Sequence[dict[str, Any]], regions: Sequence[str], seconds: Mapping[str, float], above: float) -> str:
    """Markdown: one row per method (of ``seconds``: its direction-finding time) with ``mean +- std`` per
    region; a second table with the median, the quartiles and the faces with ROIR above ``above``; the
    faces found and skipped."""
    by_key = {(row["method"], row["region"]): row for row in rows}
    count = above_key(above)

    def cells(method: str, text: Callable[[dict[str, Any]], str]) -> str:
        return " | ".join(text(by_key[method, r]) if (method, r) in by_key else "n/a" for r in regions)

    def mean_std(row: dict[str, Any]) -> str:
        return f"{row['roir_mean']:.2f} +- {row['roir_std']:.2f}"

    def robust(row: dict[str, Any]) -> str:
        return f"{row['roir_median']:.2f} [{row['roir_q1']:.2f}, {row['roir_q3']:.2f}], {row[count]} of {row['images']}"

    header = "| method | " + " | ".join(regions) + " |"
    lines = [header + " seconds to find directions |", "|---" * (len(regions) + 2) + "|"]
    lines += [f"| {m} | {cells(m, mean_std)} | {t:.1f} |" for m, t in seconds.items()]
    lines += ["", f"Median [first, third quartile] and the faces with ROIR above {above:g}, of those measured:", ""]
    lines += [header, "|---" * (len(regions) + 1) + "|", *(f"| {m} | {cells(m, robust)} |" for m in seconds)]
    found, skipped = rows[0]["images"] + rows[0]["unchanged"], rows[0]["skipped"]
    lines += ["", f"Test faces: {found} found, {skipped} of the {found + skipped} samples skipped (no face found)."]
    return "\n".join(lines) + "\n"


def build_editors(
    methods: Sequence[str],
    run: Factors,
    calibration: Faces,
    regions: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    dilation: int,
    run_seconds: float,
) -> dict[str, dict[str, Editor]]:
    """method -> region -> fitted editor. Region-conditioned baselines are fitted per region on the
    calibration faces; the others once. StyleSpace is left out for generators without style channels."""
    editors: dict[str, dict[str, Editor]] = {}
    for method in methods:
        if method == PandAEditor.name:
            editor = PandAEditor(run, run_seconds)
            editors[method] = dict.fromkeys(regions, editor)
            continue
        if method == NAMED:
            named = named_parts(run, regions)
            if named:
                editors[method] = {r: PandAEditor(run, run_seconds, parts, NAMED) for r, parts in named.items()}
            continue
        if method not in BASELINES:
            raise ConfigError(f"unknown method '{method}'; methods: {', '.join([PandAEditor.name, *BASELINES, NAMED])}")
        cls = BASELINES[method]
        if cls is StyleSpace and not run.generator.style_layers():
            log.warning("stylespace skipped: generator '%s' has no style channels", run.name)
            continue
        kwargs = dict(options.get(method) or {})

        def make(cls: type = cls, kwargs: dict[str, Any] = kwargs, method: str = method) -> Any:
            try:
                return cls(run.generator, **kwargs)
            except TypeError as error:
                raise ConfigError(f"bad options {kwargs} for '{method}': {error}") from None

        if cls.region_conditioned:
            masks = {r: calibration.masks(r, dilation) for r in regions}
            editors[method] = make().fit_regions(calibration.latents, masks)
        else:
            editors[method] = dict.fromkeys(regions, make().fit(calibration.latents))
        log.info("%s: directions found in %.1f s", method, sum(e.seconds for e in unique(editors[method])))
    if not editors:
        raise ConfigError(f"none of the methods {list(methods)} applies to generator '{run.name}'")
    return editors


def named_parts(run: Factors, regions: Sequence[str]) -> dict[str, list[int]]:
    """The parts named after each region (``mouth``, ``mouth_2``, ... by :mod:`panda.uses.face_regions`), for the
    regions that have any; a warning for each region without (and for a run whose parts are not named)."""
    if not run.labels:
        log.warning("%s skipped: the run's parts are not named (python evaluate.py task=name run=...)", NAMED)
        return {}
    found = {}
    for region in regions:
        parts = [k for k, label in enumerate(run.labels) if re.fullmatch(rf"{region}(_\d+)?", label)]
        if parts:
            found[region] = parts
        else:
            log.warning("%s: no part is named after the %s (labels: %s)", NAMED, region, ", ".join(run.labels))
    return found


def direction_seconds(editors: Mapping[str, Editor]) -> float:
    """The time a method took to find its directions: its distinct editors' summed (PandA's editors, restricted
    to named parts or not, share one training run: counted once)."""
    distinct = unique(editors)
    if all(isinstance(e, PandAEditor) for e in distinct):
        return distinct[0].seconds
    return sum(e.seconds for e in distinct)


def unique(editors: Mapping[str, Editor]) -> list[Editor]:
    """The distinct editors of a region -> editor mapping (shared ones once)."""
    return list({id(e): e for e in editors.values()}.values())
