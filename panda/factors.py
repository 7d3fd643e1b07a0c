"""The factors file ``factors.pt``, written by training and read by the uses of the factors.

It holds plain tensors and metadata only, so ``torch.load(path, weights_only=True)`` reads it
without panda: ``A`` ``[C, R_C]``, ``P`` ``[S, R_S]``, ``generator``, ``layer``,
``feature_shape`` ``[C, H, W]``, ``ranks`` and ``config`` (the resolved training config as YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from panda.errors import ConfigError
from panda.io import save_torch

FACTORS_FILE = "factors.pt"
REQUIRED = ("A", "P", "generator", "layer", "feature_shape")  # what a reader needs; training also writes ranks, config


def save_factors(model: pl.LightningModule, generator: str, layer: str, cfg: DictConfig, path: str | Path) -> Path:
    """Write the factors of ``model`` (learnt at ``layer`` of ``generator`` as ``cfg`` says) to ``path``."""
    record = {
        "A": model.A.detach().cpu().clone(),
        "P": model.P.detach().cpu().clone(),
        "generator": generator,
        "layer": layer,
        "feature_shape": list(model.hparams.feature_shape),
        "ranks": {"parts": model.hparams.parts, "appearances": model.hparams.appearances},
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }
    return save_torch(record, path)


def load_factors(path: str | Path) -> dict[str, Any]:
    """Read a ``factors.pt`` (a file, or the run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / FACTORS_FILE
    if not path.is_file():
        raise ConfigError(f"no factors file at {path}: pass a training run directory holding {FACTORS_FILE}")
    factors = torch.load(path, map_location="cpu", weights_only=True)
    missing = set(REQUIRED) - set(factors)
    if missing:
        raise ConfigError(f"{path} is not a panda factors file (missing {sorted(missing)})")
    return factors
