"""The paper's Table 1 (ROIR of PandA against the baselines) on the default DCGAN faces.

Trains the default (``python train.py``: DCGAN faces, ``main.8``, R_S = 48, R_C = C = 128, the statistics solver,
96 steps), then runs ``python evaluate.py task=roir`` on it (regions eyes, nose and mouth and the semantic edits
eyes_open, nose_length, open_mouth and smile; every method's directions chosen among the same number of candidates
and among all of them, and scaled, on calibration faces; the baselines' knobs picked on ROIR validation faces; ROIR
measured on the faces of the test stream) with a fresh landmark cache (so dlib's time is counted), and writes
``experiments/results/roir_dcgan.{md,csv}`` (four tables: region and semantic, equal budget and full search), a bar
chart of the equal-budget region table ``roir_dcgan.png``, the mouth edits ``roir_dcgan_mouth.png`` and each
method's worst mouth edits ``roir_dcgan_mouth_worst.png``; a ``## Reading`` section already in the ``.md`` is kept.
The training and evaluation run directories are under ``outputs/roir_dcgan/``.

    python experiments/roir_dcgan.py                    # eval.test_samples test samples
    python experiments/roir_dcgan.py --test-samples 1000 --run outputs/roir_dcgan/train   # reuse a trained run
    python experiments/roir_dcgan.py --name roir_dcgan_parts8 --train rank.parts=8 --eval "eval.methods=[panda]"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.files import atomic_write  # noqa: E402

READING = "\n## Reading\n"  # the hand-written part of the results file, kept when the tables are rewritten


def script(name: str, *overrides: str, env: dict[str, str] | None = None) -> float:
    """Run ``python <name> overrides...`` from the project root (with ``env`` added); its wall time in seconds."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    subprocess.run([sys.executable, str(ROOT / name), *overrides], check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def bar_chart(rows: list[dict[str, str]], path: Path) -> Path:
    """The equal-budget region rows' means and standard deviations, a bar per method and region."""
    rows = [row for row in rows if row["search"] == "budget" and row["target"] == row["region"]]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    regions = list(dict.fromkeys(row["region"] for row in rows))
    by_key = {(row["method"], row["region"]): row for row in rows}
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        shown = [r for r, region in enumerate(regions) if (method, region) in by_key]  # panda_named: named regions
        xs = [r + (m - (len(methods) - 1) / 2) * width for r in shown]
        means = [float(by_key[method, regions[r]]["roir_mean"]) for r in shown]
        stds = [float(by_key[method, regions[r]]["roir_std"]) for r in shown]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks(range(len(regions)), regions)
    ax.set_ylabel("ROIR (lower is better)")
    ax.set_title("DCGAN faces, equal budget: edits scaled to the same change inside the region")
    ax.legend(fontsize=7, ncols=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-samples", type=int, default=None, help="test-set size (default: eval.test_samples)")
    parser.add_argument("--run", type=Path, default=None, help="a trained run to reuse (default: train one)")
    parser.add_argument("--name", default="roir_dcgan", help="result files' name; work directory outputs/<name>")
    parser.add_argument("--train", nargs="*", default=[], help="extra train.py overrides")
    parser.add_argument("--eval", nargs="*", default=[], help="extra evaluate.py overrides")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    work, name = ROOT / "outputs" / args.name, args.name

    run = args.run
    train_seconds = None
    if run is None:
        run = work / "train"
        shutil.rmtree(run, ignore_errors=True)  # a fresh run, timed from its start (not resumed from a checkpoint)
        train_seconds = script("train.py", f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", *args.train)
    evaluation = work / "eval"
    overrides = [f"run={run}", f"hydra.run.dir={evaluation}", *args.eval]
    if args.test_samples is not None:
        overrides.append(f"eval.test_samples={args.test_samples}")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:  # no landmarks cached by earlier evaluations
        eval_seconds = script("evaluate.py", "task=roir", *overrides, env={"PANDA_CACHE": cache})

    rows = list(csv.DictReader((evaluation / "roir.csv").open()))
    test_samples = json.loads((evaluation / "evaluate.json").read_text())["test_samples"]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(evaluation / "roir.csv", args.out / f"{name}.csv")
    bar_chart(rows, args.out / f"{name}.png")
    for figure in ("mouth", "mouth_worst"):
        shutil.copyfile(evaluation / f"roir_{figure}.png", args.out / f"{name}_{figure}.png")
    details = "\n".join(
        f"| {row['search']} | {row['method']} | {row['target']} | {row['direction']} | {float(row['scale']):.3g} | "
        f"{row['calibration_roir']} | {row['images']} | {row['inside_change']} | {row['effect_mean'] or ''} |"
        for row in rows
    )
    timing = f"training {train_seconds:.0f} s, " if train_seconds is not None else ""
    trained = json.loads((run / "metrics.json").read_text())
    appearances = trained["appearances"] or "C"
    setting = f"layer `{trained['layer']}`, R_S = {trained['parts']}, R_C = {appearances}, {trained['solver']}"
    command = " ".join(["python experiments/roir_dcgan.py", *sys.argv[1:]])
    report = f"""# ROIR on the DCGAN faces

Produced by `{command}` ({timing}evaluation {eval_seconds:.0f} s with dlib's landmarks computed afresh, on
{os.cpu_count()} CPU cores shared with other work, {platform.processor() or platform.machine()}, load average
{load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end). PandA: `python train.py {" ".join(args.train)}`
({setting}, {trained["steps"]} steps). Regions from dlib's 68 landmarks, dilated by 1 px.
The rules (docs/roir.md): directions are chosen and scaled on calibration faces, the baselines' knobs on ROIR
validation faces, and ROIR = ||change outside|| / ||change inside|| is measured on the faces found among
{test_samples} samples of the test stream, which nothing was chosen on. "Equal budget": every method tries the
same number of preselected candidates per target, each with both signs (PandA: the appearances most present on
the parts named after the region; a baseline: its leading directions); "full search": all of them (PandA: every
part and appearance). Region edits are scaled to the same RMS change inside the region (0.1 per pixel and
channel, images in [-1, 1]); semantic edits to the same change of their landmark measure on calibration faces
(one standard deviation of it), the effect achieved on the first measured faces beside each ROIR. Lower ROIR is
better. StyleSpace needs style channels, which the DCGAN does not have.

{(evaluation / "roir.md").read_text()}
"seconds to find directions": PandA's training time; the baselines' time to compute their directions (summed
over the regions for the region-conditioned ones).

## Chosen directions

| search | method | target | direction | scale | calibration ROIR | images | inside change | effect |
|---|---|---|---|---|---|---|---|---|
{details}

![ROIR per method and region, equal budget]({name}.png)

![mouth edits of every method]({name}_mouth.png)

![each method's test faces with the highest mouth ROIR]({name}_mouth_worst.png)
"""
    path = args.out / f"{name}.md"
    previous = path.read_text().partition(READING)[2] if path.is_file() else ""
    atomic_write(path, (report + (f"{READING}{previous}" if previous else "")).encode())
    print(report)


if __name__ == "__main__":
    main()
