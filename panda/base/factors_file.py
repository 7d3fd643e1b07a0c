"""The factors file ``factors.pt``, written by training and read by the uses of the factors.

It holds plain tensors and metadata only, so ``torch.load(path, weights_only=True)`` reads it
without panda: ``A`` ``[C, R_C]``, ``P`` ``[S, R_S]``, ``generator``, ``layer``,
``feature_shape`` ``[C, H, W]``, ``ranks``, ``config`` (the resolved training config as YAML),
optionally ``labels`` (each part's distinct name) and ``label_scores`` (its score, from
:mod:`panda.uses.face_regions`; files without them load as before), ``appearance_form: "canonical"`` (``A``'s
columns are in the canonical numbering and signs of :func:`panda.method.factorization.canonical_order`; files
written before panda stored it lack it) and ``sha256``, the checksum of all of them (:func:`checksum`), verified on
reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from panda.base.errors import ConfigError, DivergenceError
from panda.base.files import load_plain, save_torch

log = logging.getLogger(__name__)

FACTORS_FILE = "factors.pt"
REQUIRED = ("A", "P", "generator", "layer", "feature_shape")  # what a reader needs
METADATA = ("generator", "layer", "feature_shape", "ranks", "config")  # covered by the checksum with A and P
LABELS = ("labels", "label_scores")  # optional, covered by the checksum when present
FORM = "appearance_form"  # optional ("canonical"), covered by the checksum when present
CANONICAL = "canonical"
CHECKSUM = "sha256"
MAX_ENTRY = 1e3  # A's columns are orthonormal and P's near unit norm: far larger entries are no PandA factors


def checksum(record: dict[str, Any]) -> str:
    """SHA-256 of the record's metadata (as sorted JSON) and of ``A`` and ``P`` (dtype, shape, bytes)."""
    metadata = {k: record.get(k) for k in METADATA} | {k: record[k] for k in (*LABELS, FORM) if k in record}
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in ("A", "P"):
        tensor = record[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_factors(
    model: pl.LightningModule,
    generator: str,
    layer: str,
    cfg: DictConfig,
    path: str | Path,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
) -> Path:
    """Write the factors of ``model`` (learnt at ``layer`` of ``generator`` as ``cfg`` says; its
    ``exported_appearances()``, in their canonical form, and ``P``) to ``path``, with the parts' ``labels`` and their
    ``scores`` when given."""
    record = {
        "A": model.exported_appearances().cpu(),
        "P": model.P.detach().cpu().clone(),
        "generator": generator,
        "layer": layer,
        "feature_shape": list(model.hparams.feature_shape),
        "ranks": {"parts": model.hparams.parts, "appearances": model.hparams.appearances},
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        FORM: CANONICAL,
    }
    if labels is not None:
        record |= _labelled(labels, scores)
    problem = _problem(record)
    if problem:  # never written: training stops on non-finite factors (panda.training.callbacks.StopOnDivergence)
        raise DivergenceError(f"the factors cannot be written to {path}: {problem}")
    return save_torch({**record, CHECKSUM: checksum(record)}, path)


def save_labels(path: str | Path, labels: Sequence[str], scores: Sequence[float] | None = None) -> Path:
    """Store the parts' ``labels`` (and their ``scores``, when given) in an existing ``factors.pt`` (or run
    directory), replacing any it held; the file is checked on reading and its checksum renewed."""
    path = Path(path)
    path = path / FACTORS_FILE if path.is_dir() else path
    record = {k: v for k, v in load_factors(path).items() if k not in (CHECKSUM, *LABELS)}
    record |= _labelled(labels, scores)
    problem = _problem(record)
    if problem:
        raise ConfigError(f"labels cannot be stored in {path}: {problem}")
    return save_torch({**record, CHECKSUM: checksum(record)}, path)


def _labelled(labels: Sequence[str], scores: Sequence[float] | None) -> dict[str, Any]:
    """The record's entries of the parts' labels and scores (plain lists)."""
    found = {"labels": list(labels)}
    return found if scores is None else found | {"label_scores": [float(s) for s in scores]}


def load_factors(path: str | Path) -> dict[str, Any]:
    """Read and check a ``factors.pt`` (a file, or the run directory holding one).

    Raises:
        ConfigError: no such file, or one that is damaged, truncated, not a factors file, of
            factors whose shapes or types do not fit, or whose checksum does not match. A file
            without a checksum (written before panda stored one) loads with a warning.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FACTORS_FILE
    if not path.is_file():
        raise ConfigError(f"no factors file at {path}: pass a training run directory holding {FACTORS_FILE}")
    factors = load_plain(path, "factors file")
    if not isinstance(factors, dict):
        raise ConfigError(f"{path} is not a panda factors file (it holds a {type(factors).__name__})")
    missing = set(REQUIRED) - set(factors)
    if missing:
        raise ConfigError(f"{path} is not a panda factors file (missing {sorted(missing)})")
    problem = _problem(factors)
    if problem:
        raise ConfigError(f"{path} is not a usable factors file: {problem}")
    if CHECKSUM not in factors:
        log.warning("%s has no checksum (written by an older panda): its integrity is not checked", path)
    elif factors[CHECKSUM] != checksum(factors):
        raise ConfigError(f"{path} is damaged: its checksum does not match its contents; train again or restore it")
    return factors


def _problem(factors: dict[str, Any]) -> str:
    """What makes ``factors`` unusable (types, shapes, values), or ``''``."""
    for key in ("generator", "layer"):
        if not isinstance(factors[key], str):
            return f"{key} is a {type(factors[key]).__name__}, not a string"
    shape = factors["feature_shape"]
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_positive_int(d) for d in shape)):
        return f"feature_shape {shape!r} is not [C, H, W]"
    channels, height, width = shape
    needs = {"A": (channels, "R_C"), "P": (height * width, "R_S")}
    for name, (rows, rank) in needs.items():
        tensor: Tensor = factors[name]
        if isinstance(tensor, Tensor) and tensor.layout != torch.strided:
            return f"{name} is a {tensor.layout} tensor, not a dense one"
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            kind = f"a tensor of {tensor.dtype}" if isinstance(tensor, Tensor) else f"a {type(tensor).__name__}"
            return f"{name} is {kind}, not a floating-point tensor"
        if tensor.dim() != 2 or tensor.shape[0] != rows or not 1 <= tensor.shape[1] <= rows:
            return f"{name} has shape {list(tensor.shape)}, but features {list(shape)} need [{rows}, {rank}]"
        if not torch.isfinite(tensor).all():
            return f"{name} holds NaN or infinite values"
        if tensor.abs().max() > MAX_ENTRY:
            return f"{name}'s entries reach {float(tensor.abs().max()):.3g}: PandA's columns have norms near 1"
    if (factors["P"] < 0).any() or not factors["P"].any():
        return "P must be non-negative with at least one non-zero entry"
    if factors.get(FORM, CANONICAL) != CANONICAL:
        return f"{FORM} {factors[FORM]!r} is unknown (panda writes {CANONICAL!r})"
    ranks = factors.get("ranks")
    if ranks is not None and ranks != {"parts": factors["P"].shape[1], "appearances": factors["A"].shape[1]}:
        return f"ranks {ranks} do not match A {list(factors['A'].shape)} and P {list(factors['P'].shape)}"
    return _labels_problem(factors)


def _labels_problem(factors: dict[str, Any]) -> str:
    """What makes the optional ``labels`` and ``label_scores`` unusable, or ``''``."""
    if not any(key in factors for key in LABELS):
        return ""
    parts = factors["P"].shape[1]
    labels, scores = factors.get("labels"), factors.get("label_scores")
    if not isinstance(labels, list) or len(labels) != parts or not all(isinstance(s, str) and s for s in labels):
        return f"labels must be a list of {parts} strings, one per part"
    if len(set(labels)) != parts or any(label.isdigit() for label in labels):
        return f"labels {labels} must be distinct names, none of them a number"
    if scores is not None and (
        not isinstance(scores, list) or len(scores) != parts or not all(_number(s) for s in scores)
    ):
        return f"label_scores must be a list of {parts} finite numbers, one per part"
    return ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
