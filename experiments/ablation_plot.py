"""The ablation sweeps' plot and results file: ROIR per region and the held-out error against R_S, one line per layer.

Reads a sweep's ``summary.csv`` (``python train.py -m experiment=ablation_ranks|ablation_layers|ablation_solvers``
writes it into the sweep directory, ``multirun/<experiment>/<time>/``) and writes ``<name>.png`` (one panel per
metric: ``val_rel_error`` and each ``roir/<region>``; x: R_S; a line per layer and, where the sweep varies them,
R_C and solver), ``<name>.csv`` (the summary) and ``<name>.md`` (the command, the table and the plot) into
``--out``. Jobs that did not complete are left out of the plot and listed in the table.

    python experiments/ablation_plot.py multirun/ablation_ranks/2026-12-01_16-00-00 --name ablation_ranks
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.files import atomic_write  # noqa: E402
from panda.cli.sweep import COMPLETED, ROIR_PREFIX, SUMMARY_CSV  # noqa: E402

SERIES = ["layer", "appearances", "solver", "lr"]  # what tells a line apart (those the sweep varies)
FEATURES = ["eyes", "eyebrows", "nose", "mouth"]  # the labels panda.uses.face_regions gives face features
READING = "\n## Reading\n"  # the hand-written part of the results file, kept when the table is rewritten
TABLE = ["job", "status", "layer", "solver", "lr", "parts", "appearances", "steps", "val_rel_error", "fit_seconds"]


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    """The rows of the sweep's ``summary.csv``."""
    path = sweep_dir / SUMMARY_CSV
    if not path.is_file():
        raise SystemExit(f"error: no {SUMMARY_CSV} in {sweep_dir}: pass the directory of a finished sweep")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def metrics(rows: list[dict[str, str]]) -> list[str]:
    """The plotted columns: the held-out error, then ROIR per region."""
    return ["val_rel_error", *(c for c in rows[0] if c.startswith(ROIR_PREFIX))] if rows else []


def series_label(row: dict[str, str], varying: list[str]) -> str:
    names = {"appearances": "R_C", "lr": "lr"}
    return ", ".join(
        f"{names[key]}={row[key] or 'C'}" if key in names else row[key] for key in varying if row[key] or key != "lr"
    )


def plot(rows: list[dict[str, str]], path: Path, title: str) -> Path:
    """One panel per metric against R_S, a line per layer (and R_C, solver where the sweep varies them)."""
    done = [row for row in rows if row["status"] == COMPLETED]
    varying = [key for key in SERIES if key == "layer" or len({row[key] for row in done}) > 1]
    columns = metrics(done)
    fig = Figure(figsize=(3.6 * max(1, len(columns)), 3.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(columns)), squeeze=False)[0]
    for axis, column in zip(axes, columns, strict=False):
        lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in done:
            if row[column] != "":
                lines[series_label(row, varying)].append((int(row["parts"]), float(row[column])))
        for label, points in lines.items():
            xs, ys = zip(*sorted(points), strict=True)
            axis.plot(xs, ys, marker="o", label=label)
        axis.set_xlabel("R_S (parts)")
        axis.set_title("held-out relative error" if column == "val_rel_error" else f"ROIR {column[len(ROIR_PREFIX) :]}")
        axis.grid(alpha=0.3)
    if columns:
        axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    return path


def features(labels: str) -> str:
    """The face features among a job's part labels (``"eyes; hair; nose; nose_2"`` -> ``"eyes, nose x2"``)."""
    names = [re.sub(r"_\d+$", "", label) for label in labels.split("; ") if label]
    found = [(feature, names.count(feature)) for feature in FEATURES if feature in names]
    return ", ".join(f"{feature} x{count}" if count > 1 else feature for feature, count in found) or "none"


def markdown(rows: list[dict[str, str]], name: str, sweep_dir: Path, note: str) -> str:
    """The results file: what produced it, the table (without each job's overrides; of the part labels, the
    face features) and the plot."""
    columns = TABLE + metrics(rows)[1:] + ["features"] * any(row["labels"] for row in rows)
    columns += ["error"] * any(row["error"] for row in rows)
    lines = [f"# {name}", "", f"Sweep `{sweep_dir}`, plotted by `python experiments/ablation_plot.py`.", ""]
    lines += [note, ""] if note else []
    lines += [f"![{name}]({name}.png)", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [features(row["labels"]) if c == "features" else _cell(c, row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value: str) -> str:
    if value and (column == "val_rel_error" or column.startswith(ROIR_PREFIX)):
        return f"{float(value):.4f}"
    return value.replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory holding summary.csv")
    parser.add_argument("--name", default=None, help="result files' name (default: the experiment's directory name)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--note", default="", help="a line of context for the results file (budget, machine)")
    args = parser.parse_args()
    rows = read_summary(args.sweep_dir)
    name = args.name or args.sweep_dir.resolve().parent.name
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / f"{name}.png", f"{name}: {sum(r['status'] == COMPLETED for r in rows)} of {len(rows)} jobs")
    atomic_write(args.out / f"{name}.csv", (args.sweep_dir / SUMMARY_CSV).read_bytes())
    path = args.out / f"{name}.md"
    previous = path.read_text().partition(READING)[2] if path.is_file() else ""
    text = markdown(rows, name, args.sweep_dir, args.note) + (f"{READING}{previous}" if previous else "")
    atomic_write(path, text.encode())
    print(f"wrote {args.out / name}.png, .csv, .md")


if __name__ == "__main__":
    main()
