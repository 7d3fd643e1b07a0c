"""The PandA factorisation, as pure tensor functions.

Notation (Oldfield et al., ICLR 2023): a batch of feature maps ``Z`` has shape ``[B, C, S]``
(channel fibres as columns, ``S = H * W``); appearances ``A`` are ``[C, R_C]``; parts ``P`` are
``[S, R_S]`` with ``P >= 0``. Sample coefficients are ``Lambda_i = A^T Z_i P`` (``[B, R_C, R_S]``)
and the reconstruction is ``A Lambda_i P^T``. The objective is

    sum_i || Z_i - A A^T Z_i P P^T ||_F^2   subject to   P >= 0.

Nothing here knows about generators, Lightning or configs.
"""

from __future__ import annotations

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


def spatial_scatter(Z: Tensor) -> Tensor:
    """``sum_i Z_i^T Z_i`` over the batch ``Z`` ``[B, C, S]``: ``[S, S]``."""
    return torch.einsum("bcs,bct->st", Z, Z)


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


def parts_only_error(G: Tensor, P: Tensor) -> Tensor:
    """The objective when ``A A^T = I`` (``R_C = C``, orthonormal ``A``), from sufficient statistics.

    With ``G = sum_i Z_i^T Z_i`` (``[S, S]``, see :func:`spatial_scatter`) and ``M = P P^T``,
    ``sum_i ||Z_i - Z_i M||^2 = tr(G) - 2 tr(P^T G P) + tr(P^T P P^T G P)``; no pass over the
    data is needed once ``G`` is known.
    """
    GP = G @ P
    return torch.trace(G) - 2 * torch.trace(P.T @ GP) + torch.trace((P.T @ P) @ (P.T @ GP))


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
