"""Optimisers of the PandA objective other than Adam + projection (the ``model/solver`` config group).

:class:`StatisticsSolver` (``model/solver=stats``, options ``model.solver.*``) replaces thousands of
gradient steps by block solves computed from sufficient statistics, streamed over "passes" of
batches with memory independent of the number of samples (``[S, S]`` and ``[C, C]`` sums; see the
statistics section of :mod:`panda.method.factorization`):

- an appearances pass (``appearance_steps`` batches) accumulates ``K = sum_i Z_i M Z_i^T`` and
  ``L = sum_i Z_i M^2 Z_i^T`` (``M = P P^T``) and moves ``A`` to the best of its candidates
  (:func:`~panda.method.factorization.solve_appearances`);
- a parts pass (``parts_steps`` batches) adds ``G1 = sum_i Z_i^T Q Z_i`` and
  ``G2 = sum_i Z_i^T Q^2 Z_i`` (``Q = A A^T``) to the parts statistics, which keep the weight
  ``parts_decay`` of the earlier passes, then solves the non-negative problem in ``P`` as posed
  (:func:`~panda.method.factorization.solve_parts`, L-BFGS-B).

Passes alternate, starting with ``first_pass``. Each ``A`` update lowers the objective on the
samples of its pass, each ``P`` update the objective on the decayed sum over the parts passes so
far. ``A`` is not constrained, as in the projected-gradient solver. A solve stops after
``max_iter`` L-BFGS-B iterations: the next passes' statistics move the blocks again anyway, and
solving each pass to convergence (hundreds of iterations at ``R_C = 16``) made the solves the
largest cost of a step without lowering the final error.

Why this design: the parts statistics cost ``O(S^2 R_C)`` a sample against ``O(C S R_S)`` for the
appearances', so parts passes are short, and a parts solve on few samples alone is noisy; the
decayed sum averages it over several passes at no extra cost (``A`` moves little between them).
The first pass picks the basin of a non-convex problem. With ``R_C < C`` the HOSVD appearances
span the leading channel subspace and a parts solve from them starts well; with ``R_C = C`` they
span every channel (``A A^T = I``), a parts solve from them ignores the appearances, and starting
with the appearances (fitted to the random initial parts) lands lower; with ``R_C < C`` it is the
other way round (measurements in ``experiments/results/solvers_cpu.md``). ``first_pass=auto`` picks
accordingly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from panda.base.errors import ConfigError
from panda.method import factorization as fz

FIRST_PASSES = ("auto", "parts", "appearances")


class StatisticsSolver(torch.optim.Optimizer):
    """Alternating block solves of ``A`` and ``P >= 0`` from streamed statistics.

    Call :meth:`accumulate` with every batch ``Z`` ``[B, C, S]``, then :meth:`step`; a step that
    completes a pass updates ``P`` (``parts_steps`` batches) or ``A`` (``appearance_steps``
    batches), alternately, starting with ``first_pass``. The accumulators (the parts statistics
    ``G1``, ``G2`` and the appearance statistics ``K``, ``L``) live in the optimiser state, so a
    checkpoint taken mid-pass resumes exactly. The defaults are in ``conf/model/solver/stats.yaml``.

    Args:
        params: ``[A, P]``, the appearances ``[C, R_C]`` and the parts ``[S, R_S]``.
        appearance_steps: batches per appearances pass.
        parts_steps: batches per parts pass.
        parts_decay: weight kept of the earlier parts statistics at each parts pass, in ``[0, 1)``.
        first_pass: the block updated first: ``"parts"``, ``"appearances"``, or ``"auto"``
            (``"appearances"`` if ``A`` is square, ``R_C = C``, else ``"parts"``; see the module notes).
        max_iter: L-BFGS-B iterations of each block solve, at most.

    Raises:
        ConfigError: an option out of range.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        appearance_steps: int,
        parts_steps: int,
        parts_decay: float,
        first_pass: str,
        max_iter: int,
    ) -> None:
        A, P = params
        for name, steps in (
            ("appearance_steps", appearance_steps),
            ("parts_steps", parts_steps),
            ("max_iter", max_iter),
        ):
            if steps < 1:
                raise ConfigError(f"model.solver.{name}={steps} must be >= 1")
        if not 0 <= parts_decay < 1:
            raise ConfigError(f"model.solver.parts_decay={parts_decay} must be in [0, 1)")
        if first_pass not in FIRST_PASSES:
            raise ConfigError(f"model.solver.first_pass={first_pass!r} is unknown; choices: {', '.join(FIRST_PASSES)}")
        if first_pass == "auto":
            first_pass = "appearances" if A.shape[0] == A.shape[1] else "parts"
        defaults = {"appearance_steps": appearance_steps, "parts_steps": parts_steps, "parts_decay": parts_decay}
        super().__init__([A, P], {**defaults, "first_pass": first_pass, "max_iter": max_iter})
        channels, spatial = A.shape[0], P.shape[0]
        self.state[A].update(
            G1=torch.zeros(spatial, spatial, dtype=A.dtype, device=A.device),
            G2=torch.zeros(spatial, spatial, dtype=A.dtype, device=A.device),
            K=torch.zeros(channels, channels, dtype=A.dtype, device=A.device),
            L=torch.zeros(channels, channels, dtype=A.dtype, device=A.device),
            batches=0,
            passes=0,
        )

    @property
    def _appearances(self) -> nn.Parameter:
        return self.param_groups[0]["params"][0]

    @property
    def _parts(self) -> nn.Parameter:
        return self.param_groups[0]["params"][1]

    def updating_parts(self) -> bool:
        """Whether the current pass updates ``P`` (else ``A``)."""
        first = 0 if self.param_groups[0]["first_pass"] == "parts" else 1
        return self.state[self._appearances]["passes"] % 2 == first

    @torch.no_grad()
    def accumulate(self, Z: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Add the batch ``Z`` ``[B, C, S]`` to the current pass.

        Returns the batch's ``(sum_i ||Z_i - A A^T Z_i P P^T||^2, sum_i ||Z_i||^2)``, read off the
        same statistics. Statistics are summed in the parameters' precision (a checkpoint restores them
        so) and the updates are solved in float64. In data-parallel training ``reduce`` sums a tensor
        over the processes: every batch's statistics are summed (one all-reduce) before they enter the
        state, so every process holds the same state, solves the same system, and a checkpoint of any
        process resumes all of them; the error returned is then that of the global batch.
        """
        state, A, P = self.state[self._appearances], self._appearances.detach(), self._parts.detach()
        norm = fz.squared_norm(Z)
        parts = self.updating_parts()
        first, second = fz.parts_statistics(Z, A) if parts else fz.appearance_statistics(Z, P)
        if reduce is not None:
            first, second, norm = _summed(reduce, first, second, norm)
        state["G1" if parts else "K"] += first
        state["G2" if parts else "L"] += second
        objective = fz.parts_objective(first, second, P) if parts else fz.appearance_objective(A, first, second)
        error = norm + objective
        state["batches"] += 1
        return error, norm

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        """Count the batch; at the end of a pass, update ``P`` or ``A``."""
        if closure is not None:
            closure()
        A, P, group = self._appearances, self._parts, self.param_groups[0]
        state = self.state[A]
        parts = self.updating_parts()
        if state["batches"] < group["parts_steps" if parts else "appearance_steps"]:
            return
        if parts:
            P.copy_(fz.solve_parts(state["G1"], state["G2"], P, max_iter=group["max_iter"]))
            state["G1"].mul_(group["parts_decay"])
            state["G2"].mul_(group["parts_decay"])
        else:
            A.copy_(fz.solve_appearances(state["K"], state["L"], A, max_iter=group["max_iter"]))
            state["K"].zero_()
            state["L"].zero_()
        state["batches"] = 0
        state["passes"] += 1


def _summed(reduce: Callable[[Tensor], Tensor], *tensors: Tensor) -> list[Tensor]:
    """``tensors`` each summed over the processes by ``reduce``, in one call on their concatenation."""
    flat = reduce(torch.cat([t.reshape(-1) for t in tensors]))
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]
