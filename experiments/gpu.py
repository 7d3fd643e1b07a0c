"""What a CUDA GPU gives: training throughput, the truncated forward of a large generator, and ``experiment=fast``
against the authors' reference algorithm. Writes ``experiments/results/gpu.md``; without a CUDA GPU it refuses in
one line (exit code 2).

    python experiments/gpu.py

1. Training throughput: ``python train.py`` (the default) and ``python train.py experiment=fast``, each a
   process as a user runs it (``trainer.accelerator: auto`` trains on the GPU): samples/s of training
   (``metrics.json``: samples / ``fit_seconds``), the whole command's wall seconds, the final validation error.
2. StyleGAN2 1024 px with random weights (``gen=stylegan2_ffhq gen.random_init=true``): samples/s of the forward
   truncated at PandA's layer ``synthesis.b16.conv1`` (what training streams) against the bare full forward,
   batch ``--batch``, in float32 and under bfloat16 autocast (``data.precision=bf16``).
3. ``experiment=fast`` against the reference algorithm, at the reference's setting of
   ``experiments/benchmark_commands.py`` (DCGAN faces, ``main.8``, R_S = 8, R_C = C): the reference
   (:func:`panda.method.factorization.reference_factorization`: batch 1, 10,000 steps at the learning rate of
   that benchmark, from panda's initial parts) on the GPU in this process, its time without evaluation; then
   ``python train.py experiment=fast`` at that setting. Both are scored on ``train.py``'s own validation set
   (512 samples of the validation stream); the time ``experiment=fast`` took to reach the reference's final error
   is that of its first validation at or below it, prorated from ``fit_seconds`` by steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

REFUSAL = (
    "experiments/gpu.py needs a CUDA GPU and torch sees none here; on a machine with one, "
    "`python experiments/gpu.py` writes experiments/results/gpu.md"
)
if __name__ == "__main__" and not torch.cuda.is_available():  # before the imports below, which take seconds
    print(REFUSAL, file=sys.stderr)
    raise SystemExit(2)

from benchmark_commands import FAST, REFERENCE_LR  # noqa: E402  (the reference's setting and learning rate)
from benchmark_solvers import LAYER, SEED, model  # noqa: E402  (panda's initial parts at that setting)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.config import compose, instantiate  # noqa: E402
from panda.base.files import atomic_write  # noqa: E402
from panda.generators.dcgan import DCGANFaces  # noqa: E402
from panda.method import factorization as fz  # noqa: E402
from panda.method.data import FeatureDataModule, Stream, batch_generator, forward_precision, layer_features  # noqa: E402

DEVICE = "cuda"
STYLEGAN2 = ["gen=stylegan2_ffhq", "gen.random_init=true"]  # 1024 px, the config's architecture


def train(overrides: list[str], run_dir: Path) -> tuple[float, dict, list[tuple[int, float]]]:
    """Wall seconds of ``python train.py overrides`` into ``run_dir``, its ``metrics.json`` and its validation
    curve ``[(step, val/rel_error)]``."""
    start = time.perf_counter()
    command = [sys.executable, "train.py", *overrides, "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise SystemExit(f"`{' '.join(command[1:])}` failed (exit {done.returncode}):\n{tail}")
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/rel_error")]
    curve = [(int(row["step"]) + 1, float(row["val/rel_error"])) for row in rows]
    return wall, json.loads((run_dir / "metrics.json").read_text()), curve


def rate(run: Callable[[], object], batch: int, repeats: int) -> float:
    """Samples/s of ``run()`` on a batch of ``batch``: ``repeats`` runs after two warm-up runs, synchronised."""
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def truncated_against_full(batch: int, repeats: int) -> list[str]:
    """Table rows: StyleGAN2 1024's truncated and full forward, samples/s, in float32 and bfloat16 autocast."""
    cfg = compose("train", STYLEGAN2)
    gen = instantiate(cfg.gen.net).to(DEVICE)
    latents = torch.randn(batch, gen.net.z_dim, device=DEVICE)
    rows = []
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), forward_precision(gen.device, precision):
            truncated = rate(lambda: gen.features(latents, cfg.gen.layer), batch, repeats)
            full = rate(lambda: gen(latents), batch, repeats)
        rows.append(f"| {precision} | {batch} | {truncated:,.0f} | {full:,.1f} | {truncated / full:.1f}x |")
    return rows


def reference_on_gpu(steps: int, lr: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The reference algorithm on the GPU at the setting of ``experiments/benchmark_solvers.py`` (as its
    ``reference``: HOSVD on 1,024 samples of the initialisation stream, panda's initial parts, single samples of
    the training stream): its seconds (synchronised, no evaluation) and final ``A``, ``P``."""
    gen = DCGANFaces().to(DEVICE)
    channels = gen.check_layer(LAYER)[0]
    parts = model("pgd", channels, SEED).P.detach().clone().to(DEVICE)
    torch.cuda.synchronize()
    start = time.perf_counter()
    scatter = 0
    for i in range(8):
        latents = gen.sample_latents(128, batch_generator(SEED, Stream.INIT, i))
        scatter = scatter + fz.channel_scatter(fz.flatten_features(layer_features(gen, LAYER, latents)))
    rng = batch_generator(SEED, Stream.TRAIN, 0)
    samples = (fz.flatten_features(layer_features(gen, LAYER, gen.sample_latents(1, rng))) for _ in range(steps))
    A, P = deque(fz.reference_factorization(scatter, samples, parts, channels, lr), maxlen=1)[0]
    torch.cuda.synchronize()
    return time.perf_counter() - start, A, P


def validation_error(A: torch.Tensor, P: torch.Tensor) -> float:
    """Relative error of ``A``, ``P`` on ``train.py``'s validation set at the reference's setting (DCGAN ``main.8``,
    512 samples of the validation stream of seed 0, batches of 64, float32)."""
    data = FeatureDataModule(DCGANFaces().to(DEVICE), LAYER)
    error = norm = 0.0
    with torch.no_grad():
        for batch in data.val_dataloader():
            Z = fz.flatten_features(batch)
            error += fz.squared_error(Z, A.to(DEVICE), P.to(DEVICE)).item()
            norm += Z.square().sum().item()
    return error / norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="StyleGAN2 1024's batch")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches of each forward")
    parser.add_argument("--steps", type=int, default=10_000, help="the reference's steps")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "gpu.md")
    args = parser.parse_args()
    device = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(prefix="panda-gpu-") as scratch:
        commands = {"python train.py": [], "python train.py experiment=fast": ["experiment=fast"]}
        throughput = []
        for index, (label, overrides) in enumerate(commands.items()):
            wall, metrics, _ = train(overrides, Path(scratch) / f"run{index}")
            throughput.append(
                f"| `{label}` | {metrics['steps']} | {metrics['samples']:,} | {metrics['fit_seconds']:.1f} "
                f"| {metrics['samples'] / metrics['fit_seconds']:,.0f} | {wall:.1f} | {metrics['val_rel_error']:.4f} |"
            )
        forwards = truncated_against_full(args.batch, args.repeats)
        ref_seconds, A, P = reference_on_gpu(args.steps, REFERENCE_LR)
        ref_error = validation_error(A, P)
        wall, metrics, curve = train(FAST, Path(scratch) / "fast")
        reached = next((step for step, error in curve if error <= ref_error), None)
        factors = torch.load(Path(scratch) / "fast" / "factors.pt", weights_only=True)
        fast_error = validation_error(factors["A"], factors["P"])
    fast_seconds = metrics["fit_seconds"]
    to_target = None if reached is None else fast_seconds * reached / metrics["steps"]
    lines = [
        "# On a GPU",
        "",
        f"{device}; torch {torch.__version__}, CUDA {torch.version.cuda}. Produced by "
        f"`python experiments/gpu.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`.",
        "",
        "## Training throughput",
        "",
        "| command | steps | samples | training s (`fit_seconds`) | samples/s | whole command s | final val error |",
        "|---|---|---|---|---|---|---|",
        *throughput,
        "",
        "## StyleGAN2 1024 px (random weights): the forward to PandA's layer against the full forward",
        "",
        "| precision | batch | to `synthesis.b16.conv1`, samples/s | full forward, samples/s | ratio |",
        "|---|---|---|---|---|",
        *forwards,
        "",
        "## experiment=fast against the reference algorithm (DCGAN faces, main.8, R_S = 8, R_C = C)",
        "",
        f"Reference: batch 1, {args.steps:,} steps, lr {REFERENCE_LR:g}, on the GPU: **{ref_seconds:.1f} s**, "
        f"final validation error **{ref_error:.4f}** (train.py's validation set, 512 samples). "
        f"`python train.py {' '.join(FAST)}`: {metrics['steps']} steps, training {fast_seconds:.1f} s (whole "
        f"command {wall:.1f} s), final validation error {fast_error:.4f}.",
        "",
        "| | seconds | the reference's over it |",
        "|---|---|---|",
        f"| reference, to its final error | {ref_seconds:.1f} | 1.0x |",
        (
            f"| experiment=fast, to the reference's final error (validation at step {reached}) | {to_target:.1f} "
            f"| {ref_seconds / to_target:.1f}x |"
            if to_target
            else "| experiment=fast, to the reference's final error | never reached | - |"
        ),
        f"| experiment=fast, its whole training | {fast_seconds:.1f} | {ref_seconds / fast_seconds:.1f}x |",
        f"| experiment=fast, its whole command | {wall:.1f} | {ref_seconds / wall:.1f}x |",
        "",
    ]
    atomic_write(args.out, "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
