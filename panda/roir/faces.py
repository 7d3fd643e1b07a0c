"""The faces ROIR is measured on: numbered samples of a stream where dlib finds a face, with their landmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
    refitted: np.ndarray | None = field(default=None, repr=False)

    def masks(self, region: str, dilation: int) -> Tensor:
        return roi_masks(self.landmarks, self.originals.shape[-1], region, dilation)[0]

    def refit(self, detector: LandmarkDetector, images: Tensor | None = None) -> np.ndarray:
        """Landmarks ``[N, 68, 2]`` of ``images`` ``[N, 3, H, W]`` (edits of these faces; by default the originals,
        computed once) found by the shape predictor in the box of each face's landmarks
        (:meth:`LandmarkDetector.refit`): an edit's and its original's compare point by point."""
        if images is not None:
            return detector.refit(to_uint8(images), np.stack(self.landmarks))
        if self.refitted is None:
            self.refitted = detector.refit(to_uint8(self.originals), np.stack(self.landmarks))
        return self.refitted

    def head(self, count: int) -> Faces:
        """The first ``count`` faces."""
        refitted = None if self.refitted is None else self.refitted[:count]
        return Faces(self.latents[:count], self.originals[:count], self.landmarks[:count], 0, refitted)


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
