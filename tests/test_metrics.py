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
    metric = ROIR(above=5.0)
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
    together, alone = ROIR(above=2.0), ROIR(above=2.0)
    together.update(*(torch.cat(parts) for parts in zip(*batch, strict=True)))
    for images in batch:
        alone.update(*images)
    for key in ("mean", "std", "median", "q1", "q3", "above", "count"):
        torch.testing.assert_close(together.compute()[key], alone.compute()[key])


def test_metric_reports_the_median_quartiles_and_the_images_above_the_threshold():
    metric = ROIR(above=5.0)
    for inside, outside in [(2.0, 1.0), (1.0, 3.0), (1.0, 6.0)]:
        metric.update(*images_with_change(inside, outside))
    pair = zip(images_with_change(1.0, 1.0), images_with_change(1.0, 8.0), strict=True)
    metric.update(*(torch.cat(parts) for parts in pair))  # two images in one batch
    metric.update(*images_with_change(0.0, 1.0))  # no ratio: neither in the quartiles nor above the threshold
    result = metric.compute()  # ratios 0.5, 3, 6, 1, 8
    assert result["median"].item() == pytest.approx(3.0)
    assert result["q1"].item() == pytest.approx(1.0) and result["q3"].item() == pytest.approx(6.0)
    assert result["above"].item() == 2 and result["count"].item() == 5 and result["unchanged"].item() == 1
    metric.update(*images_with_change(1.0, 5.0))  # exactly at the threshold: not above it
    assert metric.compute()["above"].item() == 2
    assert metric.compute()["q1"].item() == pytest.approx(1.5)  # 0.5, 1, 3, 5, 6, 8: linear interpolation


def test_metric_of_no_ratio_has_no_quartiles():
    metric = ROIR(above=5.0)
    metric.update(*images_with_change(0.0, 1.0))
    result = metric.compute()
    assert result["median"].isnan() and result["q1"].isnan() and result["above"].item() == 0
