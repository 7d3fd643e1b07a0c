"""ROIR on constructed images with known answers."""

import pytest
import torch

from panda.roir.metric import ROIR, roir


def images_with_change(inside: float, outside: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An 8x8 image; the edit adds ``inside`` on the left half (the ROI) and ``outside`` on the right."""
    original = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    edited = original.clone()
    edited[..., :4] += inside
    edited[..., 4:] += outside
    return original, edited, mask


def test_roir_is_the_ratio_of_change_outside_to_inside():
    assert roir(*images_with_change(2.0, 1.0)).item() == pytest.approx(0.5)
    assert roir(*images_with_change(1.0, 0.0)).item() == 0.0  # a perfectly local edit
    assert roir(*images_with_change(1.0, 3.0)).item() == pytest.approx(3.0)


def test_metric_aggregates_mean_and_std_over_batches_and_counts_unchanged_regions():
    metric = ROIR()
    for inside, outside in [(2.0, 1.0), (1.0, 3.0), (1.0, 1.0)]:
        metric.update(*images_with_change(inside, outside))
    metric.update(*images_with_change(0.0, 1.0))  # the region did not change: no ratio
    result = metric.compute()
    values = torch.tensor([0.5, 3.0, 1.0], dtype=torch.float64)
    assert result["mean"].item() == pytest.approx(values.mean().item())
    assert result["std"].item() == pytest.approx(values.std().item())
    assert result["count"].item() == 3
    assert result["unchanged"].item() == 1


def test_batched_update_equals_single_updates():
    batch = [images_with_change(i + 1.0, 0.5 * i) for i in range(4)]
    together, alone = ROIR(), ROIR()
    together.update(*(torch.cat(parts) for parts in zip(*batch, strict=True)))
    for images in batch:
        alone.update(*images)
    for key in ("mean", "std", "count"):
        torch.testing.assert_close(together.compute()[key], alone.compute()[key])
