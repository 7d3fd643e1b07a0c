"""The tasks of ``evaluate.py`` (``task=<name>``).

Module ``panda.tasks.<name>`` registers one with :func:`task`, and ``conf/task/<name>.yaml`` selects it and holds
its settings (``eval.*``): adding a task is that file and that config.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from panda.base.config import integer
from panda.base.errors import ConfigError
from panda.base.files import save_json
from panda.uses.factors import Factors, open_run

log = logging.getLogger(__name__)
Task = Callable[[DictConfig, Factors, Path], dict[str, Any]]
TASKS: dict[str, Task] = {}
NOT_TASKS = ("common", "registry")


def task(function: Task) -> Task:
    """Register ``function(cfg, factors, out) -> results`` as the task named after its module."""
    TASKS[function.__module__.rsplit(".", 1)[-1]] = function
    return function


def task_names() -> list[str]:
    """The tasks ``evaluate.py`` knows: the modules of this package."""
    package = importlib.import_module(__package__)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in NOT_TASKS)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task`` on the factors of ``cfg.run``; writes ``evaluate.json`` and the task's images."""
    if cfg.task not in task_names():
        raise ConfigError(f"unknown task '{cfg.task}'; known tasks: {', '.join(task_names())}")
    integer("seed", cfg.seed)
    if cfg.run is None:
        raise ConfigError("no run given: pass run=<a training run directory holding factors.pt>")
    factors = open_run(cfg.run, cfg.generator, cfg.layer, cfg.trusted_modules)
    out = Path(cfg.output_dir)
    importlib.import_module(f"{__package__}.{cfg.task}")
    result = TASKS[cfg.task](cfg, factors, out)
    if rank_zero_only.rank != 0:  # another process of a distributed task: rank 0 writes
        return result
    result = {"task": cfg.task, "run": str(cfg.run), "generator": factors.name, "layer": factors.layer, **result}
    result["files"] = {key: str(path) for key, path in result["files"].items()}
    save_json(result, out / "evaluate.json")
    log.info("%s: results in %s", cfg.task, out)
    return result
