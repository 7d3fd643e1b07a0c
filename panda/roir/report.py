"""What the benchmark reports: the CSV rows, the markdown table, and the files and figures of its results."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panda.base.dashboards import log_results_to_wandb
from panda.base.files import atomic_write
from panda.roir.measure import Examples, Result
from panda.roir.search import Choice
from panda.uses.visualize import image_grid, mask_overlay, to_uint8

ROIR_CSV, ROIR_MD = "roir.csv", "roir.md"


@dataclass
class Results:
    """What :func:`panda.roir.benchmark.benchmark` found.

    ``rows``: one per (method, region) (the columns of :func:`row`); ``seconds``: each method's time to find its
    directions, in the order of the methods measured; ``measured``: the results by (method, region), with their
    worst faces; ``skipped``: test samples without a face; ``examples``: the first test faces and their edits
    (this process's). In a distributed run, every process has the rows, and the rest of its own faces.
    """

    regions: list[str]
    above: float
    choices: dict[tuple[str, str], Choice]
    measured: dict[tuple[str, str], Result]
    rows: list[dict[str, Any]]
    seconds: dict[str, float]
    skipped: int
    calibration_faces: int
    examples: Examples

    @property
    def table(self) -> str:
        """The markdown table of :func:`table`."""
        return table(self.rows, self.regions, self.seconds, self.above)


def above_key(above: float) -> str:
    """The row's column counting the faces whose ROIR exceeds ``above``."""
    return f"faces_above_{above:g}"


def row(result: Result, skipped: int) -> dict[str, Any]:
    """The table's row of ``result``; ``skipped``: test samples without a face (of all processes). Summed over the
    processes of a distributed run (every process calls it, in turn)."""
    values = {key: float(value) for key, value in result.metric.compute().items()}
    return {
        "method": result.choice.method,
        "region": result.choice.region,
        "roir_mean": round(values["mean"], 4),
        "roir_std": round(values["std"], 4),
        "roir_median": round(values["median"], 4),
        "roir_q1": round(values["q1"], 4),
        "roir_q3": round(values["q3"], 4),
        above_key(result.metric.above): int(values["above"]),
        "images": int(values["count"]),
        "unchanged": int(values["unchanged"]),
        "skipped": skipped,
        "inside_change": round(float(result.change.compute()), 4),
        "direction": result.choice.label,
        "scale": round(result.choice.scale, 5),
        "calibration_roir": round(result.choice.calibration_roir, 4),
        "find_seconds": round(result.seconds, 2),
    }


def table(rows: Sequence[dict[str, Any]], regions: Sequence[str], seconds: Mapping[str, float], above: float) -> str:
    """Markdown: one row per method (of ``seconds``: its direction-finding time) with ``mean +- std`` per
    region; a second table with the median, the quartiles and the faces with ROIR above ``above``; the
    faces found and skipped."""
    by_key = {(row["method"], row["region"]): row for row in rows}
    count = above_key(above)

    def cells(method: str, text: Callable[[dict[str, Any]], str]) -> str:
        return " | ".join(text(by_key[method, r]) if (method, r) in by_key else "n/a" for r in regions)

    def mean_std(row: dict[str, Any]) -> str:
        return f"{row['roir_mean']:.2f} +- {row['roir_std']:.2f}"

    def robust(row: dict[str, Any]) -> str:
        return f"{row['roir_median']:.2f} [{row['roir_q1']:.2f}, {row['roir_q3']:.2f}], {row[count]} of {row['images']}"

    header = "| method | " + " | ".join(regions) + " |"
    lines = [header + " seconds to find directions |", "|---" * (len(regions) + 2) + "|"]
    lines += [f"| {m} | {cells(m, mean_std)} | {t:.1f} |" for m, t in seconds.items()]
    lines += ["", f"Median [first, third quartile] and the faces with ROIR above {above:g}, of those measured:", ""]
    lines += [header, "|---" * (len(regions) + 1) + "|", *(f"| {m} | {cells(m, robust)} |" for m in seconds)]
    found, skipped = rows[0]["images"] + rows[0]["unchanged"], rows[0]["skipped"]
    lines += ["", f"Test faces: {found} found, {skipped} of the {found + skipped} samples skipped (no face found)."]
    return "\n".join(lines) + "\n"


def write_report(
    results: Results, out: Path, figures: bool = True, wandb: tuple[str, str, dict[str, Any]] | None = None
) -> dict[str, Path]:
    """Into ``out``: the figures (:func:`write_figures`, unless ``figures`` is false), ``roir.md`` (the table) and
    ``roir.csv`` (the rows), atomically; with ``wandb`` (project, run name, config) also a W&B run holding the rows
    and the figures."""
    files = write_figures(results, out) if figures else {}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results.rows[0]))
    writer.writeheader()
    writer.writerows(results.rows)
    files["table"] = atomic_write(out / ROIR_MD, results.table.encode())
    files["csv"] = atomic_write(out / ROIR_CSV, buffer.getvalue().encode())
    if wandb is not None:
        images = [path for key, path in files.items() if key.startswith("grid_")]
        log_results_to_wandb(out, *wandb, results.rows, images)
    return files


def write_figures(results: Results, out: Path) -> dict[str, Path]:
    """Per region some method has a direction for: ``roir_<region>.png`` (the first test faces, region tinted, and
    each method's edits) and ``roir_<region>_worst.png`` (per method, a row of its worst test faces, ROIR in the
    title, above a row of their edits)."""
    files, examples = {}, results.examples
    for region in examples.masks:
        shown = [mask_overlay(examples.originals, examples.masks[region][:, 0])]
        methods = [method for method in results.seconds if (method, region) in results.choices]
        shown += [to_uint8(examples.edits[method, region]) for method in methods]
        titles = [name for name in ["original", *methods] for _ in range(len(examples.originals))]
        columns = max(1, len(examples.originals))
        files[f"grid_{region}"] = image_grid(np.concatenate(shown), out / f"roir_{region}.png", columns, titles)
        worst = [(method, results.measured[method, region].worst) for method in methods]
        worst = [(method, faces) for method, faces in worst if len(faces.ratios)]
        columns = max(1, *(len(faces.ratios) for _, faces in worst)) if worst else 1
        shown, titles = [], []
        for method, faces in worst:
            blank = np.full((columns - len(faces.ratios), *faces.originals.shape[-2:], 3), 255, dtype=np.uint8)
            shown += [mask_overlay(faces.originals, faces.masks[:, 0]), blank, to_uint8(faces.edits), blank]
            titles += [f"{method} {r:.2f}" for r in faces.ratios.tolist()] + [""] * len(blank)
            titles += ["edited"] * len(faces.ratios) + [""] * len(blank)
        path = out / f"roir_{region}_worst.png"
        files[f"grid_{region}_worst"] = image_grid(np.concatenate(shown), path, columns, titles)
    return files
