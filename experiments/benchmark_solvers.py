"""Solver benchmark: panda's training against the authors' reference algorithm, same objective.

One process, one generator (DCGAN faces), one layer (``main.8``), ranks R_S = 8 and R_C = C = 128,
one held-out set of 1,024 samples. Recorded: relative reconstruction error on the held-out set
(``sum_i ||Z_i - A A^T Z_i P P^T||^2 / sum_i ||Z_i||^2``) against wall time; evaluation time is
excluded from every clock. The reference (``panda.method.factorization.reference_factorization``): HOSVD
init of A on 1,024 samples, P ~ U(0, 0.01), 10,000 steps of batch 1, each a plain gradient step on P
then a clamp at 0, then a plain gradient step on A; its learning rate is the best of a grid, each
grid point run for the full 10,000 steps. The reference runs on every seed of the table of seeds,
from the initial parts of panda's run with that seed and on that seed's data streams (single samples
for the reference, batches for panda: not the same samples), its learning rate the best of the grid
on that seed. Panda: the ``stats`` solver (with its defaults, which start with the appearances at
``R_C = C``, and starting with the parts instead) and the ``pgd`` solver (Adam +
projection), otherwise with train.py's model settings, through the Lightning module and the
streaming data module exactly as ``train.py`` runs them; the ``stats`` solver again on the other
seeds; both solvers at ``train.py``'s earlier default ranks and steps (R_C = 16, 600 steps). Panda's
runs are repeated with the generator's forward in bfloat16 (``data.precision=bf16``); the held-out set
is always computed in float32.

Also measured: samples/s of training against the bare truncated forward at the same batch size and
precision, at R_C = C and at train.py's earlier default R_C = 16, and the peak memory of ``train.py`` runs
with 10x more samples.

    python experiments/benchmark_solvers.py            # writes experiments/results/solvers_cpu.*
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.config import instantiate  # noqa: E402
from panda.base.files import atomic_write  # noqa: E402
from panda.base.resources import config_dir  # noqa: E402
from panda.generators.dcgan import DCGANFaces  # noqa: E402
from panda.method import factorization as fz  # noqa: E402
from panda.method.data import (  # noqa: E402
    PRECISIONS,
    FeatureDataModule,
    Stream,
    batch_generator,
    forward_precision,
    layer_features,
)
from panda.method.model import PandA  # noqa: E402

LAYER, SHAPE, PARTS, SEED, BATCH = "main.8", (128, 16, 16), 8, 0, 64
DEFAULT_APPEARANCES = 16  # train.py's earlier default R_C on the DCGAN faces (with pgd, 600 steps)
READING = "\n## Reading\n"  # the hand-written part of solvers_cpu.md, kept when the tables are rewritten
TOLERANCE = 0.005  # a second, looser target: the reference's final error + 0.5%


def model(solver: str, appearances: int | None, seed: int, **options: object) -> PandA:
    """train.py's model (``conf/model``) with ``model/solver=solver``, that solver's ``options``
    (e.g. ``first_pass``) and ``seed``, at R_S = ``PARTS`` and R_C = ``appearances``."""
    overrides = [f"model/solver={solver}", *(f"model.solver.{k}={v}" for k, v in options.items())]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return instantiate(cfg.model, feature_shape=SHAPE, parts=PARTS, appearances=appearances, seed=seed)


class HeldOut:
    """Relative error of factors on a fixed held-out feature set (evaluation is not timed)."""

    def __init__(self, gen: DCGANFaces, samples: int) -> None:
        self.batches = [
            fz.flatten_features(
                layer_features(gen, LAYER, gen.sample_latents(128, batch_generator(SEED + 99, Stream.VAL, i)))
            )
            for i in range(samples // 128)
        ]
        self.norm = sum(Z.square().sum().item() for Z in self.batches)

    @torch.no_grad()
    def __call__(self, A: torch.Tensor, P: torch.Tensor) -> float:
        return sum(fz.squared_error(Z, A, P).item() for Z in self.batches) / self.norm


class Clock:
    """Wall time with pauses (for evaluation)."""

    def __init__(self) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def record(self, curve: list[tuple[float, float]], error: float, began: float) -> None:
        curve.append((self.now(), error))
        self.paused += time.perf_counter() - began


def reference(
    gen: DCGANFaces, held_out: HeldOut, lr: float, steps: int, every: int, seed: int
) -> list[tuple[float, float]]:
    """The authors' algorithm from the initial parts of panda's run with ``seed``, on single samples of
    ``seed``'s streams; returns (seconds, held-out error) points."""
    channels = gen.check_layer(LAYER)[0]
    initial_parts = model("pgd", channels, seed).P.detach().clone()
    clock, curve = Clock(), []
    scatter = 0
    for i in range(8):  # 1,024 samples for the HOSVD init
        latents = gen.sample_latents(128, batch_generator(seed, Stream.INIT, i))
        scatter = scatter + fz.channel_scatter(fz.flatten_features(layer_features(gen, LAYER, latents)))
    rng = batch_generator(seed, Stream.TRAIN, 0)
    samples = (fz.flatten_features(layer_features(gen, LAYER, gen.sample_latents(1, rng))) for _ in range(steps))
    for step, (A, P) in enumerate(fz.reference_factorization(scatter, samples, initial_parts, channels, lr), start=1):
        if step % every == 0:
            began = time.perf_counter()
            clock.record(curve, held_out(A, P), began)
    return curve


def bare_trainer(steps: int, callback: pl.Callback) -> pl.Trainer:
    """A CPU trainer without validation, logging, checkpoints or progress bar: only the timed work."""
    return pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[callback],
    )


class Probe(pl.Callback):
    """Held-out error after every ``every`` training steps, on a clock started with ``fit``."""

    def __init__(self, held_out: HeldOut, every: int) -> None:
        self.held_out, self.every, self.curve = held_out, every, []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: PandA) -> None:
        self.clock = Clock()  # before the HOSVD initialisation (where there is one), which counts

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: PandA, *args: object) -> None:
        if trainer.global_step % self.every == 0:
            began = time.perf_counter()
            self.clock.record(self.curve, self.held_out(pl_module.A.detach(), pl_module.P.detach()), began)


def setup(
    gen: DCGANFaces, solver: str, appearances: int | None, seed: int, init_samples: int, precision: str, **options
) -> tuple[PandA, FeatureDataModule]:
    """The module (train.py's model settings, the solver's ``options`` overridden) and the data module of a run."""
    data = FeatureDataModule(
        gen, LAYER, batch_size=BATCH, seed=seed, val_samples=64, init_samples=init_samples, precision=precision
    )
    return model(solver, appearances, seed, **options), data


def panda(
    gen: DCGANFaces,
    held_out: HeldOut,
    solver: str,
    steps: int,
    every: int,
    seed: int = SEED,
    appearances: int | None = None,
    precision: str = "fp32",
    **options,
) -> list[tuple[float, float]]:
    """Panda's training with ``model/solver=solver``, ``R_C = appearances`` (``None``: ``C``), the
    solver's ``options`` and otherwise train.py's model settings (``seed`` seeds the data streams and
    ``P``'s initialisation), its generator forward in ``precision`` (``data.precision``)."""
    module, data = setup(gen, solver, appearances, seed, init_samples=1024, precision=precision, **options)
    probe = Probe(held_out, every)
    trainer = bare_trainer(steps, probe)
    trainer.fit(module, datamodule=data)
    return probe.curve


class StepTimes(pl.Callback):
    """The time at the end of every training step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(time.perf_counter())


def throughput(gen: DCGANFaces, steps: int = 100, repeats: int = 5) -> dict[str, tuple[float, float]]:
    """``(samples/s, share of the bare forward)`` of each solver's training steps, in each precision.

    This shared machine's speed drifts by 10-20 % over tens of seconds, so every training block of
    ``steps`` steps is compared with bare truncated forwards (same batch size, same precision) timed
    right before and right after it; the share is the median over ``repeats`` such blocks, the rates
    are medians.
    """
    latents = gen.sample_latents(BATCH, torch.Generator().manual_seed(0))

    def bare(precision: str) -> float:
        with torch.inference_mode(), forward_precision(gen.device, precision):
            gen.features(latents, LAYER)
            began = time.perf_counter()
            for _ in range(steps // 3):
                gen.features(latents, LAYER)
        return BATCH * (steps // 3) / (time.perf_counter() - began)

    rates: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for precision, appearances, solver in itertools.product(
            PRECISIONS, (None, DEFAULT_APPEARANCES), ("stats", "pgd")
        ):
            before = bare(precision)
            timer = StepTimes()
            module, data = setup(gen, solver, appearances, SEED, init_samples=64, precision=precision)
            bare_trainer(steps + 10, timer).fit(module, datamodule=data)
            rate = BATCH * steps / (timer.times[-1] - timer.times[9])
            forward = (before + bare(precision)) / 2
            ranks = f"R_C = {module.hparams.appearances}" + (" (earlier default)" if appearances else "")
            rates.setdefault(f"bare forward to main.8, {precision}", []).append((forward, 1.0))
            rates.setdefault(f"training, {precision}, solver={solver}, {ranks}", []).append((rate, rate / forward))
    return {
        name: (statistics.median(r for r, _ in values), statistics.median(s for _, s in values))
        for name, values in sorted(rates.items(), key=lambda item: not item[0].startswith("bare"))
    }


def peak_memory_mb(steps: int, solver: str) -> float:
    """Peak resident memory of a ``train.py`` run of ``steps`` batches of 64 samples, in a run directory of its own
    (a directory holds one run's settings: train.py refuses another solver's run there)."""
    run_dir = tempfile.mkdtemp(prefix="panda-memory-benchmark-")
    command = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        sys.executable,
        str(ROOT / "train.py"),
        f"trainer.max_steps={steps}",
        f"model/solver={solver}",
        f"rank.parts={PARTS}",
        "rank.appearances=null",
        "logger=none",
        "callbacks=none",
        "trainer.val_check_interval=1000000",
        f"hydra.run.dir={run_dir}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
    ]
    try:
        return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()) / 1024
    finally:
        shutil.rmtree(run_dir)


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, e in curve if e <= target), None)


def reach(curve: list[tuple[float, float]], target: float, target_time: float) -> str:
    """When ``curve`` first reaches the error ``target`` (reached by the reference in ``target_time`` s)."""
    t = time_to(curve, target)
    return "never" if t is None else f"{t:.1f} ({target_time / t:.1f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="reference steps")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-6, 5e-6, 1e-5, 1.5e-5, 2e-5])
    parser.add_argument("--held-out", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of the reference and stats solver table")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    pl.seed_everything(SEED)
    gen = DCGANFaces()
    held_out = HeldOut(gen, args.held_out)

    references = {  # (seed, lr): curve; every seed's reference on its own data streams and initial parts
        (seed, lr): reference(gen, held_out, lr, args.steps, every=max(args.steps // 20, 1), seed=seed)
        for seed in range(args.seeds)
        for lr in args.lrs
    }
    for (seed, lr), curve in references.items():
        print(f"reference seed={seed} lr={lr:g}: final {curve[-1]}", flush=True)
    best_lr = {seed: min(args.lrs, key=lambda lr: references[seed, lr][-1][1]) for seed in range(args.seeds)}
    seed_final = {seed: references[seed, lr][-1] for seed, lr in best_lr.items()}  # (wall s, error), best lr
    curves = {f"reference lr={lr:g}": references[SEED, lr] for lr in args.lrs}
    best = f"reference lr={best_lr[SEED]:g}"
    ref_time, ref_error = seed_final[SEED]
    stats_fp32 = "panda stats (defaults: model.solver.first_pass=auto, appearances first at R_C = C)"
    stats_bf16 = "panda stats (defaults), data.precision=bf16"
    curves[stats_fp32] = panda(gen, held_out, "stats", steps=200, every=4)
    curves["panda stats, model.solver.first_pass=parts"] = panda(
        gen, held_out, "stats", steps=200, every=4, first_pass="parts"
    )
    curves["panda pgd (Adam)"] = panda(gen, held_out, "pgd", steps=600, every=25)
    curves[stats_bf16] = panda(gen, held_out, "stats", steps=200, every=4, precision="bf16")
    for name, curve in curves.items():
        if name.startswith("panda"):
            print(f"{name}: {curve}", flush=True)
    seeds = {(SEED, "fp32"): curves[stats_fp32], (SEED, "bf16"): curves[stats_bf16]}  # seed 0 ran above
    seeds |= {
        (seed, precision): panda(gen, held_out, "stats", steps=200, every=4, seed=seed, precision=precision)
        for seed in range(1, args.seeds)
        for precision in PRECISIONS
    }
    # the strictest target: the lowest final error of any seed's best reference run
    low_seed = min(seed_final, key=lambda seed: seed_final[seed][1])
    low_time, low_error = seed_final[low_seed]
    default_ranks = {  # train.py's earlier defaults: pgd's R_C = 16, 600 steps
        (solver, precision): panda(
            gen, held_out, solver, steps=600, every=600, appearances=DEFAULT_APPEARANCES, precision=precision
        )[-1]
        for solver in ("pgd", "stats")
        for precision in PRECISIONS
    }

    rows = [
        (
            "method",
            "final held-out rel. error",
            "wall s (final)",
            "s to reach the reference's final error (speed-up)",
            f"s to reach it within {TOLERANCE:.1%} (speed-up)",
        )
    ]
    for name, curve in curves.items():
        cells = [reach(curve, target, ref_time) for target in (ref_error, ref_error * (1 + TOLERANCE))]
        rows.append((name, f"{curve[-1][1]:.4f}", f"{curve[-1][0]:.1f}", *cells))
    rates = throughput(gen)
    memory = {(solver, steps): peak_memory_mb(steps, solver) for solver in ("stats", "pgd") for steps in (20, 200)}

    lines = [
        "# Solver benchmark (CPU)",
        "",
        f"DCGAN faces, layer {LAYER} (128x16x16), R_S = {PARTS}, R_C = C = 128; held-out set of {args.held_out} "
        f"samples; {torch.get_num_threads()} CPU threads. Reference: batch 1, {args.steps} steps, best learning "
        f"rate of {args.lrs} is {best.split('=')[1]}. Produced by `python experiments/benchmark_solvers.py`.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *["| " + " | ".join(r) + " |" for r in rows[1:]],
        "",
        f"## Every seed ({args.seeds}): the reference and the stats solver (defaults) from the seed's initial "
        "parts, each on the seed's data streams; same held-out set",
        "",
        f"Each seed's reference is the best of the same learning-rate grid on that seed. The last column holds "
        f"every run to the lowest of these references' final errors ({low_error:.4f}, seed {low_seed}, "
        f"{low_time:.1f} s).",
        "",
        "| seed | reference: best lr | its final error | its wall s | panda data.precision | panda final error "
        "| s to reach the seed's reference's final error (speed-up) | s to reach the lowest reference's (speed-up) |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {seed} | {best_lr[seed]:g} | {seed_final[seed][1]:.4f} | {seed_final[seed][0]:.1f} "
            f"| {precision} | {curve[-1][1]:.4f} | "
            + reach(curve, seed_final[seed][1], seed_final[seed][0])
            + " | "
            + reach(curve, low_error, low_time)
            + " |"
            for (seed, precision), curve in seeds.items()
        ],
        "",
        f"## Both solvers at train.py's earlier defaults (R_C = {DEFAULT_APPEARANCES}, 600 steps of 64 samples)",
        "",
        "| solver | data.precision | final held-out rel. error | wall s |",
        "|---|---|---|---|",
        *[
            f"| {solver} | {precision} | {error:.4f} | {t:.1f} |"
            for (solver, precision), (t, error) in default_ranks.items()
        ],
        "",
        "## Feature streaming (batch 64)",
        "",
        "Each training block of 100 steps is compared with bare forwards in the same precision timed right "
        "before and after it; medians of 5 blocks.",
        "",
        "| what | samples/s | share of the bare forward in its precision |",
        "|---|---|---|",
        *[f"| {k} | {rate:.0f} | {share:.0%} |" for k, (rate, share) in rates.items()],
        "",
        "## Peak memory of `train.py` (64 samples a step, R_C = C)",
        "",
        "| solver | 20 steps (1,280 samples) | 200 steps (12,800 samples) | change |",
        "|---|---|---|---|",
        *[
            f"| {s} | {memory[s, 20]:.0f} MB | {memory[s, 200]:.0f} MB | {memory[s, 200] / memory[s, 20] - 1:+.1%} |"
            for s in ("stats", "pgd")
        ],
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "solvers_cpu.md"
    reading = report.read_text().partition(READING)[2] if report.is_file() else ""
    atomic_write(report, ("\n".join(lines) + (f"{READING}{reading}" if reading else "")).encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "seconds", "held_out_rel_error"])
    seed_curves = {
        f"panda stats seed={seed} {precision}": curve for (seed, precision), curve in seeds.items() if seed != SEED
    }
    seed_curves |= {
        f"reference seed={seed} lr={lr:g}": curve for (seed, lr), curve in references.items() if seed != SEED
    }
    writer.writerows((name, f"{t:.3f}", f"{e:.6f}") for name, curve in (curves | seed_curves).items() for t, e in curve)
    atomic_write(args.out / "solvers_cpu.csv", buffer.getvalue().encode())
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(*zip(*curve, strict=True), label=name, lw=2 if name.startswith("panda") or name == best else 0.8)
    for i, curve in enumerate(
        curve for (seed, precision), curve in seeds.items() if seed != SEED and precision == "fp32"
    ):
        label = "panda stats, other seeds" if i == 0 else None
        ax.plot(*zip(*curve, strict=True), color="gray", lw=0.6, ls="--", label=label)
    ax.axhline(ref_error, color="gray", ls=":", lw=1)
    ax.set(xscale="log", xlabel="wall time (s, log)", ylabel="held-out relative error", ylim=(ref_error - 0.02, 0.8))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(args.out / "solvers_cpu.png", buffer.getvalue())
    print("\n".join(lines))
    print("peak RSS of this process:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MB")


if __name__ == "__main__":
    main()
