"""The paper's Table 1 (ROIR of PandA against the baselines) on the default DCGAN faces.

Trains the default (``python train.py``: DCGAN faces, ``main.8``, R_S = 48, R_C = C = 128, the statistics solver,
240 steps), then runs ``python evaluate.py task=roir`` on it (eyes, nose and mouth; directions chosen and
scaled on calibration faces, ROIR measured on the faces of a disjoint test set) with a fresh landmark cache
(so dlib's time is counted), and writes ``experiments/results/roir_dcgan.{md,csv}``, a bar chart
``roir_dcgan.png``, the mouth edits ``roir_dcgan_mouth.png`` and each method's worst mouth edits
``roir_dcgan_mouth_worst.png``; a ``## Reading`` section already in the ``.md`` is kept. The training and
evaluation run directories are under ``outputs/roir_dcgan/``.

    python experiments/roir_dcgan.py                    # 10,000 test samples
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

PAPER = """| method | eyes | nose | open mouth | smile |
|---|---|---|---|---|
| GANSpace | 2.80+-1.22 | 4.89+-2.11 | 3.25+-1.33 | 2.44+-0.89 |
| SeFa | 5.01+-1.90 | 6.89+-3.04 | 3.45+-1.12 | 5.04+-2.22 |
| StyleSpace | 1.26+-0.70 | 1.70+-0.82 | 1.24+-0.44 | 2.06+-1.62 |
| LowRankGAN | 1.78+-0.59 | 5.07+-2.06 | 1.82+-0.60 | 2.31+-0.76 |
| ReSeFa | 2.21+-0.85 | 2.92+-1.29 | 1.69+-0.65 | 1.87+-0.75 |
| PandA | 1.04+-0.33 | 1.17+-0.44 | 1.04+-0.39 | 1.05+-0.38 |
"""


READING = "\n## Reading\n"  # the hand-written part of the results file, kept when the tables are rewritten


def script(name: str, *overrides: str, env: dict[str, str] | None = None) -> float:
    """Run ``python <name> overrides...`` from the project root (with ``env`` added); its wall time in seconds."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    subprocess.run([sys.executable, str(ROOT / name), *overrides], check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def bar_chart(rows: list[dict[str, str]], path: Path) -> Path:
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
    ax.set_title("DCGAN faces: edits scaled to the same change inside the region")
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
        train_seconds = script("train.py", f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", *args.train)
    evaluation = work / "eval"
    overrides = [f"run={run}", f"hydra.run.dir={evaluation}", *args.eval]
    if args.test_samples is not None:
        overrides.append(f"eval.test_samples={args.test_samples}")
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
        f"| {row['method']} | {row['region']} | {row['direction']} | {float(row['scale']):.3g} | "
        f"{row['calibration_roir']} | {row['images']} | {row['inside_change']} |"
        for row in rows
    )
    timing = f"training {train_seconds:.0f} s, " if train_seconds is not None else ""
    trained = json.loads((run / "metrics.json").read_text())
    appearances = trained["appearances"] or "C"
    setting = f"layer `{trained['layer']}`, R_S = {trained['parts']}, R_C = {appearances}, {trained['solver']}"
    command = " ".join(["python experiments/roir_dcgan.py", *sys.argv[1:]])
    report = f"""# ROIR on the DCGAN faces

Produced by `{command}` ({timing}evaluation {eval_seconds:.0f} s with dlib's landmarks computed afresh, on
{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} at
the end). PandA: `python train.py {" ".join(args.train)}` ({setting}, {trained["steps"]} steps).
Regions from dlib's 68 landmarks, dilated by 1 px.
Each method's direction and scale per region were chosen on calibration faces so that every edit changes the
region by the same RMS amount (0.1 per pixel and channel, images in [-1, 1]); ROIR = ||change outside|| /
||change inside|| on the faces found among {test_samples} test samples (a disjoint stream). Lower is better.
StyleSpace needs style channels, which the DCGAN does not have.

{(evaluation / "roir.md").read_text()}
"seconds to find directions": PandA's training time; the baselines' time to compute their directions (summed
over the regions for the region-conditioned ones). Choosing among directions is the same protocol for all.

## The paper's Table 1 (StyleGAN2 FFHQ, 10k samples), for comparison

{PAPER}
## Chosen directions

| method | region | direction | scale | calibration ROIR | test images | inside change |
|---|---|---|---|---|---|---|
{details}

![ROIR per method and region]({name}.png)

![mouth edits of every method]({name}_mouth.png)

![each method's test faces with the highest mouth ROIR]({name}_mouth_worst.png)
"""
    path = args.out / f"{name}.md"
    previous = path.read_text().partition(READING)[2] if path.is_file() else ""
    atomic_write(path, (report + (f"{READING}{previous}" if previous else "")).encode())
    print(report)


if __name__ == "__main__":
    main()
