"""Parts named after the face region their mass falls on (``python evaluate.py task=name``, and ``train.py``
when ``naming.after_training`` is on: the default for face generators).

Over the faces dlib finds among ``naming.samples`` samples, each part's map (min-max rescaled, upsampled to
the image) is split over disjoint regions drawn from the 68 landmarks: ``eyes``, ``eyebrows``, ``nose``,
``mouth`` (their hulls, grown by 1/32 of the image side), ``face`` (the hull of all landmarks and a forehead
above the brows, less those), ``hair`` (off the face, above the eyes, at most half a face width beside it),
``background`` (the rest of a band of 1/8 of the side along the image border); what is left (neck,
shoulders) belongs to no region. A part's share of a region is the mean over the faces of its mass
there over its whole mass. A part is named after the region with the largest share when that share
is at least ``dominance``, and ``mixed`` otherwise; a part whose spectral energy lies mostly at high
spatial frequencies (at least ``artefact`` of it at 1/4 cycle per feature pixel or more, on either axis:
a checkerboard) is an ``artefact`` whatever its shares. Its score is that share (or that energy share).
Names are unique: a name given to several parts is kept by the highest score, the others get ``_2``,
``_3``, ... (``hair``, ``hair_2``).

dlib is imported only when faces are measured, so training without naming does not load it.
"""

from __future__ import annotations

import logging
from dataclasses import InitVar, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from panda.base.config import positive_int
from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.method.data import Stream, batch_generator
from panda.method.factorization import normalized_parts
from panda.uses.landmarks import LandmarkDetector, convex_hull, detect
from panda.uses.visualize import to_uint8, upsampled_parts

log = logging.getLogger(__name__)

# The landmark regions of the iBUG 300-W convention (panda.uses.landmarks) and the regions around them.
FEATURES: dict[str, tuple[range, ...]] = {
    "eyes": (range(36, 42), range(42, 48)),
    "eyebrows": (range(17, 22), range(22, 27)),
    "nose": (range(27, 36),),
    "mouth": (range(48, 68),),
}
REGIONS = (*FEATURES, "face", "hair", "background")
FACE = (*FEATURES, "face")  # a part spread over the face and its features is named "face"
MIXED, ARTEFACT = "mixed", "artefact"


@dataclass
class NamingSettings:
    """How parts are named (``naming`` in conf/naming/default.yaml, which explains each; ``config_key``:
    where they come from)."""

    samples: int
    upscale: int
    batch_size: int
    dominance: float
    artefact: float
    min_face: float
    config_key: InitVar[str]

    def __post_init__(self, config_key: str) -> None:
        for key in ("samples", "upscale", "batch_size"):
            positive_int(f"{config_key}.{key}", getattr(self, key))
        if isinstance(self.min_face, bool) or not isinstance(self.min_face, (int, float)) or not 0 <= self.min_face < 1:
            raise ConfigError(f"{config_key}.min_face={self.min_face!r} must be a share of the image width in [0, 1)")
        for key in ("dominance", "artefact"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"{config_key}.{key}={value!r} must be a share in (0, 1]")

    @classmethod
    def from_config(cls, node: Any, config_key: str) -> NamingSettings:
        """The settings of a config node (``after_training``, read by ``train.py``, aside)."""
        return cls(**{k: v for k, v in dict(node).items() if k != "after_training"}, config_key=config_key)


@dataclass
class Naming:
    """Each part's ``labels`` and ``scores``, its ``shares`` ``[R_S, len(REGIONS)]`` of each region, its
    ``high_frequency`` share of spectral energy ``[R_S]`` and the number of ``faces`` measured."""

    labels: list[str]
    scores: list[float]
    shares: Tensor
    high_frequency: Tensor
    faces: int

    def table(self) -> str:
        """Markdown: one row per part, its label, score, share of each region and high-frequency share."""
        lines = ["| part | label | score | " + " | ".join(REGIONS) + " | high frequency |"]
        lines.append("|---" * (len(REGIONS) + 4) + "|")
        for k, (label, score) in enumerate(zip(self.labels, self.scores, strict=True)):
            shares = " | ".join(f"{s:.2f}" for s in self.shares[k].tolist())
            lines.append(f"| {k} | {label} | {score:.2f} | {shares} | {float(self.high_frequency[k]):.2f} |")
        return "\n".join(lines) + "\n"


def _polygon(canvas: ImageDraw.ImageDraw, points: np.ndarray) -> None:
    canvas.polygon([tuple(p) for p in convex_hull(points)], fill=1, outline=1)


def _drawn(size: int, shapes: list[np.ndarray], grow: int = 0) -> Tensor:
    """Boolean mask ``[size, size]`` of the convex hulls of ``shapes``, grown by ``grow`` pixels."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for points in shapes:
        _polygon(draw, points)
    mask = torch.from_numpy(np.asarray(canvas, dtype=np.float32))
    if grow > 0:
        mask = F.max_pool2d(mask[None, None], 2 * grow + 1, stride=1, padding=grow)[0, 0]
    return mask > 0


def region_masks(points: np.ndarray, size: int) -> Tensor:
    """Disjoint boolean masks ``[len(REGIONS), size, size]`` of a face's 68 landmarks ``[68, 2]`` (x, y pixels)."""
    masks = {
        name: _drawn(size, [points[list(r)] for r in ranges], max(1, round(size / 32)))
        for name, ranges in FEATURES.items()
    }
    brows, chin = points[17:27], points[8]
    forehead = brows - np.array([0.0, 0.15 * (chin[1] - brows[:, 1].mean())])
    hull = _drawn(size, [np.concatenate([points, forehead])])
    taken = torch.zeros(size, size, dtype=torch.bool)
    for name in FEATURES:
        masks[name] &= ~taken
        taken |= masks[name]
    masks["face"] = hull & ~taken
    taken |= hull
    band = max(1, size // 8)
    sides = torch.zeros(size, size, dtype=torch.bool)
    sides[:, :band] = sides[:, -band:] = sides[-band:] = True
    masks["background"] = sides & ~taken
    taken |= sides
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    left, right = points[:17, 0].min(), points[:17, 0].max()
    beside = (x >= left - 0.5 * (right - left)) & (x <= right + 0.5 * (right - left))
    masks["hair"] = beside & (y < points[36:48, 1].mean()) & ~taken
    taken |= masks["hair"]
    masks["background"] |= (y < band) & ~taken
    return torch.stack([masks[name] for name in REGIONS])


def region_shares(maps: Tensor, landmarks: list[np.ndarray]) -> Tensor:
    """Mean over faces of each part's share of mass in each region, ``[R_S, len(REGIONS)]``, of part maps
    ``[R_S, size, size]`` (non-negative) at the images' size and the faces' landmarks."""
    mass = maps.flatten(1).sum(1).clamp_min(torch.finfo(maps.dtype).tiny)
    shares = [torch.einsum("khw,rhw->kr", maps, region_masks(p, maps.shape[-1]).to(maps)) for p in landmarks]
    return torch.stack(shares).mean(0) / mass[:, None]


def high_frequency_share(P: Tensor, feature_hw: tuple[int, int]) -> Tensor:
    """Each part's share ``[R_S]`` of spectral energy (its mean removed) at 1/4 cycle per pixel or more on
    either axis of its ``[H, W]`` map: near 1 for a checkerboard, small for a smooth blob."""
    maps = normalized_parts(P.detach().float().cpu(), *feature_hw)
    power = torch.fft.fft2(maps - maps.mean((1, 2), keepdim=True)).abs().square()
    fy, fx = torch.fft.fftfreq(feature_hw[0]).abs(), torch.fft.fftfreq(feature_hw[1]).abs()
    high = (fy[:, None] >= 0.25) | (fx[None, :] >= 0.25)
    return (power * high).flatten(1).sum(1) / power.flatten(1).sum(1).clamp_min(torch.finfo(power.dtype).tiny)


def labels_of(
    shares: Tensor, high_frequency: Tensor, dominance: float, artefact: float
) -> tuple[list[str], list[float]]:
    """Unique labels and their scores from the region ``shares`` ``[R_S, len(REGIONS)]`` and the
    ``high_frequency`` shares ``[R_S]`` (the rules of the module's docstring)."""
    named: list[tuple[str, float]] = []
    for row, high in zip(shares.tolist(), high_frequency.tolist(), strict=True):
        best = int(np.argmax(row))
        face = sum(row[REGIONS.index(name)] for name in FACE)
        if high >= artefact:
            named.append((ARTEFACT, high))
        elif row[best] >= dominance:
            named.append((REGIONS[best], row[best]))
        else:
            named.append(("face", face) if face >= dominance else (MIXED, row[best]))
    labels = [name for name, _ in named]
    for name in set(labels):
        same = sorted((k for k, label in enumerate(labels) if label == name), key=lambda k: (-named[k][1], k))
        for rank, k in enumerate(same[1:], start=2):
            labels[k] = f"{name}_{rank}"
    return labels, [score for _, score in named]


def name_parts(
    generator: FeatureGenerator, P: Tensor, feature_hw: tuple[int, int], settings: NamingSettings, seed: int
) -> Naming:
    """Name the parts ``P`` ``[S, R_S]`` of ``generator``'s features from the faces among ``settings.samples``
    samples of the ``NAMING`` stream; a :class:`ConfigError` when dlib finds no face."""
    detector = LandmarkDetector(settings.upscale, min_face=settings.min_face)
    landmarks: list[np.ndarray] = []
    size = 0
    for index, start in enumerate(range(0, settings.samples, settings.batch_size)):
        count = min(settings.batch_size, settings.samples - start)
        latents = generator.sample_latents(count, batch_generator(seed, Stream.NAMING, index))
        with torch.inference_mode():
            images = generator(latents.to(generator.device)).cpu()
        size = images.shape[-1]
        landmarks += [p for p in detect(detector, to_uint8(images)) if p is not None]
    if not landmarks:
        raise ConfigError(
            f"dlib found no face in {settings.samples} samples of generator '{generator.name}': "
            "its parts cannot be named after face regions (naming.after_training=false turns naming off)"
        )
    shares = region_shares(upsampled_parts(P, feature_hw, size), landmarks)
    high = high_frequency_share(P, feature_hw)
    labels, scores = labels_of(shares, high, settings.dominance, settings.artefact)
    log.info("parts named on %d faces: %s", len(landmarks), ", ".join(f"{k}: {n}" for k, n in enumerate(labels)))
    return Naming(labels, scores, shares, high, len(landmarks))
