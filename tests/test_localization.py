import torch

from panda import localization
from panda.factorization import orthonormalize
from panda.runs import Run


def test_appearance_maps_are_a_transpose_z(run: Run) -> None:
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


def test_background_is_the_appearance_covering_the_border() -> None:
    generator = torch.Generator().manual_seed(0)
    A = orthonormalize(torch.randn(12, 3, generator=generator))
    border = torch.ones(16, 16)
    border[3:-3, 3:-3] = 0
    centre = 1 - border
    samples = torch.rand(20, 3, 1, 1, generator=generator) + 0.5  # per-sample strengths
    # Z_i = s0 a_0 centre + s1 a_1 border + s2 a_2 (noise everywhere, weak)
    noise = 0.1 * torch.rand(20, 16, 16, generator=generator)
    Z = (
        A[:, 0, None, None] * (samples[:, 0] * centre)[:, None]
        + A[:, 1, None, None] * (samples[:, 1] * border)[:, None]
        + A[:, 2, None, None] * noise[:, None]
    )
    maps = torch.einsum("cr,bchw->brhw", A, Z)
    masks = localization.binarize(maps, localization.thresholds(maps))
    coverage = localization.border_coverage(masks)
    assert localization.background_appearance(masks) == 1
    assert coverage[1] >= 0.8 and coverage[1] > coverage[2] + 0.2 and coverage[0] == 0


def test_dataset_maps_are_reproducible(run: Run) -> None:
    first = localization.dataset_maps(run, seed=3, samples=10, batch_size=4)
    assert first.shape == (10, 16, 16, 16)
    torch.testing.assert_close(first, localization.dataset_maps(run, seed=3, samples=10, batch_size=4))
    assert not torch.allclose(first, localization.dataset_maps(run, seed=4, samples=10, batch_size=4))
