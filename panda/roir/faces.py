"""The faces ROIR is measured on: numbered samples of a stream where dlib finds a face, with their landmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.method.data import batch_generator
from panda.uses.landmarks import LandmarkDetector, detect, roi_masks
from panda.uses.visualize import to_uint8


@dataclass
class Faces:
    """Samples whose faces dlib found: latents ``[N, ...]``, images ``[N, 3, H, W]``, landmarks ``[68, 2]`` each."""

    latents: Tensor
    originals: Tensor
    landmarks: list[np.ndarray]
    skipped: int = 0

    def masks(self, region: str, dilation: int) -> Tensor:
        return roi_masks(self.landmarks, self.originals.shape[-1], region, dilation)[0]


def face_batches(
    gen: FeatureGenerator,
    detector: LandmarkDetector,
    seed: int,
    stream: int,
    samples: int,
    batch_size: int,
    progress: bool = False,
    cache: Path | None = None,
    rank: int = 0,
    world: int = 1,
) -> Iterator[Faces]:
    """The first ``samples`` samples of ``stream`` in batches, each keeping the images with a face (landmarks
    kept in and read from ``cache``, see :func:`panda.uses.landmarks.detect`); with ``world`` processes, process
    ``rank`` takes the batches ``rank, rank + world, ...``."""
    indices = range(rank, -(-samples // batch_size), world)
    for index in tqdm(indices, desc="faces", disable=not progress, unit="batch"):
        size = min(batch_size, samples - index * batch_size)
        latents = gen.sample_latents(size, batch_generator(seed, stream, index))
        with torch.inference_mode():
            originals = gen(latents.to(gen.device)).cpu()
        landmarks = detect(detector, to_uint8(originals), cache)
        found = torch.tensor([points is not None for points in landmarks], dtype=torch.bool)
        yield Faces(latents[found], originals[found], [p for p in landmarks if p is not None], int((~found).sum()))


def face_set(batches: Iterable[Faces]) -> Faces:
    """The faces of :func:`face_batches`' ``batches`` as one set (at least two of them)."""
    batches = list(batches)
    faces = Faces(
        torch.cat([b.latents for b in batches]),
        torch.cat([b.originals for b in batches]),
        [p for b in batches for p in b.landmarks],
        sum(b.skipped for b in batches),
    )
    if len(faces.latents) < 2:
        samples = len(faces.latents) + faces.skipped
        raise ConfigError(f"dlib found {len(faces.latents)} faces in {samples} samples; ROIR needs face images")
    return faces
