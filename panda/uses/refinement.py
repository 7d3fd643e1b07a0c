"""Sample-specific parts: refine the global parts ``P`` for individual samples (unaligned data).

For sample ``i`` with features ``Z_i`` ``[C, S]`` the parts ``P_i`` ``[S, R_S]`` start at the global
``P`` and minimise ``||Z_i - A A^T Z_i P_i P_i^T||_F^2`` with ``A`` fixed, by projected gradient
(Adam steps, each followed by clamping ``P_i`` at 0), as in training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from panda.method.factorization import project_parts


def sample_errors(Z: Tensor, A: Tensor, P: Tensor) -> Tensor:
    """``||Z_i - A A^T Z_i P_i P_i^T||_F^2`` per sample: ``Z`` ``[B, C, S]``, ``P`` ``[B, S, R_S]`` -> ``[B]``."""
    projected = A @ (A.T @ Z)
    return (Z - projected @ P @ P.transpose(1, 2)).square().sum(dim=(1, 2))


def refine_parts(Z: Tensor, A: Tensor, P: Tensor, steps: int = 200, lr: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Refined parts ``P_i`` ``[B, S, R_S] >= 0`` for features ``Z`` ``[B, C, S]``, starting at ``P`` ``[S, R_S]``.

    Returns ``(P_i, errors)`` with ``errors`` ``[steps + 1, B]``, each sample's error before every
    step and after the last. Samples are independent (their errors are summed, and Adam acts
    elementwise), so a batch refines every sample at once.
    """
    Z, A = Z.detach().float(), A.detach().float()
    P_i = P.detach().float().expand(Z.shape[0], -1, -1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([P_i], lr=lr)
    errors = []
    for _ in range(steps):
        error = sample_errors(Z, A, P_i)
        errors.append(error.detach())
        optimizer.zero_grad()
        error.sum().backward()
        optimizer.step()
        with torch.no_grad():
            project_parts(P_i)
    with torch.no_grad():
        errors.append(sample_errors(Z, A, P_i))
    return P_i.detach(), torch.stack(errors)
