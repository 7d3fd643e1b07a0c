"""One measurement of ``experiments/scaling_methods.py``, in a process of its own:

    python experiments/scaling_jobs.py '<job as JSON>'

The job gives the generator (``overrides`` of ``train.py``), its ``kind`` (:data:`JOBS`) and its sizes; the result
is printed as the last line of stdout (JSON). It holds this process's peak resident memory once the generator was
built and had run one sample (``loaded_mb``), and, for each size run, its seconds and the process's peak memory
after it. Sizes run in increasing order, so each peak is that size's where memory grows with the size. A warm-up
runs first, untimed: the first call of torch's forward-mode products and of a forward pays a one-time start-up
that a longer process pays once.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jvp, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panda.base.config import compose, instantiate
from panda.generators.base import FeatureGenerator
from panda.method.data import Stream, batch_generator
from panda.roir.baselines import BASELINES, LowRankGAN, Need, ReSeFa, StyleSpace
from panda.roir.baselines.base import first_codes
from panda.roir.editors import direction_seconds
from panda.roir.settings import ROIRSettings

REGIONS = {  # fixed boxes (top, bottom, left, right, as fractions of the image) for the benchmark's three regions
    "eyes": (0.35, 0.45, 0.25, 0.75),
    "nose": (0.45, 0.62, 0.40, 0.60),
    "mouth": (0.65, 0.78, 0.33, 0.67),
}


def peak_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run: Callable[[], object]) -> float:
    """Seconds ``run()`` takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def generator(overrides: list[str]) -> tuple[FeatureGenerator, str]:
    """The generator ``train.py overrides`` builds, run once on one sample, and its layer (``gen.layer``)."""
    cfg = compose("train", overrides)
    gen = instantiate(cfg.gen.net)
    gen.check_layer(cfg.gen.layer)  # a forward of one sample
    return gen, cfg.gen.layer


def baseline_options() -> dict[str, dict[str, Any]]:
    """Each baseline's options, as the ROIR benchmark builds it (``conf/roir/default.yaml``)."""
    return ROIRSettings.from_config(compose("evaluate", ["task=roir"]).eval, "eval").baselines


def calibration(gen: FeatureGenerator, samples: int) -> Tensor:
    """``samples`` latents of the calibration stream (the benchmark fits the region methods on such)."""
    return gen.sample_latents(samples, batch_generator(0, Stream.CALIBRATION, 0))


def image_size(gen: FeatureGenerator) -> int:
    """The side of the generator's images (its largest feature map)."""
    return max(shape[1] for shape in gen.layer_shapes().values())


def boxes(size: int, samples: int) -> dict[str, Tensor]:
    """region -> mask ``[samples, 1, size, size]``, the region's box of :data:`REGIONS`."""
    masks = {}
    for region, (top, bottom, left, right) in REGIONS.items():
        mask = torch.zeros(samples, 1, size, size)
        mask[..., round(top * size) : round(bottom * size), round(left * size) : round(right * size)] = 1
        masks[region] = mask
    return masks


def forwards(gen: FeatureGenerator, layer: str, job: dict[str, Any]) -> dict[str, Any]:
    """The generator's sizes, and its seconds per sample of the forward truncated at PandA's ``layer`` (batch
    ``job['batch']``, the mean of two runs after a first) and of the full forward (batch ``job['full_batch']``,
    after a full forward of one sample)."""
    latents = gen.sample_latents(job["batch"], torch.Generator().manual_seed(0))
    with torch.inference_mode():
        code_dim = first_codes(gen.codes(latents[:1])).shape[1]
        gen.features(latents, layer)
        truncated = sum(timed(lambda: gen.features(latents, layer)) for _ in range(2)) / 2 / len(latents)
        gen(latents[:1])
        full = timed(lambda: gen(latents[: job["full_batch"]])) / job["full_batch"]
    return {
        "truncated_s": truncated,
        "full_s": full,
        "code_dim": code_dim,
        "style_channels": sum(gen.net.get_submodule(path).weight.shape[0] for path in gen.style_layers()),
        "layer_shape": list(gen.check_layer(layer)),
        "image": image_size(gen),
        "threads": torch.get_num_threads(),
    }


def fit(gen: FeatureGenerator, layer: str, job: dict[str, Any]) -> dict[str, Any]:
    """A baseline's seconds to find its directions as the benchmark fits it, at ``job['warmup']`` samples
    (untimed) and then at each of ``job['sizes']``: GANSpace's ``samples``, the region-conditioned methods'
    calibration latents (three regions), SeFa none."""
    method = job["method"]
    cls, options = BASELINES[method], baseline_options()[method]

    def seconds(samples: int) -> float:
        chosen = {**options, "samples": samples} if method == "ganspace" else options
        editor = cls(gen, **chosen)
        if Need.REGION_FIT in cls.needs:
            editors = editor.fit_regions(calibration(gen, samples), boxes(image_size(gen), samples))
            return direction_seconds(editors)
        return editor.fit(calibration(gen, 1)).seconds

    seconds(job["warmup"])
    return {"points": [[samples, seconds(samples), peak_mb()] for samples in sorted(job["sizes"])]}


def jacobian(gen: FeatureGenerator, layer: str, job: dict[str, Any]) -> dict[str, Any]:
    """Seconds of chunks of one sample's Jacobian columns, computed as
    :func:`panda.roir.baselines.jacobian.region_statistics` computes each chunk (forward-mode products through the
    whole synthesis, vmapped over the chunk's columns, of the images area-downsampled to ``resolution``): chunks
    of ``job['chunks']`` columns, then of the default ``chunk`` when the memory the chunks' peaks predict for it
    stays under ``job['budget_mb']`` (a chunk under two seconds: the median of several). A chunk through the small
    ``job['twin']`` of the generator warms up first.
    Also the seconds of one sample's accumulation into the three regions' statistics and of each method's three
    solves (on made-up statistics of the same size)."""
    options = baseline_options()["resefa"]

    def chunk(gen: FeatureGenerator, columns: int) -> float:
        code = calibration(gen, 1)
        code = gen.codes(code).detach()
        size = min(options["resolution"], image_size(gen))

        def image(v: Tensor) -> Tensor:
            x = gen.synthesize(code + v)
            return F.adaptive_avg_pool2d(x, size).flatten() if x.shape[-1] != size else x.flatten()

        zero = torch.zeros(code.shape[-1])
        basis = torch.eye(len(zero))[:columns]
        return timed(lambda: vmap(lambda t: jvp(image, (zero,), (t,))[1], chunk_size=columns)(basis))

    def seconds(columns: int) -> float:
        """The chunk's seconds: the median of several where a chunk takes less than two seconds (noise)."""
        times = [chunk(gen, columns)]
        while sum(times) < 2 and len(times) < 9:
            times.append(chunk(gen, columns))
        return statistics.median(times)

    chunk(generator(job["twin"])[0], 2)
    points = [[columns, seconds(columns), peak_mb()] for columns in sorted(job["chunks"])]
    (c1, _, m1), (c2, _, m2) = points[0], points[-1]
    predicted = m2 + (m2 - m1) / (c2 - c1) * (options["chunk"] - c2)
    if options["chunk"] > c2 and predicted <= job["budget_mb"]:
        points.append([options["chunk"], seconds(options["chunk"]), peak_mb()])
    dim, size = first_codes(gen.codes(calibration(gen, 1))).shape[1], min(options["resolution"], image_size(gen))
    columns = torch.randn(3 * size * size, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = [mask[0].expand(3, size, size).reshape(-1, 1).double() for mask in boxes(size, 1).values()]
    accumulate = timed(lambda: [(columns.T @ (w * columns), columns.T @ ((1 - w) * columns)) for w in weights])
    made_up = columns.T @ columns / len(columns)
    region, background = made_up, made_up + torch.eye(dim, dtype=torch.float64)
    solves = {}
    for cls in (LowRankGAN, ReSeFa):
        solver = cls(gen, **baseline_options()[cls.name])
        solves[cls.name] = timed(lambda s=solver: [s.solve(region, background) for _ in REGIONS])
    return {
        "chunks": points,
        "default_chunk": options["chunk"],
        "predicted_mb": predicted,
        "code_dim": dim,
        "accumulate": accumulate,
        "solves": solves,
    }


class FirstChannels(StyleSpace):
    """StyleSpace scoring only the first ``keep`` channels of its first style layer: its own loop over the
    channels, fewer turns (each turn a full forward of every calibration latent)."""

    def __init__(self, gen: FeatureGenerator, keep: int, **options: Any) -> None:
        super().__init__(gen, **options)
        self.layers, self.keep = self.layers[:1], keep

    def _style_std(self, latents: Tensor) -> dict[str, Tensor]:
        return {layer: std[: self.keep] for layer, std in super()._style_std(latents).items()}


def stylespace(gen: FeatureGenerator, layer: str, job: dict[str, Any]) -> dict[str, Any]:
    """Seconds of StyleSpace's fit to one region (the benchmark fits each region on its own) scoring ``job['keep']``
    channels, on each of ``job['sizes']`` counts of calibration latents."""
    editor = FirstChannels(gen, job["keep"], **baseline_options()["stylespace"])

    def seconds(samples: int) -> float:
        return editor.fit(calibration(gen, samples), boxes(image_size(gen), samples)["mouth"]).seconds

    return {"points": [[samples, seconds(samples), peak_mb()] for samples in sorted(job["sizes"])]}


JOBS: dict[str, Callable[[FeatureGenerator, str, dict[str, Any]], dict[str, Any]]] = {
    "forwards": forwards,
    "fit": fit,
    "jacobian": jacobian,
    "stylespace": stylespace,
}


def main() -> None:
    job = json.loads(sys.argv[1])
    gen, layer = generator(job["overrides"])
    loaded = peak_mb()
    print(json.dumps({"loaded_mb": loaded, **JOBS[job["kind"]](gen, layer, job)}))


if __name__ == "__main__":
    main()
