"""Where the ROIR test pass spends its time per sample: the generator, dlib's landmarks (fresh and from the
landmark cache of ``eval.landmark_cache``) and the region masks, on the default DCGAN.

    python experiments/roir_stages.py               # 200 test samples -> experiments/results/roir_stages.md
    python experiments/roir_stages.py --batches 5   # 500

The baselines' fitting and the direction search are timed by ``evaluate.py task=roir`` itself (its log and
the ``find_seconds`` column). Other processes on the machine slow every stage: the report records the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.files import atomic_write  # noqa: E402
from panda.generators.dcgan import DCGANFaces  # noqa: E402
from panda.method.data import Stream, batch_generator  # noqa: E402
from panda.uses.landmarks import LandmarkDetector, detect, roi_masks  # noqa: E402
from panda.uses.visualize import to_uint8  # noqa: E402

BATCH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2, help=f"test batches of {BATCH} samples")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "roir_stages.md")
    args = parser.parse_args()
    gen, detector = DCGANFaces(), LandmarkDetector(256, min_face=0.25)
    cache = Path(tempfile.mkdtemp())
    seconds = dict.fromkeys(("generator", "landmarks", "landmarks from the cache", "masks (3 regions)"), 0.0)
    load = os.getloadavg()[0]
    for index in range(args.batches):
        latents = gen.sample_latents(BATCH, batch_generator(0, Stream.TEST, index))
        start = time.perf_counter()
        with torch.inference_mode():
            images = to_uint8(gen(latents))
        seconds["generator"] += time.perf_counter() - start
        start = time.perf_counter()
        fresh = detect(detector, images, cache)
        seconds["landmarks"] += time.perf_counter() - start
        start = time.perf_counter()
        cached = detect(detector, images, cache)
        seconds["landmarks from the cache"] += time.perf_counter() - start
        assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(fresh, cached, strict=True))
        start = time.perf_counter()
        for region in ("eyes", "nose", "mouth"):
            roi_masks(fresh, images.shape[1], region, dilation=1)
        seconds["masks (3 regions)"] += time.perf_counter() - start
    samples = args.batches * BATCH
    per = {stage: s / samples for stage, s in seconds.items()}
    rows = "\n".join(f"| {stage} | {1000 * s:.2f} | {10_000 * s:.0f} |" for stage, s in per.items())
    shared = " (other processes shared the cores: the times are upper bounds of an idle machine's)" if load > 1 else ""
    report = f"""# Time of the ROIR test pass per sample (default DCGAN)

Produced by `python experiments/roir_stages.py --batches {args.batches}` ({samples} test samples, batches of
{BATCH}) on {os.cpu_count()} CPU cores, {platform.machine()}; load average {load:.1f} at the start{shared}.

| stage | ms per sample | s per 10,000 samples |
|---|---|---|
{rows}

Of these stages dlib's landmarks take the most; the rest of the test pass is each method's edits of every
face (`evaluate.py task=roir` times the whole: experiments/results/roir_dcgan.md). `eval.landmark_cache` (on)
keeps the landmarks per batch under the hash of its pixels, so an evaluation of another run of the same
generator (a sweep) reads them back (same landmarks, as the script checks) instead of running dlib.
"""
    atomic_write(args.out, report.encode())
    print(report)


if __name__ == "__main__":
    main()
