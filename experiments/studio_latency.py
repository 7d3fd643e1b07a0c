"""Server-side latency of one studio edit update: a strength-slider move, from the new strength to the shown image.

One update is :meth:`panda.studio.core.Studio.set_strength` and :meth:`~panda.studio.core.Studio.live`
(the edit's feature offset, the generator resumed from the cached features of the sample, the image
at the display size) followed by the PNG encoding Gradio does before sending it. Measured on the
default DCGAN and on StyleGAN2 with random weights (``gen.random_init=true``) at 256 and 1024 px,
each with made-up factors at the generator's default layer and suggested ranks (the latency does
not depend on what the factors learnt)::

    python experiments/studio_latency.py                     # writes experiments/results/studio_latency.md
    python experiments/studio_latency.py --threads 1 --updates 20 --out /tmp/latency.md
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from panda.base.files import atomic_write
from panda.generators import load_generator
from panda.generators.base import FeatureGenerator
from panda.method.factorization import orthonormalize
from panda.studio.core import Session, Settings, Studio
from panda.uses.factors import Factors

ROOT = Path(__file__).resolve().parents[1]
READING = "\n## Reading\n"  # the hand-written part of the results file, kept when the table is rewritten
STYLEGAN2 = "stylegan2_ffhq"


def stylegan2(resolution: int) -> FeatureGenerator:
    """StyleGAN2 FFHQ's architecture at ``resolution`` px with random weights."""
    arch = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "gen" / f"{STYLEGAN2}.yaml").net.arch)
    return load_generator(STYLEGAN2, random_init=True, arch={**arch, "img_resolution": resolution})


CASES = {  # label -> (generator, layer, R_S, R_C): the default layers and suggested ranks of README's table
    "DCGAN faces, 64 px": (lambda: load_generator("dcgan_faces"), "main.8", 8, 16),
    "StyleGAN2 (random weights), 256 px": (lambda: stylegan2(256), "synthesis.b16.conv1", 8, 512),
    "StyleGAN2 (random weights), 1024 px": (lambda: stylegan2(1024), "synthesis.b16.conv1", 8, 512),
}


def made_up_run(gen: FeatureGenerator, name: str, layer: str, parts: int, appearances: int) -> Factors:
    """A run of ``gen`` with orthonormal random appearances and uniform random parts."""
    shape = gen.check_layer(layer)
    generator = torch.Generator().manual_seed(0)
    A = orthonormalize(torch.randn(shape[0], appearances, generator=generator))
    P = torch.rand(shape[1] * shape[2], parts, generator=generator)
    return Factors(A=A, P=P, generator=gen, name=name, layer=layer, feature_shape=shape)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def measure(label: str, threads: int, updates: int, statistics: int) -> dict[str, float | str]:
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    build, layer, parts, appearances = CASES[label]
    gen = build()
    run = made_up_run(gen, gen.name, layer, parts, appearances)
    options = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "studio.yaml").eval)
    with tempfile.TemporaryDirectory() as run_dir:
        settings = Settings.from_config({**options, "statistics": statistics, "batch_size": statistics}, run_dir)
    start = time.perf_counter()
    studio = Studio(run, settings, [f"part {k}" for k in range(parts)], seed=0)
    started = time.perf_counter() - start
    start = time.perf_counter()
    session = studio.load(Session(), 0)
    loaded = time.perf_counter() - start
    session = studio.choose_appearance(session, 1)
    strengths = [s for s in np.linspace(*settings.strength[:2], 41) if s != 0]
    walls, encodes, cpus = [], [], []
    for i in range(updates + 2):  # the first two warm up
        start, cpu = time.perf_counter(), time.process_time()
        image = studio.live(studio.set_strength(session, float(strengths[i % len(strengths)])))
        middle = time.perf_counter()
        png_bytes(image)
        end = time.perf_counter()
        if i >= 2:
            walls.append(end - start)
            encodes.append(end - middle)
            cpus.append(time.process_time() - cpu)
    forwards = []
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            gen(session.sample.latents)
            forwards.append(time.perf_counter() - start)
    forward = float(np.median(forwards))
    ms = 1000
    return {
        "case": label,
        "threads": str(threads),
        "load": load,
        "update p50 ms": np.percentile(walls, 50) * ms,
        "update p95 ms": np.percentile(walls, 95) * ms,
        "of which PNG p50 ms": np.percentile(encodes, 50) * ms,
        "CPU ms per update (all threads), p50": np.percentile(cpus, 50) * ms,
        "full forward ms": forward * ms,
        "update p50 / full forward": np.percentile(walls, 50) / forward,
        "sample load ms": loaded * ms,
        f"start-up s ({statistics} statistics samples)": started,
    }


def table(rows: list[dict[str, float | str]]) -> str:
    def cell(value: float | str) -> str:
        return value if isinstance(value, str) else f"{value:.3g}" if value < 100 else f"{value:.0f}"

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join([*lines, *("| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=50, help="timed slider moves per generator")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch CPU threads, one row each")
    parser.add_argument("--statistics", type=int, default=100, help="samples behind the studio's thresholds")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "studio_latency.md")
    args = parser.parse_args()
    rows = []
    for label in args.cases:
        for threads in args.threads:
            rows.append(measure(label, threads, args.updates, args.statistics))
            print(table(rows[-1:]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    text = (
        "# Studio: server-side latency of one edit update\n\n"
        "`python experiments/studio_latency.py` (see its docstring): one update is a strength-slider move, from the "
        "new strength to the shown image encoded as PNG; made-up factors at each generator's default layer.\n\n"
        f"{table(rows)}\n\n{args.updates} timed updates per row (after 2 warm-up ones); threads: torch's CPU threads; "
        f"load: the machine's 1-minute load average when the row started; {machine}. "
        "'full forward' is the median of 3 unedited forward passes of the whole generator; an update runs only "
        "the layers after the edited one, so 'update p50 / full forward' is about the share of the forward that "
        "follows the layer.\n"
    )
    previous = args.out.read_text().partition(READING)[2] if args.out.is_file() else ""  # the hand-written reading
    atomic_write(args.out, (text + (f"{READING}{previous}" if previous else "")).encode())
    print(text)


if __name__ == "__main__":
    main()
