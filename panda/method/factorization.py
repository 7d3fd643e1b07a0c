"""The PandA factorisation, as pure tensor functions.

Notation (Oldfield et al., ICLR 2023): a batch of feature maps ``Z`` has shape ``[B, C, S]``
(channel fibres as columns, ``S = H * W``); appearances ``A`` are ``[C, R_C]``; parts ``P`` are
``[S, R_S]`` with ``P >= 0``. Sample coefficients are ``Lambda_i = A^T Z_i P`` (``[B, R_C, R_S]``)
and the reconstruction is ``A Lambda_i P^T``. The objective is

    sum_i || Z_i - A A^T Z_i P P^T ||_F^2   subject to   P >= 0.

Nothing here knows about generators, Lightning or configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import scipy.optimize
import threadpoolctl
import torch
from torch import Tensor


def flatten_features(features: Tensor) -> Tensor:
    """``[B, C, H, W]`` feature maps -> ``[B, C, S]`` with ``S = H * W``."""
    if features.dim() != 4:
        raise ValueError(f"expected feature maps [B, C, H, W], got shape {tuple(features.shape)}")
    return features.flatten(2)


def coefficients(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """Closed-form sample coefficients ``Lambda_i = A^T Z_i P``: ``[B, C, S] -> [B, R_C, R_S]``."""
    return A.T @ (Z @ P)  # Z P first: [B, C, R_S] is much smaller than A^T Z


def reconstruct(Lam: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """``A Lambda_i P^T``: ``[B, R_C, R_S] -> [B, C, S]``."""
    return A @ Lam @ P.T


def squared_norm(Z: Tensor) -> Tensor:
    """``sum_i ||Z_i||_F^2`` of any tensor (a scalar)."""
    flat = Z.reshape(-1)
    return torch.dot(flat, flat)


def squared_error(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """``sum_i ||Z_i - A A^T Z_i P P^T||_F^2`` over the batch ``Z`` ``[B, C, S]`` (a scalar).

    Differentiable in ``A`` and ``P`` (not ``Z``); the backward pass is :func:`gradients`. Cost
    ``O(B C S R_S)`` forward and backward, no ``[B, C, S]`` residual formed.
    """
    if Z.requires_grad:
        raise ValueError("squared_error is differentiable in A and P only; pass features without grad")
    return _SquaredError.apply(Z, A, P)


class _SquaredError(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
        value, terms = _objective_terms(Z, A, P)
        ctx.save_for_backward(Z, A, P, *terms)
        return value

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[None, Tensor, Tensor]:
        dA, dP = _gradients_from_terms(*ctx.saved_tensors)
        return None, grad * dA, grad * dP


def _parts_products(Z: Tensor, P: Tensor) -> Tensor:
    """``Yt = P^T Z^T`` ``[R_S, B * C]`` for ``Z`` ``[B, C, S]``: column ``(i, c)`` is row ``c`` of ``Z_i P``.

    With the ``[B * C, S]`` features on the right (here and in the backward of
    :func:`squared_error`) this is the fast orientation of a thin matrix product: faster on CPU
    than ``Z @ P``.
    """
    return P.T @ Z.reshape(-1, Z.shape[-1]).T


def _objective_terms(Z: Tensor, A: Tensor, P: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The objective and the products its gradients reuse.

    Expanded as ``||Z_i||^2 - 2 ||Lambda_i||^2 + tr(Lambda_i^T A^T A Lambda_i P^T P)``. The
    coefficients are held transposed and stacked, ``Lt`` ``[R_S * B, R_C]`` with row ``(r, i)``
    ``= (Lambda_i)[:, r]``, from :func:`_parts_products`.
    """
    channels, rank = Z.shape[1], P.shape[1]
    Yt = _parts_products(Z, P)  # [R_S, B * C]
    Lt = Yt.view(-1, channels) @ A  # [R_S * B, R_C]
    U = Lt @ (A.T @ A)
    V = ((P.T @ P) @ U.view(rank, -1)).view_as(Lt)  # rows (r, i): (A^T A Lambda_i P^T P)[:, r]
    value = squared_norm(Z) - 2 * squared_norm(Lt) + torch.dot(V.reshape(-1), Lt.reshape(-1))
    return value, (Yt, Lt, U, V)


def _gradients_from_terms(
    Z: Tensor, A: Tensor, P: Tensor, Yt: Tensor, Lt: Tensor, U: Tensor, V: Tensor
) -> tuple[Tensor, Tensor]:
    """``(dL/dA [C, R_C], dL/dP [S, R_S])`` from the products of :func:`_objective_terms`."""
    rank, spatial = P.shape[1], Z.shape[-1]
    dLt = 2 * V - 4 * Lt  # d/dLt of the objective with A^T A and P^T P held fixed
    W = ((P.T @ P) @ Lt.view(rank, -1)).view_as(Lt)
    dGA = Lt.T @ W  # sum_i Lambda_i P^T P Lambda_i^T: d/d(A^T A)
    dGP = U.view(rank, -1) @ Lt.view(rank, -1).T  # sum_i Lambda_i^T A^T A Lambda_i: d/d(P^T P)
    dA = Yt.view(-1, A.shape[0]).T @ dLt + 2 * A @ dGA
    dPt = (dLt @ A.T).view(rank, -1) @ Z.reshape(-1, spatial)  # [R_S, S]
    return dA, dPt.T + 2 * P @ dGP


def project_parts(P: Tensor) -> Tensor:
    """Project ``P`` ``[S, R_S]`` onto the non-negative orthant, in place; returns ``P``."""
    return P.clamp_(min=0)


def orthonormalize(A: Tensor) -> Tensor:
    """The nearest-by-QR matrix with orthonormal columns to ``A`` ``[C, R_C]`` (sign-fixed)."""
    Q, R = torch.linalg.qr(A)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1
    return Q * signs


def channel_scatter(Z: Tensor) -> Tensor:
    """``sum_i Z_i Z_i^T`` over the batch ``Z`` ``[B, C, S]``: ``[C, C]``."""
    return torch.einsum("bcs,bds->cd", Z, Z)


def leading_eigenvectors(scatter: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading eigenvectors (columns, descending eigenvalue) of a symmetric matrix.

    Applied to the channel scatter ``[C, C]`` this is the HOSVD initialisation of ``A``
    (``[C, rank]``): the leading left singular vectors of the channel-mode unfolding.
    Each column's sign is fixed so that its largest-magnitude entry is positive.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(scatter.double())
    top = eigenvectors[:, torch.argsort(eigenvalues, descending=True)[:rank]]
    peak = top.gather(0, top.abs().argmax(0, keepdim=True))
    return (top * torch.sign(peak)).to(scatter.dtype)


def random_parts(spatial: int, rank: int, generator: torch.Generator, scale: float = 0.01) -> Tensor:
    """Initial parts ``[S, R_S]`` drawn from ``Uniform(0, scale)``."""
    return torch.rand(spatial, rank, generator=generator) * scale


def normalized_parts(P: Tensor, height: int, width: int) -> Tensor:
    """Parts ``[S, R_S]`` as ``[R_S, H, W]`` maps, each min-max rescaled to ``[0, 1]``."""
    maps = P.T.reshape(-1, height, width)
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)


def edit_delta(A: Tensor, maps: Tensor, parts: Tensor, appearances: Tensor, alphas: Tensor) -> Tensor:
    """The local edit ``sum_t alpha_t a_{j_t} p_{k_t}^T`` as a feature-map offset ``[C, H, W]``.

    ``A`` is ``[C, R_C]``; ``maps`` are the parts as ``[R_S, H, W]`` maps (min-max rescaled to
    ``[0, 1]``, see :func:`normalized_parts`); ``parts`` (``k_t``), ``appearances`` (``j_t``)
    and ``alphas`` are ``[T]``, one entry per (part, appearance, strength) triple.
    """
    return torch.einsum("t,ct,thw->chw", alphas.to(A.dtype), A[:, appearances], maps[parts].to(A.dtype))


def localization_maps(Z: Tensor, A: Tensor) -> Tensor:
    """``A^T Z_i``: how much each appearance is present at each position, ``[B, C, S] -> [B, R_C, S]``."""
    return A.T @ Z


def coefficient_cubes(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """Each appearance's cubed coefficients summed over the batch and the parts, ``sum_{i,r} Lambda_i[j, r]^3``:
    ``[B, C, S] -> [R_C]``, in float64."""
    return coefficients(Z, A, P).double().pow(3).sum(dim=(0, 2))


def canonical_order(A: Tensor, cubes: Tensor) -> tuple[Tensor, Tensor]:
    """The canonical numbering and signs of the appearances ``A`` ``[C, R_C]``, given their summed cubed
    coefficients on samples ``cubes`` ``[R_C]`` (:func:`coefficient_cubes`).

    The objective depends on ``A`` only through ``A A^T``, so the signs of its columns are arbitrary (a solver may
    flip them between one and several processes), and so is their order. The canonical form numbers the
    appearances by decreasing norm ``||a_j||`` (ties keep the solver's order; the statistics solver's columns are
    orthogonal and come in this order) and signs each so that the third moment of its coefficients on the samples
    is non-negative: where an appearance is strongly present, its coefficient is positive. (Of the rules tried,
    this one leaves the fewest appearances near a tie; the plain sum of the coefficients is near zero for many.)
    Returns ``(order, signs)`` ``[R_C]``: canonical column ``k`` is column ``order[k]`` times ``signs[k]``
    (:func:`canonical_appearances`).
    """
    order = torch.argsort(A.norm(dim=0), descending=True, stable=True)
    signs = torch.where(cubes.to(order.device)[order] < 0, -1.0, 1.0)
    return order, signs


def canonical_appearances(A: Tensor, order: Tensor, signs: Tensor) -> Tensor:
    """``A`` ``[C, R_C]`` in the canonical form of :func:`canonical_order`: ``A[:, order] * signs``.

    ``Lambda`` changes its rows likewise; the objective and every reconstruction are unchanged."""
    return A[:, order] * signs.to(A)


def gradients(Z: Tensor, A: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form gradients ``(dL/dA [C, R_C], dL/dP [S, R_S])`` of :func:`squared_error`.

    With ``E_i = Z_i - A A^T Z_i P P^T``, ``Q = A A^T`` and ``M = P P^T`` they are
    ``dL/dA = -2 sum_i (E_i M Z_i^T + Z_i M E_i^T) A`` and ``dL/dP = -2 sum_i (Z_i^T Q E_i + E_i^T Q Z_i) P``,
    computed without forming ``E_i``, as ``O(B C S R_S)`` products of the coefficients.
    """
    return _gradients_from_terms(Z, A, P, *_objective_terms(Z, A, P)[1])


def reference_factorization(
    scatter: Tensor, samples: Iterable[Tensor], P: Tensor, appearances: int, lr: float
) -> Iterator[tuple[Tensor, Tensor]]:
    """The authors' reference algorithm, one sample at a time; yields ``(A, P)`` after every step.

    ``A`` ``[C, R_C]`` starts at the HOSVD initialisation, the ``appearances`` leading eigenvectors
    of ``scatter`` ``[C, C]`` (:func:`channel_scatter` summed over the initialisation samples), and
    ``P`` ``[S, R_S]`` at the given parts. Each sample ``Z`` ``[1, C, S]`` of ``samples`` then takes
    a gradient step on ``P``, projected onto ``P >= 0``, followed by a gradient step on ``A`` at the
    new ``P``, both with step size ``lr``:

        P <- max(P - lr dL/dP(A, P), 0);   A <- A - lr dL/dA(A, P).

    The inputs are not modified.
    """
    A = leading_eigenvectors(scatter, appearances)
    for Z in samples:
        P = project_parts(P - lr * gradients(Z, A, P)[1])
        A = A - lr * gradients(Z, A, P)[0]
        yield A, P


# ----- sufficient statistics --------------------------------------------------------------------
# With Q = A A^T and M = P P^T the objective is
#     sum_i ||Z_i||^2 - 2 tr(P^T G1 P) + tr(P^T P P^T G2 P),  G1 = sum_i Z_i^T Q Z_i, G2 = sum_i Z_i^T Q^2 Z_i
#   = sum_i ||Z_i||^2 - 2 tr(Q K) + tr(Q Q L),              K = sum_i Z_i M Z_i^T,   L = sum_i Z_i M^2 Z_i^T
# so P can be solved from [S, S] statistics for fixed A, and A from [C, C] statistics for fixed P.


def parts_statistics(Z: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """``(G1, G2)`` ``[S, S]``: ``sum_i Z_i^T Q Z_i``, ``sum_i Z_i^T Q^2 Z_i`` (``Q = A A^T``), ``Z`` ``[B, C, S]``."""
    spatial = Z.shape[-1]
    # With A^T A = V diag(e) V^T: Q = (A V)(A V)^T and Q^2 = (A V) diag(e) (A V)^T, so both are Gram
    # matrices of X_i = (A V)^T Z_i [R_C, S]: O(C S R_C + S^2 R_C) a sample rather than O(C S^2).
    e, V = torch.linalg.eigh((A.T @ A).double())
    X = (A @ V.to(A.dtype)).T.contiguous() @ Z  # [B, R_C, S]
    scaled = (e.clamp(min=0).to(A.dtype)[:, None] * X).reshape(-1, spatial)
    X = X.reshape(-1, spatial)
    return X.T @ X, X.T @ scaled


def appearance_statistics(Z: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, L)`` ``[C, C]``: ``sum_i Z_i M Z_i^T``, ``sum_i Z_i M^2 Z_i^T`` (``M = P P^T``), ``Z`` ``[B, C, S]``."""
    Yt = _parts_products(Z, P)  # [R_S, B * C]
    Y = Yt.view(-1, Z.shape[1])  # [R_S * B, C]: row (r, i) is (Z_i P)[:, r]
    YG = ((P.T @ P) @ Yt).view_as(Y)  # row (r, i) is (Z_i P P^T P)[:, r]
    return Y.T @ Y, YG.T @ Y


def parts_objective(G1: Tensor, G2: Tensor, P: Tensor) -> Tensor:
    """``-2 tr(P^T G1 P) + tr(P^T P P^T G2 P)``: the objective less ``sum_i ||Z_i||^2``, for fixed ``A``."""
    return -2 * torch.trace(P.T @ G1 @ P) + torch.trace((P.T @ P) @ (P.T @ G2 @ P))


def appearance_objective(A: Tensor, K: Tensor, L: Tensor) -> Tensor:
    """``-2 tr(Q K) + tr(Q Q L)`` with ``Q = A A^T``: the objective less ``sum_i ||Z_i||^2``, for fixed ``P``."""
    Q = A @ A.T
    return -2 * torch.trace(Q @ K) + torch.trace(Q @ Q @ L)


def _minimize_quartic(F: Tensor, G: Tensor, X: Tensor, nonnegative: bool, max_iter: int, tol: float) -> Tensor:
    """A local minimum of ``-2 tr(X^T F X) + tr(X^T X X^T G X)`` from ``X`` ``[n, r]`` by L-BFGS-B.

    Both block problems have this form (:func:`parts_objective` with ``F, G = G1, G2``;
    :func:`appearance_objective` with ``K, L``); ``F`` and ``G`` ``[n, n]`` are symmetric in exact
    arithmetic and symmetrised here. Bounded at 0 if ``nonnegative``; stops after ``max_iter``
    iterations or when the relative decrease falls below ``tol``; returns the last iterate, never
    worse than ``X``. Evaluated in float64 NumPy on one thread: the problems are small (``[S, S]``
    or ``[C, C]``), where torch's per-call overhead and thread synchronisation outweigh
    the arithmetic. Every BLAS that NumPy and SciPy load is held to one thread: besides, idle workers
    otherwise spin on the cores after the solve and slow the generator's next forward.
    """
    F, G = (t.detach().cpu().double().numpy() for t in (F, G))
    F, G = (F + F.T) / 2, (G + G.T) / 2
    shape = X.shape

    def objective_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        X = x.reshape(shape)
        FX, GX = F @ X, G @ X
        gram, XGX = X.T @ X, X.T @ GX
        value = -2 * np.vdot(X, FX) + np.vdot(gram, XGX)
        return float(value), (-4 * FX + 2 * (GX @ gram + X @ XGX)).ravel()

    x0 = X.detach().cpu().double().numpy().ravel()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        result = scipy.optimize.minimize(
            objective_and_gradient,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(0, None)] * x0.size if nonnegative else None,
            options={"maxiter": max_iter, "ftol": tol, "gtol": 0.0},
        )
    return torch.from_numpy(result.x).view(shape).to(X)


def solve_parts(G1: Tensor, G2: Tensor, P: Tensor, max_iter: int = 1000, tol: float = 1e-12) -> Tensor:
    """``argmin_{P >= 0}`` :func:`parts_objective` ``(G1, G2, P)``: a local minimum from ``P`` ``[S, R_S]``."""
    scale = torch.trace(G1).clamp_min(torch.finfo(G1.dtype).tiny)
    return _minimize_quartic(G1 / scale, G2 / scale, P, True, max_iter, tol)


def solve_appearances(K: Tensor, L: Tensor, A: Tensor, max_iter: int = 1000, tol: float = 1e-12) -> Tensor:
    """``argmin_A`` :func:`appearance_objective` ``(A, K, L)`` for ``A`` ``[C, R_C]``, a local minimum.

    Starts from the best of: the orthonormal leading eigenvectors of ``2K - L`` (optimal among
    orthonormal ``A``), the symmetric minimiser ``Q`` of ``-2 tr(QK) + tr(QQL)`` (``QL + LQ = 2K``,
    solved in ``L``'s eigenbasis; optimal when ``R_C = C``) truncated to its ``R_C`` leading
    non-negative eigenpairs as ``A = V sqrt(lambda)``, and ``A`` itself (kept only where strictly
    better: an orthonormal ``A`` at ``R_C = C`` never is, so the result does not depend on it);
    then descends by L-BFGS.
    """
    scale = torch.trace(K).clamp_min(torch.finfo(K.dtype).tiny)
    K, L, rank = (K / scale).cpu().double(), (L / scale).cpu().double(), A.shape[1]
    values, vectors = torch.linalg.eigh(L)
    denominator = (values[:, None] + values[None, :]).clamp_min(values.abs().max() * 1e-12)
    Q = vectors @ (2 * (vectors.T @ K @ vectors) / denominator) @ vectors.T
    q_values, q_vectors = torch.linalg.eigh((Q + Q.T) / 2)
    top = torch.argsort(q_values, descending=True)[:rank]
    candidates = [  # a tie goes to the first: ``A`` itself last, so it is kept only where it is strictly better
        leading_eigenvectors(2 * K - L, rank),
        q_vectors[:, top] * q_values[top].clamp_min(0).sqrt(),
        A.cpu().double(),
    ]
    start = min(candidates, key=lambda candidate: appearance_objective(candidate, K, L).item())
    return _minimize_quartic(K, L, start, False, max_iter, tol).to(A)
