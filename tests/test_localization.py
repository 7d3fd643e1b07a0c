import dataclasses

import pytest
import torch

from panda.uses import localization
from panda.uses.factors import Factors


def test_appearance_maps_are_a_transpose_z(run: Factors) -> None:
    features = torch.rand(2, 128, 16, 16)
    maps = localization.appearance_maps(run, features)
    assert maps.shape == (2, 16, 16, 16)
    torch.testing.assert_close(maps[1, 3, 5, 7], run.A[:, 3] @ features[1, :, 5, 7])


def test_threshold_is_the_dataset_mean_of_each_appearance() -> None:
    maps = torch.stack([torch.arange(8.0).reshape(2, 2, 2), 10 * torch.arange(8.0).reshape(2, 2, 2)], dim=1)
    threshold = localization.thresholds(maps)  # maps [2 samples, 2 appearances, 2, 2]
    torch.testing.assert_close(threshold, torch.tensor([3.5, 35.0]))
    masks = localization.binarize(maps, threshold)
    assert masks[0].sum() == 0 and masks[1].all()  # sample 0 holds 0..3 (x10), sample 1 holds 4..7 (x10)


def test_concept_masks_are_upsampled_to_image_size() -> None:
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, :, 2:] = 1.0  # right half
    masks = localization.concept_masks(maps, torch.tensor([0.5, 0.5]), size=64)
    assert masks.shape == (1, 2, 64, 64) and masks.dtype == torch.bool
    assert masks[0, 0, :, 40:].all() and not masks[0, 0, :, :24].any() and not masks[0, 1].any()


def test_background_is_the_appearance_around_the_part(run: Factors) -> None:
    """Removal paints what surrounds a part: the skin around the eyebrows, not the image's border."""
    P = torch.zeros(16, 16, run.parts)
    P[6:10, 6:10, 0] = 1.0  # part 0: a block in the middle
    P[..., 1:] = torch.rand(16, 16, run.parts - 1, generator=torch.Generator().manual_seed(0))
    centred = dataclasses.replace(run, P=P.reshape(256, run.parts))
    around = localization.surroundings(centred, 0)
    assert around.sum() == 8 * 8 - 4 * 4 and not around[6:10, 6:10].any() and around[4, 4] and not around[3, 3]
    masks = torch.zeros(5, run.appearances, 16, 16, dtype=torch.bool)
    masks[:, 0, 6:10, 6:10] = True  # the part itself
    masks[:, 1, 3:13, 3:13] = True  # its surroundings (and more)
    masks[:, 2] = True
    masks[:, 2, 2:14, 2:14] = False  # the image border
    masks[:3, 3, 4:12, 4:8] = True  # half the surroundings, in three samples of five
    background, coverage = localization.background_appearance(centred, masks, 0)
    assert background == 1 and coverage[1] == 1.0 and coverage[2] == 0 and coverage[0] == 0
    assert coverage[3] == pytest.approx(3 / 5 * (8 * 4 - 2 * 4) / 48)


def test_dataset_maps_are_reproducible(run: Factors) -> None:
    first = localization.dataset_maps(run, seed=3, samples=10, batch_size=4)
    assert first.shape == (10, 16, 16, 16)
    torch.testing.assert_close(first, localization.dataset_maps(run, seed=3, samples=10, batch_size=4))
    assert not torch.allclose(first, localization.dataset_maps(run, seed=4, samples=10, batch_size=4))
