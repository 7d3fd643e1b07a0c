"""The choice of each method's direction per region on calibration faces: screening, then calibration.

Every candidate direction (PandA: each part x appearance; a baseline: its ranked directions; both signs) is
screened on ``screen`` faces by its ROIR at unit scale (one set of edits serves every region); the ``finalists``
with the lowest are scaled on the whole calibration set so that the mean RMS change inside the ROI
(:func:`panda.roir.metric.inside_change`) equals ``inside_change``, and the lowest calibration ROIR at that
change wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from panda.base.errors import ConfigError
from panda.roir.baselines.base import Editor, repeat
from panda.roir.editors import unique
from panda.roir.faces import Faces
from panda.roir.metric import inside_change, roir
from panda.roir.settings import ChooseSettings

log = logging.getLogger(__name__)


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


def _changes_and_ratios(
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


def _screen(editor: Editor, faces: Faces, masks: Mapping[str, Tensor], settings: ChooseSettings) -> dict[str, list]:
    """Per region, the ``finalists`` candidates ``(direction, scale)`` of the lowest ROIR on the first ``screen``
    faces at unit scale, their scales set to the target change there."""
    count = min(editor.count, settings.candidates) if editor.ranked else editor.count
    candidates = [(k, sign) for k in range(count) for sign in (1.0, -1.0)]
    screen = slice(0, settings.screen)
    unit = _changes_and_ratios(
        editor,
        editor.prepare(faces.latents[screen]),
        faces.originals[screen],
        {region: mask[screen] for region, mask in masks.items()},
        candidates,
        settings.chunk,
    )
    finalists = {}
    for region in masks:
        screened = [
            (ratio, k, s * settings.inside_change / change)
            for (k, s), (change, ratio) in zip(candidates, unit[region], strict=True)
            if change > 0 and np.isfinite(ratio)
        ]
        if not screened:
            raise ConfigError(f"no direction of '{editor.name}' changes the {region} region")
        finalists[region] = [(k, s) for _, k, s in sorted(screened, key=lambda item: item[0])[: settings.finalists]]
    return finalists


def choose(editor: Editor, faces: Faces, regions: Sequence[str], settings: ChooseSettings) -> dict[str, Choice]:
    """For each region, the candidate of ``editor`` with the lowest ROIR on ``faces`` at the target inside change.

    Screening edits the first ``settings.screen`` faces once with every candidate at unit scale, for all the
    regions; each region's ``finalists`` with the lowest ROIR there are rescaled to the target change on all
    ``faces`` (``iterations`` times) and compared at it.
    """
    masks = {region: faces.masks(region, settings.dilation) for region in regions}
    finalists = _screen(editor, faces, masks, settings)
    everyone = editor.prepare(faces.latents)
    choices = {}
    for region, mask in masks.items():
        final = finalists[region]
        for _ in range(settings.iterations):  # changes are close to linear in the scale
            changes = _changes_and_ratios(editor, everyone, faces.originals, {region: mask}, final, settings.chunk)
            final = [
                (k, s * settings.inside_change / c)
                for (k, s), (c, _) in zip(final, changes[region], strict=True)
                if c > 0
            ]
        measured = _changes_and_ratios(editor, everyone, faces.originals, {region: mask}, final, settings.chunk)
        ratios = [(r, k, s) for (k, s), (_, r) in zip(final, measured[region], strict=True) if np.isfinite(r)]
        if not ratios:
            raise ConfigError(f"no direction of '{editor.name}' changes the {region} region on the calibration set")
        ratio, k, scale = min(ratios, key=lambda item: item[0])
        choices[region] = Choice(editor.name, region, k, editor.label(k), scale, ratio)
    return choices


def choose_all(
    editors: Mapping[str, Mapping[str, Editor]], faces: Faces, settings: ChooseSettings
) -> dict[tuple[str, str], Choice]:
    """(method, region) -> the choice of each method's editor for each region on ``faces``; an editor shared by
    regions chooses for all of them at once."""
    choices = {}
    for method, by_region in editors.items():
        for editor in unique(by_region):
            shared = [region for region, e in by_region.items() if e is editor]
            for region, choice in choose(editor, faces, shared, settings).items():
                choices[method, region] = choice
                log.info("%s / %s: %s x %.3g", method, region, choice.label, choice.scale)
    return choices
