"""Parts named after face regions (panda/uses/face_regions.py): regions, shares, artefacts, labels, naming a run."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from panda.base.errors import ConfigError
from panda.base.factors_file import load_factors
from panda.tasks.registry import evaluate as evaluate_task
from panda.training.fit import train
from panda.uses import face_regions
from panda.uses.face_regions import (
    REGIONS,
    NamingSettings,
    high_frequency_share,
    labels_of,
    name_parts,
    region_masks,
    region_shares,
)
from tests.conftest import LAYER, ROOT, SHAPE, compose_two_steps, made_up_factors, run_evaluate


def face_landmarks() -> np.ndarray:
    """68 made-up landmarks ``[68, 2]`` (x, y) of a face in the middle of a 64 x 64 image."""
    t = np.linspace(0, math.pi, 17)
    jaw = np.stack([32 - 18 * np.cos(t), 24 + 32 * np.sin(t)], 1)  # (14, 24) down to the chin (32, 56)
    brows = [[x, 22.0] for x in np.linspace(18, 29, 5)] + [[x, 22.0] for x in np.linspace(35, 46, 5)]
    nose = [[32.0, y] for y in np.linspace(24, 36, 4)] + [[x, 38.0] for x in np.linspace(28, 36, 5)]

    def ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> list[list[float]]:
        return [[cx + rx * math.cos(a), cy + ry * math.sin(a)] for a in np.linspace(0, 2 * math.pi, n, endpoint=False)]

    eyes = ellipse(24, 27, 4, 1.5, 6) + ellipse(40, 27, 4, 1.5, 6)
    mouth = ellipse(32, 46, 7, 3, 12) + ellipse(32, 46, 4, 1.5, 8)
    return np.concatenate([jaw, brows, nose, eyes, mouth]).astype(float)


class NoFace:
    """A landmark detector that finds no face."""

    min_face = 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, image: np.ndarray) -> None:
        return None


def settings(**changes: object) -> NamingSettings:
    values = {"samples": 6, "upscale": 256, "batch_size": 6, "dominance": 0.5, "artefact": 0.8, "min_face": 0.25}
    values |= changes
    return NamingSettings(**values, config_key="naming")


def test_the_regions_are_disjoint_and_where_the_landmarks_say():
    masks = region_masks(face_landmarks(), 64)
    assert masks.shape == (len(REGIONS), 64, 64) and masks.sum(0).max() == 1  # every pixel in one region at most
    where = {name: masks[i] for i, name in enumerate(REGIONS)}
    assert where["mouth"][46, 32] and where["eyes"][27, 24] and where["eyes"][27, 40] and where["nose"][30, 32]
    assert where["eyebrows"][22, 20] and where["face"][40, 20]  # a cheek
    assert where["hair"][10, 32] and where["hair"][2, 32]  # above the face, the top border too
    assert where["background"][40, 2] and where["background"][61, 32] and where["background"][2, 2]
    assert masks[:, 50, 10].sum() == 0  # beside the jaw, off the border: no region


def test_a_part_on_the_mouth_has_all_its_mass_there():
    points = face_landmarks()
    masks = region_masks(points, 64).float()
    maps = torch.stack([masks[REGIONS.index("mouth")], torch.ones(64, 64)])  # the mouth; the whole image
    shares = region_shares(maps, [points, points])
    assert shares[0, REGIONS.index("mouth")] == pytest.approx(1.0)
    assert shares[1].sum() < 1 and shares[1, REGIONS.index("background")] > shares[1, REGIONS.index("mouth")]


def test_a_checkerboard_is_high_frequency_and_a_blob_is_not():
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    checkerboard = ((x + y) % 2).flatten()
    blob = torch.exp(-((x - 8) ** 2 + (y - 6) ** 2) / 12).flatten()
    shares = high_frequency_share(torch.stack([checkerboard, blob], 1), (16, 16))
    assert shares[0] > 0.99 and shares[1] < 0.05


def test_labels_name_dominant_regions_mixed_face_and_artefacts_uniquely():
    share = dict.fromkeys(REGIONS, 0.0)

    def row(**values: float) -> list[float]:
        return [(share | values)[name] for name in REGIONS]

    shares = torch.tensor(
        [
            row(mouth=0.7, face=0.2),
            row(hair=0.3, background=0.3),  # no region dominates
            row(eyes=0.2, nose=0.2, face=0.3),  # spread over the face and its features
            row(mouth=0.9),  # the better mouth
            row(face=0.9),  # but a checkerboard
        ]
    )
    labels, scores = labels_of(shares, torch.tensor([0.1, 0.1, 0.1, 0.1, 0.9]), dominance=0.5, artefact=0.8)
    assert labels == ["mouth_2", "mixed", "face", "mouth", "artefact"]
    assert scores == pytest.approx([0.7, 0.3, 0.7, 0.9, 0.9])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dominance": 0.0}, r"naming\.dominance=0\.0 must be a share in \(0, 1\]"),
        ({"artefact": 1.5}, r"naming\.artefact=1\.5 must be a share in \(0, 1\]"),
        ({"samples": 0}, r"naming\.samples=0 must be an integer >= 1"),
        ({"min_face": 1.0}, r"naming\.min_face=1\.0 must be a share of the image width in \[0, 1\)"),
    ],
)
def test_bad_naming_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        settings(**changes)


def test_name_parts_finds_the_checkerboard_the_border_and_the_face(dcgan):
    _, P = made_up_factors(parts=3)
    grid = P.view(16, 16, 3)
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    grid[..., 0] = (x + y) % 2
    grid[..., 1] = (x < 1).float()  # the left border
    grid[..., 2] = torch.exp(-((x - 7.5) ** 2 + (y - 8) ** 2) / 8)  # the middle of the image
    naming = name_parts(dcgan, P, SHAPE[1:], settings(), seed=0)
    assert naming.faces > 0 and naming.labels == ["artefact", "background", "face"]
    assert naming.scores[0] > 0.9 and naming.shares.shape == (3, len(REGIONS))
    assert "| 2 | face |" in naming.table()


def test_name_parts_without_faces_says_so(dcgan, monkeypatch):
    monkeypatch.setattr(face_regions, "LandmarkDetector", NoFace)
    with pytest.raises(ConfigError, match="dlib found no face in 6 samples"):
        name_parts(dcgan, made_up_factors()[1], SHAPE[1:], settings(), seed=0)


def test_task_name_stores_the_labels_and_draws_them(run_copy: Path, tmp_path: Path):
    run_dir = run_copy
    done = run_evaluate(tmp_path / "name", "task=name", f"run={run_dir}", "naming.samples=6")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "name" / "evaluate.json").read_text())
    factors = load_factors(run_dir)
    assert factors["labels"] == result["labels"] and len(result["labels"]) == 8
    assert factors["label_scores"] == pytest.approx(result["scores"], abs=1e-4)
    assert factors["layer"] == LAYER and "sha256" in factors  # the file was rewritten with a checksum
    assert set(result["shares"][result["labels"][0]]) == set(REGIONS)
    for name in ("names.md", "parts.png", "overlay.png"):
        assert (tmp_path / "name" / name).stat().st_size > 0
    overrides = [f"run={run_dir}", f"output_dir={tmp_path / 'remove'}", "samples=[0]", "eval.background=0"]
    removal = evaluate_task(compose_evaluate("task=remove", f"eval.part={result['labels'][2]}", *overrides))
    assert removal["part"] == 2  # the part given by its label
    with pytest.raises(ConfigError, match=f"unknown part name 'ears'; this run's parts: {result['labels'][0]}, "):
        evaluate_task(compose_evaluate("task=remove", "eval.part=ears", *overrides))


def test_training_names_the_parts_of_face_generators_by_default():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        assert compose("train").naming.after_training is True  # the DCGAN faces
        assert compose("train", overrides=["gen=stylegan2_ffhq"]).naming.after_training is True
        assert compose("train", overrides=["gen=biggan"]).naming.after_training is False  # no faces
        assert compose("train", overrides=["experiment=debug"]).naming.after_training is False  # seconds


def compose_evaluate(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_training_names_the_parts_when_asked_and_keeps_them_unnamed_without_faces(tmp_path, monkeypatch, caplog):
    cfg = compose_two_steps(tmp_path / "named", "naming.after_training=true", "naming.samples=4")
    train(cfg)
    assert len(load_factors(tmp_path / "named")["labels"]) == 8
    monkeypatch.setattr(face_regions, "LandmarkDetector", NoFace)
    cfg = compose_two_steps(tmp_path / "faceless", "naming.after_training=true", "naming.samples=4")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "labels" not in load_factors(tmp_path / "faceless")  # the factors are kept, unnamed
    assert "the parts are not named: dlib found no face in 4 samples" in caplog.text
