"""Semantic edits: the landmark measures on synthetic faces with known answers, and the search picking the direction
that produces an edit on a toy editor whose effect is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from panda.roir.baselines.base import Editor
from panda.roir.faces import Faces
from panda.roir.search import choose, targets
from panda.roir.settings import ChooseSettings
from panda.uses.landmarks import FEATURES, eye_opening, face_height, mouth_opening, nose_length, region_mask, smile
from tests.conftest import ROOT

CHOOSE = OmegaConf.load(ROOT / "conf" / "roir" / "default.yaml").choose


def synthetic_face() -> np.ndarray:
    """68 landmarks ``[68, 2]`` of a frontal face in a 64 px image: face height 38 (27 to the chin 8), eyes 10 wide
    and 4 open, nose 16 long, mouth 20 wide with corners 0.25 above the lips' centre and an inner-lip gap of 2."""
    angles = np.linspace(np.pi, 0, 17)
    jaw = np.stack([32 + 24 * np.cos(angles), 20 + 38 * np.sin(angles)], 1)  # 0-16, the chin (8) at (32, 58)
    brows = [(14 + 3 * i, 16) for i in range(5)] + [(38 + 3 * i, 16) for i in range(5)]  # 17-26
    nose = [(32, 20), (32, 24), (32, 28), (32, 32), (28, 35), (30, 35.5), (32, 36), (34, 35.5), (36, 35)]  # 27-35
    eye = [(16, 22), (19, 20), (23, 20), (26, 22), (23, 24), (19, 24)]  # 36-41 (42-47: 22 px to the right)
    eyes = eye + [(x + 22, y) for x, y in eye]
    outer = [(22, 45), (25, 43), (28, 42), (32, 42), (36, 42), (39, 43), (42, 45), (39, 48), (36, 49), (32, 49)]
    outer += [(28, 49), (25, 48)]  # 48-59
    inner = [(24, 45), (28, 44), (32, 44), (36, 44), (40, 45), (36, 46), (32, 46), (28, 46)]  # 60-67
    return np.concatenate([jaw, np.array(brows + nose + eyes + outer + inner, dtype=float)])


def test_each_landmark_measure_gives_the_known_value_and_follows_its_edit():
    face = synthetic_face()[None]
    assert face_height(face) == pytest.approx([38.0])
    assert eye_opening(face) == pytest.approx([0.4])  # (4 + 4) / (2 * 10), both eyes
    assert nose_length(face) == pytest.approx([16 / 38])
    assert mouth_opening(face) == pytest.approx([2 / 38])
    assert smile(face) == pytest.approx([(0.25 + 20) / 38])
    opened = face.copy()
    opened[0, [65, 66, 67], 1] += 2  # the lower inner lip 2 px down: the gap doubles
    assert mouth_opening(opened) == pytest.approx([4 / 38])
    lifted = face.copy()
    lifted[0, [48, 54], 1] -= 1  # the corners 1 px up (image y points down)
    lifted[0, 48, 0] -= 1  # and the mouth 1 px wider
    assert smile(lifted) == pytest.approx([(1.25 + 21) / 38])
    wide = face.copy()
    wide[0, [37, 38, 43, 44], 1] -= 1  # the upper lids 1 px up
    assert eye_opening(wide) == pytest.approx([0.5])
    longer = face.copy()
    longer[0, 33, 1] += 3
    assert nose_length(longer) == pytest.approx([19 / 38])
    twice = face * 2 + 5  # the measures do not depend on the face's size or place
    for feature in FEATURES.values():
        assert feature.measure(twice) == pytest.approx(feature.measure(face))


BOX = (slice(43, 48), slice(26, 39))  # rows and columns inside the synthetic mouth
CORNER = (slice(0, 8), slice(0, 8))  # a corner of the image, far from the mouth


class ToyDetector:
    """Reads the mouth's opening from the image: the lower inner lip moves down by 10 times the mean red value
    (``[0, 1]``) in :data:`BOX` and by 10 times the mean blue value in :data:`CORNER` (as dlib's predictor also reads
    pixels around a region); every other landmark stays where it is given."""

    def refit(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        points = landmarks.astype(float).copy()
        red = images[:, BOX[0], BOX[1], 0].astype(float).mean((1, 2)) / 255
        blue = images[:, CORNER[0], CORNER[1], 2].astype(float).mean((1, 2)) / 255
        points[:, [65, 66, 67], 1] += 10 * (red + blue)[:, None]
        return points


class ToyEditor(Editor):
    """Adds ``scale * pattern_k`` to the images: 0 reddens the mouth (opens it), 1 greens it (no effect), 2 reddens
    it half as much as it greens it (an opening that costs more change inside), 3 reddens the whole image, 4 blues
    the corner and barely touches the mouth (an opening without changing the mouth: the most effect per change
    inside)."""

    name = "toy"

    def __init__(self) -> None:
        patterns = torch.zeros(5, 3, 64, 64)
        patterns[0, 0, BOX[0], BOX[1]] = 0.01
        patterns[1, 1, BOX[0], BOX[1]] = 0.01
        patterns[2, 0, BOX[0], BOX[1]], patterns[2, 1, BOX[0], BOX[1]] = 0.005, 0.01
        patterns[3, 0] = 0.01
        patterns[4, 2, CORNER[0], CORNER[1]], patterns[4, 1, BOX[0], BOX[1]] = 0.01, 1e-5
        self.patterns = patterns

    @property
    def count(self) -> int:
        return len(self.patterns)

    def images(self, prepared: Tensor, directions: Tensor, scales: Tensor) -> Tensor:
        return prepared + scales[:, None, None, None] * self.patterns[directions]


def test_the_semantic_search_picks_the_direction_that_produces_the_edit_and_scales_it_to_the_effect():
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
    faces = Faces(images, images, [synthetic_face()] * 8)
    # the toy's edits reach the effect with a small change inside: the lower bound of a semantic edit's change too
    settings = ChooseSettings.from_config({**CHOOSE, "screen": 4, "finalists": 3, "inside_change": 1e-3}, "c")
    detector = ToyDetector()
    choice = choose(ToyEditor(), faces, targets([], ["open_mouth"]), settings, None, detector)["open_mouth"]
    assert choice.index == 0 and choice.scale > 0 and choice.region == "mouth"
    spread = np.std(mouth_opening(faces.refit(detector)))  # of the originals' measure
    assert spread > 0
    assert choice.calibration_effect == pytest.approx(settings.effect * spread, rel=0.1)  # the same effect for all
    mask = region_mask(synthetic_face(), 64, "mouth")[0]
    assert mask[BOX].all()  # the edit lies in the mouth's region
    assert choice.calibration_roir == pytest.approx(0.0, abs=1e-6)
    capped = ChooseSettings.from_config({**settings.__dict__, "inside_change": 1e-4, "max_change": 1e-4}, "c")
    assert choose(ToyEditor(), faces, targets([], ["open_mouth"]), capped, None, detector) == {}  # too big an edit


def test_an_edit_that_moves_the_landmarks_without_changing_the_region_is_not_chosen():
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
    faces = Faces(images, images, [synthetic_face()] * 8)
    settings = ChooseSettings.from_config({**CHOOSE, "screen": 4, "finalists": 1, "inside_change": 1e-3}, "c")
    only_corner = ChooseSettings.from_config({**settings.__dict__, "inside_change": 1e-9}, "c")
    aims = targets([], ["open_mouth"])
    assert choose(ToyEditor(), faces, aims, only_corner, None, ToyDetector())["open_mouth"].index == 4
    assert choose(ToyEditor(), faces, aims, settings, None, ToyDetector())["open_mouth"].index == 0
