"""Multiruns that finish: every job records how it ended, and a Hydra callback tabulates the sweep.

Inside a multirun each job runs through :func:`sweep_job`, which writes ``status.json`` into the job
directory (``running``, then ``completed`` or ``failed`` with the error line) and returns instead of
raising, so one failing job never stops the others. The launchers of ``conf/hydra/launcher/``
(``hydra_plugins.panda_launcher``) record jobs that SLURM ended (``cancelled``, ``timed out``,
``failed``) the same way. When every job has ended, :class:`SweepSummary` writes ``summary.csv`` and
``summary.md`` and exits with code 1 if any job did not complete.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from panda.base.errors import Interrupted, as_bad_input
from panda.base.files import METRICS_FILE, atomic_write, save_json

T = TypeVar("T")
log = logging.getLogger(__name__)

STATUS_FILE, SUMMARY_CSV, SUMMARY_MD = "status.json", "summary.csv", "summary.md"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "completed", "failed", "cancelled", "timed out"
INTERRUPTED = "interrupted"  # stopped by a signal; a requeued or re-run job resumes from its checkpoint
COLUMNS = [  # the roir/<region> columns of the jobs that measured ROIR (callbacks=roir_final) follow fit_seconds
    "job",
    "overrides",
    "status",
    "generator",
    "layer",
    "solver",
    "lr",
    "parts",
    "appearances",
    "steps",
    "val_rel_error",
    "fit_seconds",
    "labels",
    "error",
]
ROIR_PREFIX = "roir/"
SWEEP_FILE = ".sweep"  # in the sweep directory: the id of the sweep running there, recorded by each of its jobs


def record(job_dir: str | Path, status: str, overrides: Sequence[str], error: str = "") -> None:
    """Write the job's ``status.json`` atomically, with the id of the sweep running in its sweep directory."""
    marker = Path(job_dir).parent / SWEEP_FILE
    sweep = marker.read_text().strip() if marker.is_file() else None
    state = {"status": status, "overrides": list(overrides), "error": error, "sweep": sweep}
    save_json(state, Path(job_dir) / STATUS_FILE)


def read_status(job_dir: str | Path) -> dict[str, Any] | None:
    """The job's ``status.json``, or None if it has none."""
    path = Path(job_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_job(task: Callable[[], T]) -> T | None:
    """Run ``task`` as a job of a multirun and record how it ended; returns None if it failed.

    A job whose directory records it completed with the same overrides is not run again (a re-run of
    the same sweep finishes the other jobs; training resumes from the job's last checkpoint). An error
    is logged (a :class:`PandaError` as one line, anything else with its traceback) and recorded.
    """
    from pytorch_lightning.utilities import rank_zero_only  # imported when needed: the CLI starts faster
    from submitit.core.utils import UncompletedJobError

    hydra = HydraConfig.get()
    job_dir, overrides = Path(hydra.runtime.output_dir), list(hydra.overrides.task)
    previous = read_status(job_dir)

    def note(status: str, error: str = "") -> None:  # the first process of a multi-process (DDP) job writes
        if rank_zero_only.rank == 0:
            record(job_dir, status, overrides, error)

    if previous is not None and _settings(previous["overrides"]) != _settings(overrides):
        error = (
            f"{job_dir} holds a job of another sweep ({' '.join(previous['overrides'])}): a sweep directory holds one "
            "sweep; pass another hydra.sweep.dir"
        )
        log.error("error: %s", error)
        note(FAILED, error)
        return None
    if previous is not None and previous["status"] == COMPLETED and previous["overrides"] == overrides:
        log.info("job %s already completed (%s): not run again", hydra.job.num, job_dir / STATUS_FILE)
        note(COMPLETED)  # recorded for this sweep too (its summary lists this sweep's jobs)
        return None
    note("running")
    try:
        result = task()
    except Interrupted as stop:  # a signal: SLURM's before a requeue (the job runs again), Ctrl-C, SIGTERM
        log.error("%s", stop)
        note(INTERRUPTED, str(stop))
        sys.exit(stop.exit_code)  # as a single run exits; the requeued run records how it ends
    except UncompletedJobError as error:  # submitit's end of a job that reached its time limit too often
        log.error("%s", error)
        note(TIMED_OUT, str(error))
        return None
    except Exception as error:
        problem = as_bad_input(error)
        if problem is None:
            log.exception("job %s failed", hydra.job.num)
        else:
            log.error("error: %s", problem)
        note(FAILED, f"{type(error).__name__}: {error}" if problem is None else str(problem))
        return None
    note(COMPLETED)
    return result


def _settings(overrides: Sequence[str]) -> list[str]:
    """The overrides that change a job's results: a longer ``trainer.max_steps``, a logger, ... continue the same
    job (:func:`panda.training.checkpoints.may_differ`)."""
    from panda.training.checkpoints import may_differ  # imported here, as Lightning is: after Hydra's logging

    return [o for o in overrides if not may_differ(o.split("=", 1)[0].lstrip("+~"))]


def summarize(sweep_dir: str | Path, sweep: str | None = None) -> list[dict[str, Any]]:
    """One row per job under ``sweep_dir`` (of the sweep with id ``sweep`` alone, when given), with its
    ``metrics.json`` when that is the same job's (the same overrides): the :data:`COLUMNS` and the ``roir/<region>``
    of any job; writes ``summary.csv`` and ``summary.md``."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for path in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"), key=lambda p: _job_key(p.parent.name)):
        status, metrics_file = json.loads(path.read_text()), path.parent / METRICS_FILE
        if sweep is not None and status.get("sweep") != sweep:
            continue  # a job of an earlier sweep in this directory
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        same = metrics.get("overrides", status["overrides"]) == status["overrides"]
        jobs.append((path.parent, status, metrics if same else {}))
    regions = list(dict.fromkeys(k for _, _, metrics in jobs for k in metrics if k.startswith(ROIR_PREFIX)))
    at = COLUMNS.index("fit_seconds") + 1
    columns = [*COLUMNS[:at], *regions, *COLUMNS[at:]]
    rows = []
    for job_dir, status, metrics in jobs:
        rows.append(
            {
                **{k: _value(metrics.get(k)) for k in columns},
                "job": job_dir.name,
                "overrides": " ".join(status["overrides"]),
                "status": status["status"],
                "error": status["error"],
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(sweep_dir / SUMMARY_CSV, buffer.getvalue().encode())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(c, row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write(sweep_dir / SUMMARY_MD, ("\n".join(lines) + "\n").encode())
    return rows


def _value(value: Any) -> Any:
    """A metric as a summary cell: ``""`` when missing, part labels (a list, or part -> name) on one line."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return value


def _cell(column: str, value: Any) -> str:
    if (column == "val_rel_error" or column.startswith(ROIR_PREFIX)) and value != "":
        return f"{value:.4f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class SweepSummary(Callback):
    """Writes ``summary.csv`` / ``summary.md`` into the sweep directory when a multirun ends, and logs them to W&B
    when the sweep logs there (``logger=wandb``: :func:`panda.training.loggers.log_sweep_summary`); then exits
    with code 1 if any job did not complete."""

    sweep: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep = uuid.uuid4().hex
        atomic_write(Path(config.hydra.sweep.dir) / SWEEP_FILE, self.sweep.encode())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize(sweep_dir, self.sweep)
        log.info("sweep summary of %d jobs in %s", len(rows), sweep_dir / SUMMARY_MD)
        wandb = config.get("logger", {}).get("wandb")
        if wandb is not None:
            # imported here: Lightning, imported before Hydra sets up logging, would keep its log lines out of train.log
            from panda.training.loggers import log_sweep_summary

            log_sweep_summary(sweep_dir, wandb, [sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD], rows, config.hydra)
        unfinished = [row for row in rows if row["status"] != COMPLETED]
        if unfinished:
            jobs = ", ".join(f"{row['job']} ({row['status']})" for row in unfinished)
            log.error("%d of %d jobs did not complete: %s (%s/summary.md)", len(unfinished), len(rows), jobs, sweep_dir)
            sys.exit(1)
