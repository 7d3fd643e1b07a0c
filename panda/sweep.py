"""A Hydra callback that tabulates a multirun: one row per job, as CSV and markdown."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from panda.io import METRICS_FILE, atomic_write

log = logging.getLogger(__name__)

COLUMNS = ["job", "overrides", "generator", "layer", "parts", "appearances", "steps", "val_rel_error", "fit_seconds"]


def summarize(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every job's ``metrics.json`` under ``sweep_dir``; writes ``summary.csv`` and ``summary.md``."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for path in sorted(sweep_dir.glob(f"*/{METRICS_FILE}"), key=lambda p: _job_key(p.parent.name)):
        metrics = json.loads(path.read_text())
        rows.append(
            {
                **{k: metrics.get(k, "") for k in COLUMNS},
                "job": path.parent.name,
                "overrides": " ".join(metrics.get("overrides", [])),
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(sweep_dir / "summary.csv", buffer.getvalue().encode())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if c == "val_rel_error" and row[c] != "" else str(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write(sweep_dir / "summary.md", ("\n".join(lines) + "\n").encode())
    return rows


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class SweepSummary(Callback):
    """Writes ``summary.csv`` / ``summary.md`` into the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = summarize(config.hydra.sweep.dir)
        log.info("sweep summary of %d jobs in %s/summary.md", len(rows), config.hydra.sweep.dir)
