"""The methods of the benchmark, PandA among them: one registry (:data:`METHODS`), each method declaring what it
:class:`~panda.roir.baselines.base.Need` s, and :func:`build_editors`, which makes each one's editor per region."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from panda.base.errors import ConfigError
from panda.generators.base import ResumeState
from panda.method.factorization import edit_delta
from panda.roir.baselines import BASELINES
from panda.roir.baselines.base import Baseline, Editor, Need
from panda.roir.faces import Faces
from panda.roir.settings import ROIRSettings
from panda.uses.factors import Factors

log = logging.getLogger(__name__)
NAMED = "panda_named"  # PandA's candidates restricted to the parts named after the region


def is_named(label: str, region: str) -> bool:
    """Whether a part's ``label`` names ``region`` (``mouth``, ``mouth_2``, ... by :mod:`panda.uses.face_regions`)."""
    return re.fullmatch(rf"{region}(_\d+)?", label) is not None


class PandAEditor(Editor):
    """PandA's candidates: every (part ``k``, appearance ``j``), edited as ``Z + scale a_j p_k^T``; with
    ``parts``, only those parts' (``panda_named``: the parts named after a region). ``seconds``: the training's.

    :meth:`fit` measures each appearance's presence on each part on the calibration faces, which orders the
    candidates of a search with a budget (:meth:`preselect`)."""

    name = "panda"

    def __init__(
        self, factors: Factors, seconds: float = 0.0, parts: Sequence[int] | None = None, name: str = "panda"
    ) -> None:
        self.factors, self.seconds, self.name = factors, seconds, name
        self.parts = list(range(factors.parts)) if parts is None else list(parts)
        ks = torch.tensor(self.parts).repeat_interleave(factors.appearances)
        appearances = torch.arange(factors.appearances).repeat(len(self.parts))
        maps = factors.part_maps()
        self.deltas = torch.stack(  # [parts * R_C, C, H, W]
            [edit_delta(factors.A, maps, k[None], j[None], torch.ones(1)) for k, j in zip(ks, appearances, strict=True)]
        )
        self.presence: Tensor | None = None  # [R_C, R_S], by fit

    def fit(self, latents: Tensor, masks: Tensor | None = None) -> PandAEditor:
        """Record each appearance's presence on each part over ``latents``: the mean ``|a_j^T Z p_k|`` (the
        coefficients ``A^T Z P`` of the factorisation) over ``||a_j|| ||p_k||``, ``[R_C, R_S]``; nothing is edited."""
        A, P = self.factors.A.float(), self.factors.P.float()
        total = torch.zeros(A.shape[1], P.shape[1], device=A.device)
        for batch in latents.split(16):
            features = self.factors.features(batch).flatten(2).to(A)  # [B, C, S]
            total += (A.T @ features @ P).abs().sum(0)
        norms = (A.norm(dim=0)[:, None] * P.norm(dim=0)[None]).clamp_min(1e-12)
        self.presence = (total / max(1, len(latents)) / norms).cpu()
        return self

    def preselect(self, region: str, budget: int | None) -> list[int]:
        """All candidates with no ``budget``; else the (part, appearance) pairs of the parts named after ``region``
        (all parts where none is), the appearances most present on their part first (:meth:`fit`)."""
        if budget is None:
            return list(range(self.count))
        if self.presence is None:
            raise ConfigError("PandA's candidates are ranked by the presence fit() measures: fit it first")
        labels = self.factors.labels or []
        named = [i for i, part in enumerate(self.parts) if part < len(labels) and is_named(labels[part], region)]
        positions = named or list(range(len(self.parts)))
        rc = self.factors.appearances
        candidates = [i * rc + j for i in positions for j in range(rc)]
        scores = torch.stack([self.presence[k % rc, self.parts[k // rc]] for k in candidates])
        order = torch.sort(scores, descending=True, stable=True).indices[:budget]
        return [candidates[i] for i in order.tolist()]

    @property
    def count(self) -> int:
        return len(self.deltas)

    @property
    def source(self) -> Hashable:
        return id(self.factors)  # restricted to some parts or not, one training run found the directions

    def label(self, k: int) -> str:
        part = self.parts[k // self.factors.appearances]
        named = f" ({self.factors.labels[part]})" if self.factors.labels else ""
        return f"part {part}{named}, appearance {k % self.factors.appearances}"

    def edit(self, k: int) -> tuple[Hashable, Hashable]:
        return self.source, (self.parts[k // self.factors.appearances], k % self.factors.appearances)

    def prepare(self, latents: Tensor) -> tuple[Tensor, ResumeState]:
        return self.factors.features_and_state(latents)

    def images(self, prepared: tuple[Tensor, ResumeState], directions: Tensor, scales: Tensor) -> Tensor:
        features, state = prepared
        offsets = scales[:, None, None, None].to(features) * self.deltas[directions].to(features)
        return self.factors.images(features + offsets, state)


Make = Callable[[Factors, float, dict[str, Any], "list[int] | None"], Editor]


@dataclass(frozen=True)
class Method:
    """A method of the benchmark: ``make(factors, fit_seconds, options, parts)`` makes its editor (``options``: its
    ``baselines`` settings; ``parts``: the parts named after a region, for a method that needs them)."""

    name: str
    make: Make
    needs: frozenset[Need] = frozenset()

    def editors(
        self, factors: Factors, calibration: Faces, settings: ROIRSettings, fit_seconds: float
    ) -> dict[str, Editor]:
        """region -> this method's editor, fitted on the ``calibration`` faces (per region when it needs to be)."""
        options = settings.baselines.get(self.name, {})
        if Need.NAMED_PARTS in self.needs:
            named = named_parts(factors, settings.searched_regions, self.name)
            return {
                region: self.make(factors, fit_seconds, options, parts).fit(calibration.latents)
                for region, parts in named.items()
            }
        editor = self.make(factors, fit_seconds, options, None)
        if Need.REGION_FIT in self.needs:
            masks = {
                region: calibration.masks(region, settings.choose.dilation) for region in settings.searched_regions
            }
            return editor.fit_regions(calibration.latents, masks)
        return dict.fromkeys(settings.searched_regions, editor.fit(calibration.latents))


def _panda(name: str) -> Make:
    return lambda factors, seconds, options, parts: PandAEditor(factors, seconds, parts, name)


def _baseline(cls: type[Baseline]) -> Method:
    def make(factors: Factors, seconds: float, options: dict[str, Any], parts: list[int] | None) -> Editor:
        try:
            return cls(factors.generator, **options)
        except TypeError as error:
            raise ConfigError(f"bad options {options} for '{cls.name}': {error}") from None

    return Method(cls.name, make, cls.needs)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(PandAEditor.name, _panda(PandAEditor.name)),
        *(_baseline(cls) for cls in BASELINES.values()),
        Method(NAMED, _panda(NAMED), frozenset({Need.NAMED_PARTS})),
    )
}


def unmet(need: Need, factors: Factors) -> str | None:
    """Why ``factors`` (its generator, its labels) cannot meet ``need``; ``None`` when it can."""
    if need is Need.STYLE_CHANNELS and not factors.generator.style_layers():
        return f"generator '{factors.name}' has no style channels"
    if need is Need.NAMED_PARTS and not factors.labels:
        return "the run's parts are not named (python evaluate.py task=name run=...)"
    return None


def build_editors(
    factors: Factors, calibration: Faces, settings: ROIRSettings, fit_seconds: float
) -> dict[str, dict[str, Editor]]:
    """method -> region -> editor, for each of ``settings.methods`` that applies (the others are skipped with a
    warning); ``fit_seconds``: the training time of ``factors`` (PandA's time to find its directions)."""
    editors: dict[str, dict[str, Editor]] = {}
    for name in settings.methods:
        if name not in METHODS:
            raise ConfigError(f"unknown method '{name}'; methods: {', '.join(METHODS)}")
        method = METHODS[name]
        reasons = [reason for need in Need if need in method.needs and (reason := unmet(need, factors))]
        if reasons:
            log.warning("%s skipped: %s", name, "; ".join(reasons))
            continue
        by_region = method.editors(factors, calibration, settings, fit_seconds)
        if by_region:
            editors[name] = by_region
            log.info("%s: directions found in %.1f s", name, direction_seconds(by_region))
    if not editors:
        raise ConfigError(f"none of the methods {list(settings.methods)} applies to generator '{factors.name}'")
    return editors


def named_parts(factors: Factors, regions: Sequence[str], method: str = NAMED) -> dict[str, list[int]]:
    """The parts named after each region (``mouth``, ``mouth_2``, ... by :mod:`panda.uses.face_regions`), for the
    regions that have any; ``method`` warns of each region without."""
    found = {}
    for region in regions:
        parts = [k for k, label in enumerate(factors.labels or []) if is_named(label, region)]
        if parts:
            found[region] = parts
        else:
            labels = ", ".join(factors.labels or [])
            log.warning("%s: no part is named after the %s (labels: %s)", method, region, labels)
    return found


def direction_seconds(editors: Mapping[str, Editor]) -> float:
    """The time a method took to find its directions: the seconds of its editors' distinct sources (PandA's editors,
    restricted to named parts or not, share one training run: counted once)."""
    return sum({editor.source: editor.seconds for editor in editors.values()}.values())


def unique(editors: Mapping[str, Editor]) -> list[Editor]:
    """The distinct editors of a region -> editor mapping (shared ones once)."""
    return list({id(e): e for e in editors.values()}.values())
