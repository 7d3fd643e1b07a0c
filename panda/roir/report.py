"""What the benchmark reports: the CSV rows, the markdown table, and the files and figures of its results."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panda.base.dashboards import log_results_to_wandb
from panda.base.files import atomic_write
from panda.roir.measure import Examples, Result
from panda.roir.search import BUDGET, FULL, Choice
from panda.uses.landmarks import FEATURES
from panda.uses.visualize import image_grid, mask_overlay, to_uint8

ROIR_CSV, ROIR_MD = "roir.csv", "roir.md"
PAPER = """| method | Eyes | Nose | Open mouth | Smile |
|---|---|---|---|---|
| GANSpace | 2.80+-1.22 | 4.89+-2.11 | 3.25+-1.33 | 2.44+-0.89 |
| SeFa | 5.01+-1.90 | 6.89+-3.04 | 3.45+-1.12 | 5.04+-2.22 |
| StyleSpace | 1.26+-0.70 | 1.70+-0.82 | 1.24+-0.44 | 2.06+-1.62 |
| LowRankGAN | 1.78+-0.59 | 5.07+-2.06 | 1.82+-0.60 | 2.31+-0.76 |
| ReSeFa | 2.21+-0.85 | 2.92+-1.29 | 1.69+-0.65 | 1.87+-0.75 |
| PandA | 1.04+-0.33 | 1.17+-0.44 | 1.04+-0.39 | 1.05+-0.38 |
"""  # the paper's Table 1 (StyleGAN2 FFHQ, 10k samples), shown beside the semantic table


@dataclass
class Tuned:
    """A baseline's knobs as chosen on validation faces: ``best`` (knob -> value), the mean validation ROIR of each
    value tried (knob -> value -> ROIR) and the validation faces they were measured on."""

    best: dict[str, Any]
    scores: dict[str, dict[str, float]]
    faces: int

    def describe(self, method: str) -> str:
        """One line: the values used and those tried."""
        tried = "; ".join(
            f"{knob}: " + ", ".join(f"{value} {roir:.2f}" for value, roir in values.items())
            for knob, values in self.scores.items()
        )
        used = ", ".join(f"{knob}={value}" for knob, value in self.best.items())
        return f"- {method}: {used} (mean validation ROIR of each value tried, on {self.faces} faces: {tried})"


@dataclass
class Results:
    """What :func:`panda.roir.benchmark.benchmark` found.

    ``rows``: one per (method, region) (the columns of :func:`row`); ``seconds``: each method's time to find its
    directions, in the order of the methods measured; ``measured``: the results by (method, region), with their
    worst faces; ``skipped``: test samples without a face; ``examples``: the first test faces and their edits
    (this process's). In a distributed run, every process has the rows, and the rest of its own faces.
    """

    regions: list[str]
    features: list[str]
    budget: int
    above: float
    choices: dict[tuple[str, str, str], Choice]
    measured: dict[tuple[str, str, str], Result]
    rows: list[dict[str, Any]]
    seconds: dict[str, float]
    skipped: int
    calibration_faces: int
    examples: Examples
    tuned: dict[str, Tuned]

    @property
    def table(self) -> str:
        """The markdown tables of :func:`tables`, then the baselines' knobs chosen on validation faces."""
        text = tables(self.rows, self.regions, self.features, self.budget, self.seconds, self.above)
        if not self.tuned:
            return text
        lines = [f"{text}", "Baseline settings chosen on validation faces (the lowest mean ROIR over the regions):", ""]
        return "\n".join([*lines, *(tuned.describe(method) for method, tuned in self.tuned.items())]) + "\n"


def above_key(above: float) -> str:
    """The row's column counting the faces whose ROIR exceeds ``above``."""
    return f"faces_above_{above:g}"


def row(result: Result, skipped: int) -> dict[str, Any]:
    """The table's row of ``result``; ``skipped``: test samples without a face (of all processes). Summed over the
    processes of a distributed run (every process calls it, in turn)."""
    values = {key: float(value) for key, value in result.metric.compute().items()}
    mean = spread = None  # a region's edit has no effect to report
    if result.choice.target in FEATURES:  # every process computes (a distributed run sums them)
        effect, squared = float(result.effect.compute()), float(result.effect_squared.compute())
        if math.isfinite(effect):  # nan: no face's effect was measured
            mean, spread = round(effect, 4), round(max(0.0, squared - effect**2) ** 0.5, 4)
    return {
        "search": result.choice.search,
        "method": result.choice.method,
        "target": result.choice.target,
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
        "effect_mean": mean,
        "effect_std": spread,
        "calibration_effect": None if mean is None else round(result.choice.calibration_effect, 4),
        "direction": result.choice.label,
        "scale": round(result.choice.scale, 5),
        "calibration_roir": round(result.choice.calibration_roir, 4),
        "find_seconds": round(result.seconds, 2),
    }


def table(
    rows: Sequence[dict[str, Any]],
    targets: Sequence[str],
    seconds: Mapping[str, float],
    above: float,
    search: str = BUDGET,
) -> str:
    """Markdown of one search's rows: one row per method (of ``seconds``: its direction-finding time) with ROIR's
    ``mean +- std`` per target (a semantic edit's column also gives its effect achieved, ``mean +- std``); a second
    table with the median, the quartiles and the faces with ROIR above ``above``."""
    by_key = {(row["method"], row["target"]): row for row in rows if row["search"] == search}
    count = above_key(above)

    def cells(method: str, text: Callable[[dict[str, Any]], str]) -> str:
        return " | ".join(text(by_key[method, t]) if (method, t) in by_key else "n/a" for t in targets)

    def mean_std(row: dict[str, Any]) -> str:
        effect = (
            f" (effect {row['effect_mean']:.3f} +- {row['effect_std']:.3f})"
            if row["target"] in FEATURES and row.get("effect_mean") is not None
            else ""
        )
        return f"{row['roir_mean']:.2f} +- {row['roir_std']:.2f}{effect}"

    def robust(row: dict[str, Any]) -> str:
        return f"{row['roir_median']:.2f} [{row['roir_q1']:.2f}, {row['roir_q3']:.2f}], {row[count]} of {row['images']}"

    names = [FEATURES[t].title if t in FEATURES else t for t in targets]
    header = "| method | " + " | ".join(names) + " |"
    lines = [header + " seconds to find directions |", "|---" * (len(targets) + 2) + "|"]
    lines += [f"| {m} | {cells(m, mean_std)} | {t:.1f} |" for m, t in seconds.items()]
    lines += ["", f"Median [first, third quartile] and the faces with ROIR above {above:g}, of those measured:", ""]
    lines += [header, "|---" * (len(targets) + 1) + "|", *(f"| {m} | {cells(m, robust)} |" for m in seconds)]
    return "\n".join(lines) + "\n"


def tables(
    rows: Sequence[dict[str, Any]],
    regions: Sequence[str],
    features: Sequence[str],
    budget: int,
    seconds: Mapping[str, float],
    above: float,
) -> str:
    """Markdown: the region table and the semantic table (:func:`table`) of the equal-budget search, then those of
    the full search where it ran, the paper's Table 1 beside the semantic tables, and the faces found and skipped."""
    searches = [BUDGET, *([FULL] if any(row["search"] == FULL for row in rows) else [])]
    titles = {BUDGET: f"equal budget (at most {budget} candidates per method and target)", FULL: "full search"}
    parts = []
    for search in searches:
        parts += [f"### Regions, {titles[search]}\n", table(rows, regions, seconds, above, search)]
        if features:
            effect = "effect: the change of the landmark measure achieved on the measured faces"
            parts += [
                f"### Semantic edits, {titles[search]} ({effect})\n",
                table(rows, features, seconds, above, search),
            ]
    if features:
        parts += ["### The paper's Table 1 (StyleGAN2 FFHQ, 10k samples), for reference\n", PAPER]
    found, skipped = rows[0]["images"] + rows[0]["unchanged"], rows[0]["skipped"]
    parts += [f"Faces measured: {found} found, {skipped} of the {found + skipped} samples skipped (no face found).\n"]
    return "\n".join(parts)


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
    for region in [region for region in results.regions if region in examples.masks]:
        shown = [mask_overlay(examples.originals, examples.masks[region][:, 0])]
        methods = [method for method in results.seconds if (BUDGET, method, region) in results.choices]
        shown += [to_uint8(examples.edits[BUDGET, method, region]) for method in methods]
        titles = [name for name in ["original", *methods] for _ in range(len(examples.originals))]
        columns = max(1, len(examples.originals))
        files[f"grid_{region}"] = image_grid(np.concatenate(shown), out / f"roir_{region}.png", columns, titles)
        worst = [(method, results.measured[BUDGET, method, region].worst) for method in methods]
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
