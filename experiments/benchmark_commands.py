"""Whole-command benchmark: what a user waits for, from typing ``python train.py ...`` to its results.

Each command runs as its own process, as a user runs it, and is timed from its start to its exit: the
imports, the configuration, the generator, the initialisation, training until it stops (at convergence or
at ``trainer.max_steps``), the final images and files. Its ``metrics.json`` gives the training time
(``fit_seconds``) and when its first training step started (``first_step_seconds``); the factors it
wrote are scored on the held-out set of ``experiments/benchmark_solvers.py`` (1,024 samples), the same
for every row. Against them: the authors' algorithm (``benchmark_solvers.reference``, batch 1, 10,000
steps at its best learning rate of that benchmark) in this process, timed without its evaluation. The
floors of start-up are ``python -c "import torch"`` and ``python -c "import pytorch_lightning"``: the time
from their start until the import is done, and until the process has exited.

Also the default command's error curve, validated every 24 steps and run on to 240, to choose where it stops.

    python experiments/benchmark_commands.py        # writes experiments/results/commands_cpu.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark_solvers import LAYER, PARTS, READING, SEED, HeldOut, reference  # the same held-out set, reference

from panda.base.files import atomic_write
from panda.generators.dcgan import DCGANFaces

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_LR = 1e-5  # the best of benchmark_solvers.py's grid on seed 0 (experiments/results/solvers_cpu.md)
FAST = ["experiment=fast", f"gen.layer={LAYER}", f"rank.parts={PARTS}", "rank.appearances=null"]
COMMANDS = {  # label -> train.py overrides; the first three are at the reference's setting (R_C = C)
    "experiment=fast (stats, bfloat16 forwards where native, stops when converged)": FAST,
    "experiment=fast with float32 forwards (a CPU without native bfloat16)": [*FAST, "data.precision=fp32"],
    "experiment=fast without the stop (callbacks=default: 120 steps)": [*FAST, "callbacks=default"],
    "python train.py (the default: stats, R_S = 48, R_C = C, 96 steps)": [],
    "python train.py callbacks=early_stop (R_S = 48, R_C = C)": ["callbacks=early_stop"],
}
AT_REFERENCE = 3  # the first rows are comparable with the reference (same ranks)
CURVE_EVERY, CURVE_STEPS = 24, 240  # the default's error curve: validated every 24 steps, run on to 240


def seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of ``command`` as a process, from its start to its exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def train(overrides: list[str], run_dir: Path) -> tuple[float, dict, torch.Tensor, torch.Tensor]:
    """Wall seconds of ``python train.py overrides`` writing to ``run_dir``, its metrics.json and its A, P."""
    wall = seconds([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"])
    factors = torch.load(run_dir / "factors.pt", weights_only=True)
    return wall, json.loads((run_dir / "metrics.json").read_text()), factors["A"], factors["P"]


def import_seconds(module: str) -> tuple[float, float]:
    """Seconds from the start of ``python -c "import <module>"`` until the import is done, and until it has exited."""
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-c", f"import time, {module}; print(time.time())"], capture_output=True, text=True, check=True
    )
    return float(done.stdout) - start, time.time() - start


def median_range(values: list[float]) -> str:
    """``median (min-max)`` of ``values``."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (medians are reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "commands_cpu.md")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    started_load = load()
    floors = {
        f"`python -c 'import {module}'`": [import_seconds(module) for _ in range(max(args.repeats, 5))]
        for module in ("torch", "pytorch_lightning")
    }
    gen = DCGANFaces()
    held_out = HeldOut(gen, 1024)
    ref_time, ref_error = reference(gen, held_out, REFERENCE_LR, 10_000, every=10_000, seed=SEED)[-1]
    print(f"reference: {ref_error:.4f} in {ref_time:.1f} s", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, overrides) in enumerate(COMMANDS.items()):
            runs = [train(overrides, Path(tmp) / f"{index}-{r}") for r in range(args.repeats)]
            walls = [wall for wall, *_ in runs]
            fits = [metrics["fit_seconds"] for _, metrics, *_ in runs]
            firsts = [metrics["first_step_seconds"] for _, metrics, *_ in runs]
            steps = sorted({metrics["steps"] for _, metrics, *_ in runs})
            errors = [held_out(A, P) for *_, A, P in runs]
            comparable = index < AT_REFERENCE
            rows.append(
                f"| {label} | `{' '.join(['python train.py', *overrides])}` | {', '.join(map(str, steps))} "
                f"| {statistics.median(errors):.4f} | {median_range(firsts)} | {median_range(fits)} "
                f"| {median_range(walls)} "
                + (
                    f"| {ref_time / statistics.median(fits):.1f}x | {ref_time / statistics.median(walls):.1f}x |"
                    if comparable
                    else "| (other ranks) | (other ranks) |"
                )
            )
            print(rows[-1], flush=True)
        curve_dir = Path(tmp) / "curve"
        seconds(
            [
                sys.executable,
                "train.py",
                f"trainer.val_check_interval={CURVE_EVERY}",
                f"trainer.max_steps={CURVE_STEPS}",
                f"hydra.run.dir={curve_dir}",
            ]
        )
        with (curve_dir / "csv" / "metrics.csv").open(newline="") as handle:
            validated = [row for row in csv.DictReader(handle) if row["val/rel_error"]]
        curve = [(int(row["step"]) + 1, float(row["val/rel_error"])) for row in validated]

    lines = [
        "# What a user waits for: whole commands on the CPU",
        "",
        f"DCGAN faces, layer {LAYER} (R_S = {PARTS}, R_C = C in the reference's rows); {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; "
        f"load average {started_load} at the start and {load()} at the end. Each command ran {args.repeats} times "
        "(medians, with the range); held-out error of the factors each run wrote, on the same 1,024 samples for "
        "every row. Produced by `python experiments/benchmark_commands.py`.",
        "",
        f"Reference (the authors' algorithm, batch 1, 10,000 steps, lr {REFERENCE_LR:g}, R_C = C, in-process, "
        f"evaluation not timed): held-out error **{ref_error:.4f}** in **{ref_time:.1f} s**.",
        "",
        "| command | overrides | steps run | held-out error | first step after (s) | training (s) | whole command (s) "
        "| reference / training | reference / whole command |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## The floor of start-up",
        "",
        "| command | until imported (s) | until exited (s) |",
        "|---|---|---|",
        *[
            f"| {label} | {median_range([i for i, _ in values])} | {median_range([e for _, e in values])} |"
            for label, values in floors.items()
        ],
        "",
        f"## The default command's validation error every {CURVE_EVERY} steps, run on to {CURVE_STEPS} steps",
        "",
        "| step | val/rel_error | change since the previous row |",
        "|---|---|---|",
        *[
            f"| {step} | {error:.4f} | " + (f"{error / curve[i - 1][1] - 1:+.2%}" if i else "") + " |"
            for i, (step, error) in enumerate(curve)
        ],
        "",
    ]
    previous = args.out.read_text().partition(READING)[2] if args.out.is_file() else ""  # the hand-written reading
    atomic_write(args.out, ("\n".join(lines) + (f"{READING}{previous}" if previous else "")).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
