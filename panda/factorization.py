"""The PandA factorisation, as pure tensor functions.

Notation (Oldfield et al., ICLR 2023): a batch of feature maps ``Z`` has shape ``[B, C, S]``
(channel fibres as columns, ``S = H * W``); appearances ``A`` are ``[C, R_C]``; parts ``P`` are
``[S, R_S]`` with ``P >= 0``. Sample coefficients are ``Lambda_i = A^T Z_i P`` (``[B, R_C, R_S]``)
and the reconstruction is ``A Lambda_i P^T``. The objective is

    sum_i || Z_i - A A^T Z_i P P^T ||_F^2   subject to   P >= 0.

Nothing here knows about generators, Lightning or configs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def flatten_features(features: Tensor) -> Tensor:
    """``[B, C, H, W]`` feature maps -> ``[B, C, S]`` with ``S = H * W``."""
    if features.dim() != 4:
        raise ValueError(f"expected feature maps [B, C, H, W], got shape {tuple(features.shape)}")
    return features.flatten(2)


def coefficients(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """Closed-form sample coefficients ``Lambda_i = A^T Z_i P``: ``[B, C, S] -> [B, R_C, R_S]``."""
    return A.T @ Z @ P


def reconstruct(Lam: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """``A Lambda_i P^T``: ``[B, R_C, R_S] -> [B, C, S]``."""
    return A @ Lam @ P.T


def squared_error(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """``sum_i ||Z_i - A A^T Z_i P P^T||_F^2`` over the batch ``Z`` ``[B, C, S]`` (a scalar)."""
    return (Z - reconstruct(coefficients(Z, A, P), A, P)).square().sum()


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


def gradients(Z: Tensor, A: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form gradients ``(dL/dA [C, R_C], dL/dP [S, R_S])`` of :func:`squared_error`.

    With ``E_i = Z_i - A A^T Z_i P P^T``: ``dL/dA = -2 sum_i (E_i M Z_i^T + Z_i M E_i^T) A`` and
    ``dL/dP = -2 sum_i (Z_i^T Q E_i + E_i^T Q Z_i) P`` where ``Q = A A^T``, ``M = P P^T``.
    """
    Q, M = A @ A.T, P @ P.T
    E = Z - Q @ Z @ M
    EMZ = (E @ M @ Z.transpose(1, 2)).sum(0)
    ZQE = (Z.transpose(1, 2) @ Q @ E).sum(0)
    return -2 * (EMZ + EMZ.T) @ A, -2 * (ZQE + ZQE.T) @ P


# ----- sufficient statistics --------------------------------------------------------------------
# With Q = A A^T and M = P P^T the objective is
#     sum_i ||Z_i||^2 - 2 tr(P^T G1 P) + tr(P^T P P^T G2 P),  G1 = sum_i Z_i^T Q Z_i, G2 = sum_i Z_i^T Q^2 Z_i
#   = sum_i ||Z_i||^2 - 2 tr(Q K) + tr(Q Q L),              K = sum_i Z_i M Z_i^T,   L = sum_i Z_i M^2 Z_i^T
# so P can be solved from [S, S] statistics for fixed A, and A from [C, C] statistics for fixed P.


def parts_statistics(Z: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """``(G1, G2)`` ``[S, S]``: ``sum_i Z_i^T Q Z_i``, ``sum_i Z_i^T Q^2 Z_i`` (``Q = A A^T``), ``Z`` ``[B, C, S]``."""
    spatial = Z.shape[-1]
    Y = A.T @ Z  # [B, R_C, S]
    QZ = (A @ Y).reshape(-1, spatial)
    Y = Y.reshape(-1, spatial)
    return Y.T @ Y, QZ.T @ QZ


def appearance_statistics(Z: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, L)`` ``[C, C]``: ``sum_i Z_i M Z_i^T``, ``sum_i Z_i M^2 Z_i^T`` (``M = P P^T``), ``Z`` ``[B, C, S]``."""
    ZP = (Z @ P).transpose(0, 1).flatten(1)  # [C, B * R_S]
    gram = P.T @ P
    ZPG = (Z @ P @ gram).transpose(0, 1).flatten(1)
    return ZP @ ZP.T, ZPG @ ZP.T


def parts_objective(G1: Tensor, G2: Tensor, P: Tensor) -> Tensor:
    """``-2 tr(P^T G1 P) + tr(P^T P P^T G2 P)``: the objective less ``sum_i ||Z_i||^2``, for fixed ``A``."""
    return -2 * torch.trace(P.T @ G1 @ P) + torch.trace((P.T @ P) @ (P.T @ G2 @ P))


def appearance_objective(A: Tensor, K: Tensor, L: Tensor) -> Tensor:
    """``-2 tr(Q K) + tr(Q Q L)`` with ``Q = A A^T``: the objective less ``sum_i ||Z_i||^2``, for fixed ``P``."""
    Q = A @ A.T
    return -2 * torch.trace(Q @ K) + torch.trace(Q @ Q @ L)


def _descend(
    objective: Callable[[Tensor], Tensor],
    gradient: Callable[[Tensor], Tensor],
    X: Tensor,
    project: Callable[[Tensor], Tensor],
    max_iter: int,
    tol: float,
) -> Tensor:
    """Projected gradient descent with a backtracking (Armijo) step from ``X``: every accepted step
    lowers ``objective``; stops after ``max_iter`` steps or when the relative decrease is below ``tol``.
    """
    value, step = objective(X), 1.0
    for _ in range(max_iter):
        grad = gradient(X)
        while True:
            candidate = project(X - step * grad)
            new = objective(candidate)
            if new <= value - 1e-4 * (grad * (X - candidate)).sum() or step < 1e-12:
                break
            step /= 2
        decrease = value - new
        X, value, step = candidate, new, step * 2
        if decrease <= tol * value.abs():
            break
    return X


def solve_parts(G1: Tensor, G2: Tensor, P: Tensor, max_iter: int = 500, tol: float = 1e-7) -> Tensor:
    """``argmin_{P >= 0}`` :func:`parts_objective` ``(G1, G2, P)``: a local minimum from ``P`` ``[S, R_S]``."""
    scale = torch.trace(G1).clamp_min(torch.finfo(G1.dtype).tiny)
    G1, G2 = G1 / scale, G2 / scale

    def gradient(P: Tensor) -> Tensor:
        G1P, G2P = G1 @ P, G2 @ P
        return -4 * G1P + 2 * (G2P @ (P.T @ P) + P @ (P.T @ G2P))

    return _descend(lambda P: parts_objective(G1, G2, P), gradient, P, lambda P: P.clamp_min(0), max_iter, tol)


def solve_appearances(K: Tensor, L: Tensor, A: Tensor, max_iter: int = 500, tol: float = 1e-7) -> Tensor:
    """``argmin_A`` :func:`appearance_objective` ``(A, K, L)`` for ``A`` ``[C, R_C]``, a local minimum.

    Starts from the best of: ``A`` itself, the orthonormal leading eigenvectors of ``2K - L``
    (optimal among orthonormal ``A``), and the symmetric minimiser ``Q`` of ``-2 tr(QK) + tr(QQL)``
    (``QL + LQ = 2K``, solved in ``L``'s eigenbasis; optimal when ``R_C = C``) truncated to its
    ``R_C`` leading non-negative eigenpairs as ``A = V sqrt(lambda)``; then descends by gradient.
    """
    scale = torch.trace(K).clamp_min(torch.finfo(K.dtype).tiny)
    K, L, rank = K / scale, L / scale, A.shape[1]
    values, vectors = torch.linalg.eigh(L)
    denominator = (values[:, None] + values[None, :]).clamp_min(values.abs().max() * 1e-12)
    Q = vectors @ (2 * (vectors.T @ K @ vectors) / denominator) @ vectors.T
    q_values, q_vectors = torch.linalg.eigh((Q + Q.T) / 2)
    top = torch.argsort(q_values, descending=True)[:rank]
    candidates = [A, leading_eigenvectors(2 * K - L, rank), q_vectors[:, top] * q_values[top].clamp_min(0).sqrt()]
    start = min(candidates, key=lambda candidate: appearance_objective(candidate, K, L).item())

    def gradient(A: Tensor) -> Tensor:
        KA, LA = K @ A, L @ A
        return -4 * KA + 2 * (LA @ (A.T @ A) + A @ (A.T @ LA))

    return _descend(lambda A: appearance_objective(A, K, L), gradient, start, lambda A: A, max_iter, tol)
