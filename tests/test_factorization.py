"""The math of panda/method/factorization.py against definitions, autograd and decompositions."""

import pytest
import torch

from panda.method import factorization as fz


@pytest.fixture
def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(3, 6, 10, generator=g, dtype=torch.float64)
    A = torch.randn(6, 4, generator=g, dtype=torch.float64)
    P = torch.rand(10, 3, generator=g, dtype=torch.float64)
    return Z, A, P


def test_coefficients_and_reconstruction_match_the_definitions(problem):
    Z, A, P = problem
    Lam = fz.coefficients(Z, A, P)
    assert Lam.shape == (3, 4, 3)
    for i in range(3):
        torch.testing.assert_close(Lam[i], A.T @ Z[i] @ P)
        torch.testing.assert_close(fz.reconstruct(Lam, A, P)[i], A @ Lam[i] @ P.T)
    expected = sum(torch.linalg.matrix_norm(Z[i] - A @ A.T @ Z[i] @ P @ P.T) ** 2 for i in range(3))
    torch.testing.assert_close(fz.squared_error(Z, A, P), expected)


def test_loss_gradients_match_finite_differences(problem):
    Z, A, P = problem
    assert torch.autograd.gradcheck(lambda a, p: fz.squared_error(Z, a, p), (A.requires_grad_(), P.requires_grad_()))


def test_closed_form_coefficients_are_optimal_for_orthonormal_factors(problem):
    Z, A, P = problem
    A, P = fz.orthonormalize(A), fz.orthonormalize(P)
    Lam = fz.coefficients(Z, A, P).requires_grad_()
    (Z - fz.reconstruct(Lam, A, P)).square().sum().backward()
    assert Lam.grad.abs().max() < 1e-10


def test_projection_clamps_negatives_in_place_only():
    P = torch.tensor([[-1.0, 0.5], [0.0, -0.2]])
    out = fz.project_parts(P)
    assert out is P
    assert torch.equal(P, torch.tensor([[0.0, 0.5], [0.0, 0.0]]))


def test_hosvd_init_spans_the_leading_left_singular_subspace(problem):
    Z, _, _ = problem
    A = fz.leading_eigenvectors(fz.channel_scatter(Z), 2)
    U = torch.linalg.svd(Z.permute(1, 0, 2).reshape(6, -1), full_matrices=False).U[:, :2]
    torch.testing.assert_close(A @ A.T, U @ U.T)
    torch.testing.assert_close(A.T @ A, torch.eye(2, dtype=A.dtype))


def test_normalized_parts_are_maps_in_unit_range(problem):
    _, _, P = problem
    maps = fz.normalized_parts(P, 2, 5)
    assert maps.shape == (3, 2, 5)
    assert torch.allclose(maps.amin(dim=(1, 2)), torch.zeros(3, dtype=P.dtype))
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3, dtype=P.dtype))


def test_projected_gradient_recovers_planted_parts():
    g = torch.Generator().manual_seed(1)
    true_parts = torch.zeros(12, 3)
    true_parts[0:4, 0], true_parts[4:8, 1], true_parts[8:12, 2] = 0.5, 0.5, 0.5
    Z = torch.randn(64, 5, 3, generator=g) @ true_parts.T  # [B, C, S], spatially supported on the parts
    A = torch.eye(5)
    P = fz.random_parts(12, 3, g).requires_grad_()
    optimiser = torch.optim.Adam([P], lr=0.01)
    before = fz.squared_error(Z, A, P).item()
    for _ in range(1500):
        optimiser.zero_grad()
        fz.squared_error(Z, A, P).backward()
        optimiser.step()
        with torch.no_grad():
            fz.project_parts(P)
    assert fz.squared_error(Z, A, P).item() < 1e-3 * before
    assert (P >= 0).all()


@pytest.mark.parametrize("appearances", [4, 6])  # R_C < C and R_C = C
def test_closed_form_gradients_match_autograd_of_the_residual(problem, appearances):
    Z, _, P = problem
    A = torch.randn(6, appearances, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    A, P = A.requires_grad_(), P.clone().requires_grad_()
    (Z - A @ A.T @ Z @ P @ P.T).square().sum().backward()  # autograd through the residual itself
    dA, dP = fz.gradients(Z, A.detach(), P.detach())
    torch.testing.assert_close(dA, A.grad)
    torch.testing.assert_close(dP, P.grad)
    A.grad = P.grad = None
    (3 * fz.squared_error(Z, A, P)).backward()  # the loss's backward is the closed form, scaled
    torch.testing.assert_close(A.grad, 3 * dA)
    torch.testing.assert_close(P.grad, 3 * dP)


def test_squared_error_refuses_features_that_need_gradients(problem):
    Z, A, P = problem
    with pytest.raises(ValueError, match="differentiable in A and P only"):
        fz.squared_error(Z.requires_grad_(), A, P)


@pytest.mark.parametrize("appearances", [4, 6])  # R_C < C and R_C = C
def test_statistics_give_the_objective(problem, appearances):
    Z, _, P = problem
    A = torch.randn(6, appearances, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # not orthonormal
    norm, error = Z.square().sum(), fz.squared_error(Z, A, P)
    torch.testing.assert_close(norm + fz.parts_objective(*fz.parts_statistics(Z, A), P), error)
    K, L = fz.appearance_statistics(Z, P)
    torch.testing.assert_close(norm + fz.appearance_objective(A, K, L), error)
    Q, M = A @ A.T, P @ P.T
    torch.testing.assert_close(K, sum(Z[i] @ M @ Z[i].T for i in range(3)))
    torch.testing.assert_close(L, sum(Z[i] @ M @ M @ Z[i].T for i in range(3)))
    G1, G2 = fz.parts_statistics(Z, A)
    torch.testing.assert_close(G1, sum(Z[i].T @ Q @ Z[i] for i in range(3)))
    torch.testing.assert_close(G2, sum(Z[i].T @ Q @ Q @ Z[i] for i in range(3)))


def test_solve_parts_keeps_parts_non_negative_and_lowers_the_objective(problem):
    Z, A, P = problem
    G1, G2 = fz.parts_statistics(Z, A)
    solved = fz.solve_parts(G1, G2, P)
    assert (solved >= 0).all()
    before, after = fz.parts_objective(G1, G2, P), fz.parts_objective(G1, G2, solved)
    assert after < before - 0.1 * before.abs()
    # a stationary point of the projected problem: one more solve changes (almost) nothing
    again = fz.solve_parts(G1, G2, solved, max_iter=50)
    assert fz.parts_objective(G1, G2, again) > after - 1e-6 * torch.trace(G1)


def test_solve_appearances_beats_gradient_descent_from_the_same_start(problem):
    Z, A, P = problem
    K, L = fz.appearance_statistics(Z, P)
    solved = fz.solve_appearances(K, L, A)
    assert fz.appearance_objective(solved, K, L) <= fz.appearance_objective(A, K, L)
    descended = A.clone().requires_grad_()
    optimiser = torch.optim.Adam([descended], lr=0.01)
    for _ in range(3000):
        optimiser.zero_grad()
        fz.appearance_objective(descended, K, L).backward()
        optimiser.step()
    assert fz.appearance_objective(solved, K, L) <= fz.appearance_objective(descended.detach(), K, L) + 1e-6 * K.trace()


def test_reference_step_is_a_projected_gradient_step_on_p_then_a_gradient_step_on_a(problem):
    Z, _, P = problem
    sample, lr = Z[:1], 0.05
    scatter = fz.channel_scatter(Z)
    A = fz.leading_eigenvectors(scatter, 4)  # the HOSVD initialisation

    def objective(A: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_norm(sample[0] - A @ A.T @ sample[0] @ P @ P.T) ** 2

    free = P.clone().requires_grad_()
    stepped = P - lr * torch.autograd.grad(objective(A, free), free)[0]
    assert (stepped < 0).any() and (stepped > 0).any()  # the projection has work to do
    expected_P = stepped.clamp(min=0)
    free = A.clone().requires_grad_()
    expected_A = A - lr * torch.autograd.grad(objective(free, expected_P), free)[0]
    before = P.clone()
    A1, P1 = next(fz.reference_factorization(scatter, [sample], P, 4, lr))
    torch.testing.assert_close(P1, expected_P)
    torch.testing.assert_close(A1, expected_A)
    assert torch.equal(P, before)  # the inputs are not modified


def test_canonical_form_numbers_by_norm_and_signs_by_the_coefficient_cubes(problem):
    Z, A, P = problem
    order, signs = fz.canonical_order(A * torch.tensor([1.0, 3.0, 1.0, 2.0]), torch.tensor([1.0, -2.0, 0.5, -0.1]))
    norms = A.norm(dim=0) * torch.tensor([1.0, 3.0, 1.0, 2.0])
    assert order.tolist() == torch.argsort(norms, descending=True).tolist()
    assert signs.tolist() == [1.0 if s >= 0 else -1.0 for s in torch.tensor([1.0, -2.0, 0.5, -0.1])[order].tolist()]
    canonical = fz.canonical_appearances(A, *fz.canonical_order(A, fz.coefficient_cubes(Z, A, P)))
    norms = canonical.norm(dim=0)
    assert (fz.coefficient_cubes(Z, canonical, P) >= 0).all() and (norms[:-1] >= norms[1:]).all()
    torch.testing.assert_close(canonical @ canonical.T, A @ A.T)  # the same A A^T: the same objective


def test_tied_norms_keep_the_solvers_order():
    order, _ = fz.canonical_order(torch.eye(3), torch.ones(3))
    assert order.tolist() == [0, 1, 2]


def test_any_numbering_and_signs_of_the_appearances_have_one_canonical_form(problem):
    Z, A, P = problem
    shuffled = A[:, torch.tensor([2, 0, 3, 1])] * torch.tensor([-1.0, 1.0, -1.0, -1.0], dtype=A.dtype)
    forms = [fz.canonical_appearances(a, *fz.canonical_order(a, fz.coefficient_cubes(Z, a, P))) for a in (A, shuffled)]
    torch.testing.assert_close(*forms, rtol=0, atol=0)
