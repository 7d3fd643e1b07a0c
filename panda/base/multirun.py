"""Whether this process runs a job of a Hydra multirun, and the multirun's name (without importing Lightning)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(hydra: DictConfig | None = None) -> str | None:
    """The name of a multirun, e.g. W&B's group of its jobs: its sweep directory, relative to the working directory
    when inside it. ``hydra``: the sweep's Hydra config (default: this job's); None outside a multirun."""
    if hydra is None:
        if not in_multirun():
            return None
        hydra = HydraConfig.get()
    sweep_dir, cwd = Path(str(hydra.sweep.dir)).absolute(), Path(str(hydra.runtime.cwd)).absolute()
    return (sweep_dir.relative_to(cwd) if sweep_dir.is_relative_to(cwd) else sweep_dir).as_posix()
