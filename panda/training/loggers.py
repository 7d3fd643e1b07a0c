"""Loggers of a training run: a CSV log that a resumed run continues, a W&B logger that degrades gracefully instead
of failing a run, and what a run and a sweep send to W&B (docs/dashboards.md)."""

from __future__ import annotations

import csv
import logging
import re
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from panda.base.dashboards import wandb_offline
from panda.base.multirun import sweep_group
from panda.training.callbacks import FitRecord

log = logging.getLogger(__name__)


class FlatWandbLogger(WandbLogger):
    """A :class:`WandbLogger` whose config keys are the dotted paths of the run's config (``gen.name``,
    ``rank.parts``, ``model.solver._target_``): W&B's tables and panels group runs by them."""

    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        super().log_hyperparams(flatten(vars(params) if isinstance(params, Namespace) else params))


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of nested mappings under their dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat |= flatten(value, f"{name}.") if isinstance(value, Mapping) and value else {name: value}
    return flat


def wandb_logger(offline: bool | None = None, group: str | None = None, **kwargs: Any) -> WandbLogger:
    """A :class:`FlatWandbLogger`, offline when asked or when :func:`wandb_offline` decides so; ``group="auto"``:
    the sweep's group inside a multirun (:func:`panda.base.multirun.sweep_group`), none in a single run. A W&B run still
    open in this process (an earlier job of a multirun that failed) is finished first, as failed."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1)
    if group == "auto":
        group = sweep_group()
    return FlatWandbLogger(offline=wandb_offline(offline), group=group, **kwargs)


class WandbSummary(pl.Callback):
    """Once every ``on_fit_end`` hook has run (``teardown``), puts the run's final metrics
    (:meth:`FitRecord.metrics`, as in ``metrics.json``) into the summary of each W&B logger's run, and ends that run
    (the next job of a multirun in this process starts its own)."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if stage != "fit" or not loggers or not trainer.is_global_zero:
            return
        metrics = FitRecord.of(trainer).metrics(trainer)
        for logger in loggers:
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()


class ResumableCSVLogger(CSVLogger):
    """Lightning's :class:`CSVLogger`, whose ``metrics.csv`` a resumed run continues: Lightning's writer starts the
    file afresh, so the rows it held before ``resume_step`` are read when the logger is built and logged again, as
    they were logged, when the writer starts.

    Args:
        resume_step: the step of the checkpoint this run resumes from (``None``: a fresh start), given by
            :func:`panda.training.fit.train`.
        **kwargs: :class:`CSVLogger`'s.
    """

    def __init__(self, resume_step: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        self.earlier: list[dict[str, str]] = []
        if resume_step is not None and rank_zero_only.rank == 0 and path.is_file():
            with path.open(newline="") as handle:
                self.earlier = [row for row in csv.DictReader(handle) if int(row["step"]) < resume_step]

    @property
    def experiment(self) -> Any:
        writer = super().experiment
        rows, self.earlier = self.earlier, []
        for row in rows:
            writer.log_metrics({k: _number(v) for k, v in row.items() if k != "step" and v != ""}, int(row["step"]))
        if rows:
            writer.save()
        return writer


def _number(text: str) -> int | float:
    """A logged value as it was logged: an integer or a float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def log_sweep_summary(
    sweep_dir: Path, logger: Mapping[str, Any], files: Sequence[Path], rows: list[dict[str, Any]], hydra: Any
) -> None:
    """The sweep's summary as the W&B table ``summary`` and its files (``summary.csv``, ``summary.md``) as the
    artifact ``summary-<sweep>``, in a run of their own (job type ``sweep-summary``) in the jobs' group.
    ``logger``: the sweep's ``logger.wandb`` config (project, entity, group, offline); ``hydra``: its Hydra config."""
    import wandb

    mode = "offline" if wandb_offline(logger.get("offline")) else "online"
    name = sweep_group(hydra)
    group = name if logger.get("group") == "auto" else logger.get("group")
    with wandb.init(
        project=logger.get("project"),
        entity=logger.get("entity"),
        group=group,
        name=f"{name}-summary",
        job_type="sweep-summary",
        dir=str(sweep_dir),
        mode=mode,
    ) as run:
        columns = list(rows[0]) if rows else []
        data = [[row[c] for c in columns] for row in rows]  # a failed job's cells are empty strings
        run.log({"summary": wandb.Table(columns=columns, data=data, allow_mixed_types=True)})
        artifact = wandb.Artifact("summary-" + re.sub(r"[^\w.-]", "_", name), type="sweep-summary")
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
