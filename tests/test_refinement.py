import torch

from panda.method.factorization import orthonormalize, squared_error
from panda.uses.refinement import refine_parts, sample_errors


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    A = orthonormalize(torch.randn(8, 4, generator=generator))
    P = torch.rand(16, 3, generator=generator) * 0.3
    Z = torch.rand(3, 8, 16, generator=generator)
    return Z, A, P


def test_refinement_keeps_parts_non_negative_and_lowers_each_samples_error() -> None:
    Z, A, P = _problem()
    refined, errors = refine_parts(Z, A, P, steps=100, lr=0.05)
    assert refined.shape == (3, 16, 3) and errors.shape == (101, 3)
    assert refined.min() >= 0
    assert (refined == 0).any()  # the projection was active: some entries were clamped
    assert torch.all(errors[-1] < 0.9 * errors[0])
    torch.testing.assert_close(errors[-1], sample_errors(Z, A, refined))


def test_refinement_starts_at_the_global_parts_objective() -> None:
    Z, A, P = _problem(1)
    _, errors = refine_parts(Z, A, P, steps=1)
    for b in range(3):
        torch.testing.assert_close(errors[0, b], squared_error(Z[b : b + 1], A, P))


def test_samples_are_refined_independently() -> None:
    Z, A, P = _problem(2)
    batch, _ = refine_parts(Z, A, P, steps=20, lr=0.01)
    alone, _ = refine_parts(Z[1:2], A, P, steps=20, lr=0.01)
    torch.testing.assert_close(batch[1], alone[0])
    assert not torch.allclose(batch[0], batch[1])
