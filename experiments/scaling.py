"""Data-parallel scaling: 1 and 2 CPU processes (gloo) for both solvers, and a projection to 8 GPUs.

Each run is ``train.py`` as a user runs it (``trainer=cpu`` for one process, ``trainer=ddp
trainer.accelerator=cpu trainer.devices=2`` for two), DCGAN faces at ``main.8`` (128x16x16), the
ranks R_S = 8, R_C = 16, the same global batch (one process of batch 2B, two of B: the
same samples, see ``panda.method.data``), a held-out set of ``--val`` samples checked every ``--every``
steps. Recorded: samples/s of ``fit`` (its wall clock: initialisation and validations included),
the final held-out error, the seconds to reach a target held-out error (the one-process run's
final error plus 1%; the time of the first validation at or below it, prorated from ``fit``'s clock
by steps), and the bytes each step, solve and validation all-reduces (from the tensors' sizes: the
gradients of ``A`` and ``P`` for ``pgd``, each batch's statistics for ``stats``, the channel scatter
of the HOSVD once, the float64 sums of every validation). The machine's load average is
recorded before and after: the CPUs may be shared.

The 8-GPU projection (StyleGAN2 1024, its 16x16 layer: C = 512, S = 256) needs the per-GPU
features/s, measured with ``--per-gpu F`` on a GPU; without it the table says what is assumed.

    python experiments/scaling.py            # writes experiments/results/scaling.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.files import atomic_write  # noqa: E402

FLOAT32, FLOAT64 = 4, 8
C, S, R_S, R_C = 128, 256, 8, 16  # DCGAN main.8 at the ranks measured (the earlier default)
BIG_C, BIG_S = 512, 256  # StyleGAN2 1024 at 16x16
SOLVERS = {
    "stats": ["model/solver=stats"],
    "pgd": ["model/solver=pgd"],
}


def step_bytes(solver: str, channels: int, spatial: int, parts: int, appearances: int) -> str:
    """What one training step all-reduces, in bytes (float32)."""
    if solver == "pgd":
        return f"{(channels * appearances + spatial * parts) * FLOAT32:,} (the gradients of A and P)"
    parts_pass, appearance_pass = ((2 * n * n + 1) * FLOAT32 for n in (spatial, channels))
    return f"{parts_pass:,} in a parts pass (G1, G2), {appearance_pass:,} in an appearances pass (K, L)"


def run(solver: str, processes: int, args: argparse.Namespace, out: Path) -> dict:
    """One ``train.py`` run; its metrics and validation curve ``[(step, error)]``."""
    batch = args.batch // processes
    trainer = ["trainer=cpu"] if processes == 1 else ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *SOLVERS[solver],
        *trainer,
        f"rank.parts={R_S}",
        f"rank.appearances={R_C}",
        f"trainer.max_steps={args.steps[solver]}",
        f"trainer.val_check_interval={args.every}",
        "trainer.enable_progress_bar=false",
        f"data.batch_size={batch}",
        f"data.val_samples={args.val}",
        f"data.init_samples={args.val}",
        "callbacks={}",
        "logger=csv",
        f"hydra.run.dir={out}",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=environment)
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "csv" / "metrics.csv").open(newline="") as handle:
        curve = [(int(r["step"]), float(r["val/rel_error"])) for r in csv.DictReader(handle) if r.get("val/rel_error")]
    return {**metrics, "curve": curve}


def seconds_to(result: dict, target: float) -> str:
    """Seconds of ``fit`` until the first validation at or below ``target`` (prorated by steps)."""
    for step, error in result["curve"]:
        if error <= target:
            return f"{result['fit_seconds'] * step / result['steps']:.1f}"
    return "never"


def load() -> str:
    return "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="global batch (split over the processes)")
    parser.add_argument("--stats-steps", type=int, default=40)
    parser.add_argument("--pgd-steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=10, help="steps between validations")
    parser.add_argument("--val", type=int, default=256, help="held-out (and initialisation) samples")
    parser.add_argument("--per-gpu", type=float, default=None, help="measured StyleGAN2-1024 16x16 samples/s of a GPU")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "scaling.md")
    args = parser.parse_args()
    args.steps = {"stats": args.stats_steps, "pgd": args.pgd_steps}

    before = load()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for solver in SOLVERS:
            results = {n: run(solver, n, args, Path(scratch) / f"{solver}{n}") for n in (1, 2)}
            target = results[1]["val_rel_error"] * 1.01
            rates = {n: result["samples"] / result["fit_seconds"] for n, result in results.items()}
            for n, result in results.items():
                rows.append(
                    f"| {solver} | {n} | {args.batch // n} | {result['steps']} | {rates[n]:.0f} "
                    f"| {rates[n] / rates[1]:.2f}x | {result['val_rel_error']:.4f} "
                    f"| {target:.4f} | {seconds_to(result, target)} |"
                )
    after = load()

    lines = [
        "# Data-parallel scaling (CPU, gloo)",
        "",
        f"DCGAN faces, layer main.8 ({C}x16x16), R_S = {R_S}, R_C = {R_C}; global batch {args.batch} (one process "
        f"of batch {args.batch}, or two of {args.batch // 2}: the same samples); held-out set of {args.val} samples "
        f"checked every {args.every} steps. {os.cpu_count()} CPU cores; one process uses all of them, each of two "
        f"processes half (Lightning's DDP sets the threads). Load average (1, 5, 15 min) before: {before}; after: "
        f"{after}. **This machine was shared with other jobs while measuring**: the numbers say what runs, "
        "not what the hardware can do. Produced by `python experiments/scaling.py`.",
        "",
        "| solver | processes | batch per process | steps | samples/s (fit) | speed-up | final held-out error "
        "| target (1 process +1%) | s to target |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Bytes all-reduced",
        "",
        "| what | bytes at DCGAN main.8 | bytes at StyleGAN2 1024, 16x16 (C = 512, S = 256) |",
        "|---|---|---|",
        *(
            f"| {solver}, every step | {step_bytes(solver, C, S, R_S, R_C)} "
            f"| {step_bytes(solver, BIG_C, BIG_S, R_S, R_C)} |"
            for solver in ("pgd", "stats")
        ),
        "| stats, a solve | 0 (every process holds the summed statistics and solves the same system) | 0 |",
        f"| HOSVD initialisation, once | {C * C * FLOAT32:,} (the channel scatter) | {BIG_C * BIG_C * FLOAT32:,} |",
        f"| validation, each | {(2 + R_C) * FLOAT64} (two float64 sums, and one per appearance for its sign) "
        f"| {(2 + R_C) * FLOAT64} |",
        "",
        "## Projection: 8 GPUs, StyleGAN2 1024 at its 16x16 layer",
        "",
        *projection(args.per_gpu),
    ]
    atomic_write(args.out, ("\n".join(lines) + "\n").encode())
    print(f"wrote {args.out}")


def projection(per_gpu: float | None) -> list[str]:
    """The 8-GPU projection's text: from the measured per-GPU rate, or with the rate as a stated assumption."""
    bandwidth, latency = 100e9, 50e-6  # NCCL ring all-reduce over NVLink: bus bandwidth (bytes/s), per-call latency
    largest = (2 * BIG_C * BIG_C + 1) * FLOAT32  # the stats solver's appearances pass: the most bytes of a step
    comm = latency + 2 * 7 / 8 * largest / bandwidth
    rates = [per_gpu] if per_gpu else [500.0, 2000.0, 8000.0]
    lines = [
        "Samples are independent and the generator is frozen, so each GPU computes its own features and the "
        "processes exchange only the all-reduces above. Per step of batch B per GPU, 8 GPUs take "
        "`B / F + t_comm` seconds for `8 B` samples, F the per-GPU samples/s of the truncated forward plus the "
        "solver's statistics. Assumed: a ring all-reduce over NVLink with "
        f"{bandwidth / 1e9:.0f} GB/s bus bandwidth and {latency * 1e6:.0f} us latency, so the largest step "
        f"all-reduce ({largest:,} bytes, the stats solver's appearances pass) takes t_comm = {comm * 1e6:.0f} us; "
        "the solves themselves (L-BFGS-B on [S, R_S] and [C, R_C]) run on every GPU at once and add the same time "
        "as on one GPU.",
        "",
    ]
    if per_gpu:
        lines.append(f"Measured per-GPU rate F = {per_gpu:.0f} samples/s.")
    else:
        lines.append(
            "No GPU was available: F was not measured. The rows below take F as an assumption (illustrative "
            "values); measure it with `--per-gpu` on a GPU."
        )
    lines += ["", "| F, samples/s per GPU | batch per GPU | 8-GPU samples/s | efficiency |", "|---|---|---|---|"]
    for rate in rates:
        for batch in (16, 64):
            step = batch / rate + comm
            lines.append(f"| {rate:.0f} | {batch} | {8 * batch / step:,.0f} | {batch / rate / step:.1%} |")
    return lines


if __name__ == "__main__":
    main()
