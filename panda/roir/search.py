"""The choice of each method's direction per target on calibration faces: screening, then calibration.

A target is a region (the edit that stays most inside it) or a semantic edit (:data:`panda.uses.landmarks.FEATURES`:
the edit that produces its landmark effect most). Each method tries the candidates its editor preselects for the
target's region without looking at ROIR (:meth:`~panda.roir.baselines.base.Editor.preselect`: at most ``budget``,
the same for every method; ``None``: all of them), each with both signs. Every candidate is screened on ``screen``
faces at unit scale (one set of edits serves every target):

- a region: the ``finalists`` of the lowest ROIR are scaled on the whole calibration set so that the mean RMS change
  inside the ROI (:func:`panda.roir.metric.inside_change`) equals ``inside_change``; the lowest ROIR at that change
  wins;
- a semantic edit: among the candidates whose inside change at the scale of the target effect (``effect`` standard
  deviations of the measure over the calibration faces, the change assumed linear in the scale) lies between
  ``inside_change`` and ``max_change``, the ``finalists`` of the largest mean change of the landmark measure per unit
  of change inside the ROI are scaled on the whole calibration set to that effect; among those whose inside change
  still lies in those bounds, the largest effect per change inside wins (ROIR plays no part); a method without one
  has no such edit. The lower bound keeps out edits that move the landmarks without changing the feature's region
  (at least as much as a region edit changes it): dlib's predictor also reads the pixels around the region.
"""

from __future__ import annotations

import logging
import math
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
from panda.uses.landmarks import FEATURES, Feature, LandmarkDetector

log = logging.getLogger(__name__)
BUDGET, FULL = "budget", "full"  # the searches: every method's candidates at the same budget, or all of them


@dataclass(frozen=True)
class Target:
    """What a direction is chosen for: ``name`` is a region, or a semantic edit measured by ``feature`` in its
    ``region``."""

    name: str
    region: str
    feature: Feature | None = None


def targets(regions: Sequence[str], features: Sequence[str] = ()) -> list[Target]:
    """The regions' targets, then the semantic edits'."""
    return [Target(r, r) for r in regions] + [Target(f, FEATURES[f].region, FEATURES[f]) for f in features]


@dataclass
class Choice:
    """The direction a method uses for a target (in ``region``), its calibrated scale, its calibration ROIR and (a
    semantic edit) its mean effect there, found by the ``search`` (:data:`BUDGET` or :data:`FULL`)."""

    method: str
    target: str
    region: str
    index: int
    label: str
    scale: float
    calibration_roir: float
    search: str = BUDGET
    calibration_effect: float = math.nan


@dataclass
class _Measured:
    """A candidate's mean inside change, mean ROIR and mean effect (``nan`` unless measured) on a set of faces."""

    change: float
    ratio: float
    effect: float = math.nan


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
    faces: Faces,
    masks: Mapping[str, Tensor],
    aims: Sequence[Target],
    candidates: Sequence[tuple[int, float]],
    chunk: int,
    detector: LandmarkDetector | None,
    effects: Sequence[bool] | None = None,
) -> dict[str, list[_Measured]]:
    """Per target, each candidate ``(direction, scale)``'s mean inside change and ROIR on ``faces`` (``masks``: by
    region) and, for a semantic edit where ``effects`` asks (default: everywhere), its mean effect: the change of its
    landmark measure (landmarks refitted, :meth:`Faces.refit`); one set of edited images serves every target."""
    measured: dict[str, list[_Measured]] = {aim.name: [] for aim in aims}
    semantic = [aim for aim in aims if aim.feature is not None]
    ks, ss = [k for k, _ in candidates], [s for _, s in candidates]
    wanted = [True] * len(candidates) if effects is None else list(effects)
    base = faces.refit(detector) if semantic and detector is not None and any(wanted) else None
    prepared = editor.prepare(faces.latents)
    for edited, want in zip(_edit_each(editor, prepared, len(faces.originals), ks, ss, chunk), wanted, strict=True):
        by_region = {}
        for region in {aim.region for aim in aims}:
            mask = masks[region]
            ratio = float(roir(faces.originals, edited, mask).nanmean())
            by_region[region] = (float(inside_change(faces.originals, edited, mask).mean()), ratio)
        points = faces.refit(detector, edited) if base is not None and want else None
        for aim in aims:
            effect = math.nan
            if aim.feature is not None and points is not None:
                effect = float(np.mean(aim.feature.measure(points) - aim.feature.measure(base)))
            measured[aim.name].append(_Measured(*by_region[aim.region], effect))
    return measured


def _screen(
    editor: Editor,
    faces: Faces,
    masks: Mapping[str, Tensor],
    aims: Sequence[Target],
    settings: ChooseSettings,
    budget: int | None,
    detector: LandmarkDetector | None,
    goals: Mapping[str, float],
) -> dict[str, list[tuple[int, float]]]:
    """Per target, its ``finalists`` ``(direction, scale)`` among the candidates ``editor`` preselects for its region
    (at most ``budget``), screened on the first ``screen`` faces at unit scale; their scales set to the target's
    inside change (a region) or effect ``goals[name]`` (a semantic edit) there. A semantic edit's effect is read on
    the positive sign; the negative sign's is its negative."""
    wanted = {aim.name: editor.preselect(aim.region, budget) for aim in aims}
    union = list(dict.fromkeys(k for ks in wanted.values() for k in ks))
    candidates = [(k, sign) for k in union for sign in (1.0, -1.0)]
    head = faces.head(settings.screen)
    screen = {region: mask[: settings.screen] for region, mask in masks.items()}
    effects = [sign > 0 for _, sign in candidates]
    unit = _measure(editor, head, screen, aims, candidates, settings.chunk, detector, effects)
    finalists = {}
    for aim in aims:
        allowed, scored = set(wanted[aim.name]), []
        for i, (k, s) in enumerate(candidates):
            m = unit[aim.name][i]
            if k not in allowed or not m.change > 0 or not np.isfinite(m.ratio):
                continue
            if aim.feature is None:
                scored.append((m.ratio, k, s * settings.inside_change / m.change))
                continue
            effect = m.effect if s > 0 else -unit[aim.name][i - 1].effect  # the positive sign precedes
            if effect > 0 and settings.semantic_change(m.change * goals[aim.name] / effect):
                scored.append((-effect / m.change, k, s * goals[aim.name] / effect))
        if not scored and aim.feature is None:
            raise ConfigError(f"no direction of '{editor.name}' changes the {aim.name} region")
        finalists[aim.name] = [(k, s) for _, k, s in sorted(scored, key=lambda item: item[0])[: settings.finalists]]
    return finalists


def choose(
    editor: Editor,
    faces: Faces,
    aims: Sequence[Target] | Sequence[str],
    settings: ChooseSettings,
    budget: int | None = None,
    detector: LandmarkDetector | None = None,
    search: str = BUDGET,
) -> dict[str, Choice]:
    """For each target (a :class:`Target`, or a region's name), the candidate of ``editor`` chosen on ``faces`` among
    at most ``budget`` preselected ones (``None``: all), scaled to the target's inside change or effect
    (:mod:`panda.roir.search`); semantic edits need ``detector`` to refit the edited faces' landmarks."""
    aims = [aim if isinstance(aim, Target) else Target(aim, aim) for aim in aims]
    if any(aim.feature is not None for aim in aims) and detector is None:
        raise ConfigError("semantic edits need a landmark detector")
    masks = {region: faces.masks(region, settings.dilation) for region in {aim.region for aim in aims}}
    goals = {
        aim.name: settings.effect * float(np.std(aim.feature.measure(faces.refit(detector))))
        for aim in aims
        if aim.feature is not None
    }
    finalists = _screen(editor, faces, masks, aims, settings, budget, detector, goals)
    choices = {}
    for aim in aims:
        final, goal = finalists[aim.name], goals.get(aim.name, settings.inside_change)
        for _ in range(settings.iterations):  # changes and effects are close to linear in the scale
            measured = _measure(editor, faces, masks, [aim], final, settings.chunk, detector)[aim.name]
            reached = [m.change if aim.feature is None else m.effect for m in measured]
            final = [(k, s * goal / r) for (k, s), r in zip(final, reached, strict=True) if r > 0]
        measured = _measure(editor, faces, masks, [aim], final, settings.chunk, detector)[aim.name]
        ranked = [
            (m.ratio if aim.feature is None else -m.effect / m.change, k, s, m)
            for (k, s), m in zip(final, measured, strict=True)
            if np.isfinite(m.ratio)
            and m.change > 0
            and (aim.feature is None or (m.effect > 0 and settings.semantic_change(m.change)))
        ]
        if not ranked and aim.feature is not None:  # a method may have no such edit: n/a in its row
            log.warning(
                "%s search: no direction of '%s' produces the %s edit with an inside change in [%g, %g]",
                search,
                editor.name,
                aim.name,
                settings.inside_change,
                settings.max_change,
            )
            continue
        if not ranked:
            raise ConfigError(f"no direction of '{editor.name}' changes the {aim.name} region on the calibration set")
        _, k, scale, m = min(ranked, key=lambda item: item[0])
        choices[aim.name] = Choice(
            editor.name, aim.name, aim.region, k, editor.label(k), scale, m.ratio, search, m.effect
        )
    return choices


def choose_all(
    editors: Mapping[str, Mapping[str, Editor]],
    faces: Faces,
    aims: Sequence[Target],
    settings: ChooseSettings,
    budget: int | None,
    detector: LandmarkDetector | None,
    search: str,
) -> dict[tuple[str, str, str], Choice]:
    """(search, method, target) -> the choice of each method's editor for each target on ``faces``, among at most
    ``budget`` candidates each; an editor shared by regions chooses for all their targets at once."""
    choices = {}
    for method, by_region in editors.items():
        for editor in unique(by_region):
            shared = [aim for aim in aims if by_region.get(aim.region) is editor]
            if not shared:
                continue
            for name, choice in choose(editor, faces, shared, settings, budget, detector, search).items():
                choices[search, method, name] = choice
                log.info("%s search, %s / %s: %s x %.3g", search, method, name, choice.label, choice.scale)
    return choices
