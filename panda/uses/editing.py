"""Local image editing and context-aware removal with learnt parts and appearances.

An edit is a list of (part ``k``, appearance ``j``, strength ``alpha``) triples; sample ``i`` is
edited by resuming the generator from the factors' layer with ``Z_i + sum alpha a_j p_k^T``
(``p_k`` min-max rescaled to ``[0, 1]``). The features of a batch are computed once; every edit
and every strength only re-runs the generator after the layer. Named edits live in a YAML "edit
zoo" per generator (``conf/edits/<generator>.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from panda.base.config import finite_number
from panda.base.errors import ConfigError
from panda.base.factors_file import CANONICAL, FORM
from panda.base.resources import config_dir
from panda.generators.base import ResumeState
from panda.method.factorization import edit_delta
from panda.uses.factors import Factors

ZOO_DIR = config_dir() / "edits"


@dataclass(frozen=True)
class Edit:
    """One triple of a local edit: add ``alpha * a_appearance p_part^T`` to the features (``part``: an index
    or the part's label)."""

    part: int | str
    appearance: int
    alpha: float


def parse_edits(items: Sequence[Mapping[str, Any]]) -> list[Edit]:
    """Edits from ``[{part, appearance, alpha}, ...]`` (as written in configs and the zoo; a part may be named)."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigError(f"edits must be a list of {{part, appearance, alpha}} triples; got {items!r}")
    edits = []
    for item in items:
        if not isinstance(item, Mapping) or set(item) != {"part", "appearance", "alpha"}:
            raise ConfigError(f"an edit must be a mapping with keys part, appearance, alpha; got {item!r}")
        part, appearance = item["part"], item["appearance"]
        if isinstance(part, bool) or not isinstance(part, (int, str)) or part == "":
            raise ConfigError(f"an edit's part must be an index or a part's name; got {part!r}")
        if isinstance(appearance, bool) or not isinstance(appearance, int):
            raise ConfigError(f"an edit's appearance must be an index; got {appearance!r}")
        alpha = finite_number("an edit's alpha", item["alpha"])
        edits.append(Edit(part=part, appearance=appearance, alpha=alpha))
    if not edits:
        raise ConfigError("no edit given: pass at least one {part, appearance, alpha} triple or a named edit")
    return edits


def edit_offset(factors: Factors, edits: Sequence[Edit]) -> Tensor:
    """The feature offset ``sum alpha a_j p_k^T`` ``[C, H, W]`` of ``edits`` (indices checked)."""
    parts = torch.tensor([factors.check_index(e.part, "part") for e in edits])
    appearances = torch.tensor([factors.check_index(e.appearance, "appearance") for e in edits])
    alphas = torch.tensor([e.alpha for e in edits])
    offset = edit_delta(factors.A, factors.part_maps(), parts, appearances, alphas)
    if not torch.isfinite(offset).all():
        raise ConfigError(f"edit strengths {[e.alpha for e in edits]} overflow float32 features; use smaller alphas")
    return offset


def edited_images(
    factors: Factors, features: Tensor, state: ResumeState, offset: Tensor, scales: Sequence[float] = (1.0,)
) -> Tensor:
    """Images ``[len(scales), B, 3, H, W]`` resumed from ``features + t * offset`` for each ``t`` in ``scales``.

    ``features`` ``[B, C, H, W]`` and their ``state`` come from :meth:`Factors.features_and_state`, once per batch
    by the caller; only the generator after the layer runs here, once per strength on the whole batch (so
    ``t = 0`` gives the original images bit for bit, as the batch is the same as the unedited forward pass's).
    """
    frames = []
    for t in scales:
        edited = features + t * offset.to(features)
        if not torch.isfinite(edited).all():
            raise ConfigError(f"the edit at x{t:g} its strength overflows float32 features; use a smaller alpha")
        frames.append(factors.images(edited, state))
        if not torch.isfinite(frames[-1]).all():
            raise ConfigError(f"the images are not finite at x{t:g} the edit's strength; use smaller alphas")
    return torch.stack(frames)


def load_zoo(generator: str, zoo_dir: str | Path | None = None) -> dict[str, Any]:
    """The edit zoo ``<zoo_dir>/<generator>.yaml`` (default directory: ``conf/edits``)."""
    path = Path(zoo_dir or ZOO_DIR) / f"{generator}.yaml"
    if not path.is_file():
        raise ConfigError(f"no edit zoo for generator '{generator}': expected {path}")
    try:
        zoo = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not a readable edit zoo ({type(error).__name__}); fix or remove it") from None
    if not isinstance(zoo, dict) or not isinstance(zoo.get("edits"), dict):
        raise ConfigError(f"{path} is not an edit zoo: it needs an 'edits' mapping of name -> list of triples")
    if not isinstance(zoo.get("ranks", {}), dict) or not isinstance(zoo.get("layer", ""), str):
        raise ConfigError(f"{path} is not an edit zoo: 'layer' must be a module path and 'ranks' a mapping")
    zoo["path"] = str(path)
    return zoo


def named_edit(factors: Factors, name: str, zoo_dir: str | Path | None = None) -> list[Edit]:
    """The zoo's edit ``name`` for ``factors``'s generator; the run must match the layer and ranks it was found at."""
    zoo = load_zoo(factors.name, zoo_dir)
    if name not in zoo["edits"]:
        raise ConfigError(f"no edit named '{name}' in {zoo['path']}; known edits: {', '.join(sorted(zoo['edits']))}")
    found = {"layer": factors.layer, "parts": factors.parts, "appearances": factors.appearances}
    expected = {"layer": zoo.get("layer"), **zoo.get("ranks", {})}
    mismatch = [f"{key} {expected[key]} (run has {found[key]})" for key in found if expected.get(key) != found[key]]
    if mismatch:
        raise ConfigError(f"edit '{name}' in {zoo['path']} was found for factors with {', '.join(mismatch)}")
    if zoo.get(FORM) == CANONICAL and not factors.canonical:
        raise ConfigError(
            f"edit '{name}' in {zoo['path']} names appearances in their canonical form (numbered and signed alike "
            "on every machine), and this run's factors.pt was written before panda stored that form: train it again"
        )
    return parse_edits(zoo["edits"][name])


def removal(part: int, background: int, alpha: float) -> list[Edit]:
    """Context-aware removal: paint the ``background`` appearance over ``part`` with strength ``alpha``."""
    return [Edit(part=part, appearance=background, alpha=alpha)]
