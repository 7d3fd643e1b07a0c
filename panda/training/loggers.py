"""Logger factories that degrade gracefully instead of failing a run, and what a run and a sweep send to W&B
(docs/dashboards.md)."""

from __future__ import annotations

import logging
import netrc
import os
import re
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger

from panda.base.multirun import sweep_group

log = logging.getLogger(__name__)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline(offline: bool | None = None) -> bool:
    """Whether W&B should log offline: as asked, else when ``WANDB_MODE=offline`` or no
    ``WANDB_API_KEY`` and no W&B entry in ``~/.netrc`` (upload later with ``wandb sync``)."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in {"offline", "dryrun"} or not _has_wandb_credentials()
        if offline:
            log.warning("W&B: no credentials found, logging offline; upload later with `wandb sync <run dir>/wandb`")
    return offline


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


def finish_wandb(loggers: Sequence[Logger], summary: Mapping[str, Any]) -> None:
    """Put ``summary`` (a run's final metrics) into the summary of each W&B logger's run, and end that run (the next
    job of a multirun in this process starts its own)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(summary))
            logger.experiment.finish()


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


def log_results_to_wandb(
    directory: Path, project: str, name: str, config: dict[str, Any], rows: list[dict[str, Any]], images: list[Path]
) -> None:
    """One W&B run (offline without credentials) holding a results table and image files."""
    import wandb

    mode = "offline" if wandb_offline() else "online"
    with wandb.init(project=project, name=name, dir=str(directory), config=config, mode=mode) as run:
        columns = list(rows[0]) if rows else []
        run.log(
            {
                "results": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows]),
                **{f"images/{path.stem}": wandb.Image(str(path)) for path in images},
            }
        )
