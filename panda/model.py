"""The PandA LightningModule: appearances ``A`` and non-negative parts ``P`` by projected gradient."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from panda import factorization as fz
from panda.errors import ConfigError
from panda.solvers import FIRST_PASSES, StatisticsSolver

SOLVERS = ("pgd", "stats")


def check_ranks(feature_shape: tuple[int, int, int], parts: int, appearances: int | None) -> tuple[int, int]:
    """Validated ``(R_S, R_C)`` for features ``(C, H, W)``; ``appearances=None`` means ``R_C = C``."""
    channels, height, width = feature_shape
    spatial = height * width
    appearances = channels if appearances is None else appearances
    for label, value, limit, dim in (
        ("rank.parts", parts, spatial, f"S = H*W = {height}*{width}"),
        ("rank.appearances", appearances, channels, f"C = {channels}"),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}={value!r} is not an integer: it must be an integer in [1, {limit}] ({dim})")
        if not 1 <= value <= limit:
            raise ConfigError(
                f"{label}={value!r} is out of range: it must be an integer in [1, {limit}] ({dim} at this layer)"
            )
    return parts, appearances


class PandA(pl.LightningModule):
    """Learns ``A`` ``[C, R_C]`` and ``P`` ``[S, R_S] >= 0`` from streamed feature maps.

    Training minimises ``sum_i ||Z_i - A A^T Z_i P P^T||^2`` subject to ``P >= 0`` with one of
    two solvers. ``solver="pgd"``: Adam on the batch-mean error, projecting ``P`` onto ``P >= 0``
    after every optimiser step (with ``orthonormal=True`` ``A`` is also retracted onto orthonormal
    columns). ``solver="stats"``: :class:`~panda.solvers.StatisticsSolver`, alternating block solves
    (at most ``max_iter`` L-BFGS-B iterations each) from statistics streamed over passes of
    ``pass_steps`` (for ``A``) and ``parts_steps`` (for ``P``, on statistics decayed by
    ``parts_decay`` across passes) batches, starting with ``first_pass``.
    ``A`` starts at the HOSVD initialisation (leading eigenvectors of the channel scatter over the
    data module's init samples), ``P`` at ``Uniform(0, init_scale)``.

    Args:
        feature_shape: ``(C, H, W)`` of the layer's feature maps.
        parts: ``R_S``.
        appearances: ``R_C`` (``None``: ``C``).
        lr: Adam learning rate.
        orthonormal: keep ``A``'s columns orthonormal (``pgd`` only).
        init_scale: upper bound of the uniform initialisation of ``P``.
        seed: seed of ``P``'s initialisation.
        solver: ``pgd`` or ``stats``.
        pass_steps: batches per appearances pass of the ``stats`` solver.
        parts_steps: batches per parts pass of the ``stats`` solver.
        parts_decay: weight the ``stats`` solver keeps of earlier parts statistics at each parts pass.
        first_pass: which block the ``stats`` solver updates first: ``parts``, ``appearances``, or
            ``auto``: ``appearances`` if ``R_C = C`` (the HOSVD appearances then span every channel,
            ``A A^T = I``, and a parts solve from them would ignore them), else ``parts``.
        max_iter: L-BFGS-B iterations of each ``stats`` block solve, at most.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        parts: int = 8,
        appearances: int | None = None,
        lr: float = 0.003,
        orthonormal: bool = False,
        init_scale: float = 0.01,
        seed: int = 0,
        solver: str = "pgd",
        pass_steps: int = 8,
        parts_steps: int = 4,
        parts_decay: float = 0.75,
        first_pass: str = "auto",
        max_iter: int = 50,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ConfigError(f"model.solver={solver!r} is unknown; solvers: {', '.join(SOLVERS)}")
        for name, steps in (("pass_steps", pass_steps), ("parts_steps", parts_steps), ("max_iter", max_iter)):
            if steps < 1:
                raise ConfigError(f"model.{name}={steps} must be >= 1")
        if not 0 <= parts_decay < 1:
            raise ConfigError(f"model.parts_decay={parts_decay} must be in [0, 1)")
        if first_pass not in FIRST_PASSES:
            raise ConfigError(f"model.first_pass={first_pass!r} is unknown; choices: {', '.join(FIRST_PASSES)}")
        if orthonormal and solver != "pgd":
            raise ConfigError(f"model.orthonormal=true needs model.solver=pgd, not {solver!r}")
        feature_shape = tuple(int(d) for d in feature_shape)
        parts, appearances = check_ranks(feature_shape, parts, appearances)
        self.save_hyperparameters(
            {
                "feature_shape": feature_shape,
                "parts": parts,
                "appearances": appearances,
                "lr": lr,
                "orthonormal": orthonormal,
                "init_scale": init_scale,
                "seed": seed,
                "solver": solver,
                "pass_steps": pass_steps,
                "parts_steps": parts_steps,
                "parts_decay": parts_decay,
                "first_pass": first_pass,
                "max_iter": max_iter,
            }
        )
        channels, height, width = feature_shape
        generator = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.linalg.qr(torch.randn(channels, appearances, generator=generator))[0])
        self.P = nn.Parameter(fz.random_parts(height * width, parts, generator, init_scale))
        self.register_buffer("initialized", torch.tensor(False))
        self.automatic_optimization = solver == "pgd"

    # ----- the objective -------------------------------------------------------------------------
    def errors(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(sum_i ||Z_i - A A^T Z_i P P^T||^2, sum_i ||Z_i||^2)`` for ``features`` ``[B, C, H, W]``."""
        Z = fz.flatten_features(features)
        return fz.squared_error(Z, self.A, self.P), fz.squared_norm(Z)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor | None:
        if not self.automatic_optimization:
            solver = self.optimizers()
            error, norm = solver.optimizer.accumulate(fz.flatten_features(batch))
            solver.step()
            self.log("train/rel_error", error / norm, prog_bar=True)
            return None
        error, norm = self.errors(batch)
        self.log("train/rel_error", error.detach() / norm, prog_bar=True)
        return error / batch.shape[0]

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        error, norm = self.errors(batch)
        self._val_sums += torch.stack([error.double(), norm.double()])

    def on_validation_epoch_end(self) -> None:
        self.log("val/rel_error", (self._val_sums[0] / self._val_sums[1]).float(), prog_bar=True)

    # ----- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.solver == "stats":
            hp = self.hparams
            return StatisticsSolver(
                self.A, self.P, hp.pass_steps, hp.parts_steps, hp.parts_decay, hp.first_pass, hp.max_iter
            )
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        """Project ``P`` onto ``P >= 0`` (and ``A`` onto orthonormal columns if configured)."""
        fz.project_parts(self.P)
        if self.hparams.orthonormal:
            self.A.copy_(fz.orthonormalize(self.A))

    @torch.no_grad()
    def initialize(self, batches: Any) -> None:
        """HOSVD initialisation of ``A`` from an iterable of feature batches ``[B, C, H, W]``."""
        scatter = sum(fz.channel_scatter(fz.flatten_features(b.to(self.device))) for b in batches)
        self.A.copy_(fz.leading_eigenvectors(scatter, self.A.shape[1]))
        self.initialized.fill_(True)

    def on_fit_start(self) -> None:
        if not bool(self.initialized):  # a resumed run keeps its restored factors
            self.initialize(self.trainer.datamodule.init_dataloader())
