"""The PandA LightningModule: appearances ``A`` and non-negative parts ``P``, learnt by a configured solver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from panda.base.errors import ConfigError
from panda.method import factorization as fz
from panda.method.solvers import StatisticsSolver

log = logging.getLogger(__name__)


LABELS = "part_labels"  # the LightningModule's attribute holding (labels, scores) once PartNames has named the parts


def part_labels(pl_module: pl.LightningModule) -> tuple[list[str] | None, list[float] | None]:
    """The parts' labels and scores the training callback ``PartNames`` set on ``pl_module``, or ``(None, None)``."""
    return getattr(pl_module, LABELS, (None, None))


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


class RelativeError(Metric):
    """``sum ||Z_i - A A^T Z_i P P^T||^2 / sum ||Z_i||^2`` over every batch of an epoch, of every process.

    Both sums are float64 states summed across processes (data-parallel validation), then divided.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("error", "norm"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, error: Tensor, norm: Tensor) -> None:
        """Add a batch's ``(sum_i ||Z_i - A A^T Z_i P P^T||^2, sum_i ||Z_i||^2)``."""
        self.error += error.double()
        self.norm += norm.double()

    def compute(self) -> Tensor:
        return (self.error / self.norm).float()


class CoefficientCubes(Metric):
    """Each appearance's cubed coefficients summed over every batch of an epoch, of every process
    (:func:`~panda.method.factorization.coefficient_cubes`; a float64 state summed across processes)."""

    full_state_update = False

    def __init__(self, appearances: int) -> None:
        super().__init__()
        self.add_state("cubes", torch.zeros(appearances, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, Z: Tensor, A: Tensor, P: Tensor) -> None:
        """Add the batch ``Z`` ``[B, C, S]`` under the factors ``A``, ``P``."""
        self.cubes += fz.coefficient_cubes(Z, A, P)

    def compute(self) -> Tensor:
        return self.cubes


class PandA(pl.LightningModule):
    """Learns ``A`` ``[C, R_C]`` and ``P`` ``[S, R_S] >= 0`` from streamed feature maps.

    Training minimises ``sum_i ||Z_i - A A^T Z_i P P^T||^2`` subject to ``P >= 0`` with the
    optimiser that ``solver`` builds from ``[A, P]`` (the ``model/solver`` config group). A
    gradient optimiser (``model/solver=pgd``: Adam) steps on the batch-mean error, and ``P`` is
    projected onto ``P >= 0`` after every step (with ``orthonormal=True`` ``A`` is also retracted
    onto orthonormal columns). A :class:`~panda.method.solvers.StatisticsSolver` (``model/solver=stats``)
    is fed every batch and updates ``A`` and ``P`` by block solves at the end of its passes.
    ``A`` starts at the HOSVD initialisation (leading eigenvectors of the channel scatter over the
    data module's init samples; skipped where it cannot change the result, :meth:`needs_initialization`),
    ``P`` at ``Uniform(0, init_scale)``. The defaults are in
    ``conf/model/``.

    Data-parallel training (``trainer=ddp``): DDP averages the gradients, so every process takes the
    step of the global batch's mean; the statistics solver and the HOSVD initialisation sum their
    statistics over the processes (:meth:`sum_across`), so every process holds the same ``A`` and
    ``P``; the validation error sums over every process's samples (:class:`RelativeError`).

    Args:
        feature_shape: ``(C, H, W)`` of the layer's feature maps.
        parts: ``R_S``.
        appearances: ``R_C`` (``None``: ``C``).
        solver: builds the optimiser from the parameters ``[A, P]``, e.g.
            ``functools.partial(torch.optim.Adam, lr=0.003)``.
        orthonormal: keep ``A``'s columns orthonormal (gradient optimisers only).
        init_scale: upper bound of the uniform initialisation of ``P``.
        seed: seed of ``P``'s initialisation.

    Raises:
        ConfigError: a rank out of range, a ``solver`` that is not callable, ``orthonormal`` with
            a statistics solver, or (from the solver) one of its options out of range.
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        parts: int,
        appearances: int | None,
        solver: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
        orthonormal: bool,
        init_scale: float,
        seed: int,
    ) -> None:
        super().__init__()
        if not callable(solver):
            raise ConfigError(
                f"model.solver={solver!r} is not a solver: pick one with model/solver=pgd or model/solver=stats"
            )
        feature_shape = tuple(int(d) for d in feature_shape)
        parts, appearances = check_ranks(feature_shape, parts, appearances)
        # the solver factory is not saved: Lightning resumes a checkpoint with torch.load(weights_only=True),
        # which loads plain data only; the run's config (factors.pt, the logs) records the solver
        self.save_hyperparameters(
            {
                "feature_shape": feature_shape,
                "parts": parts,
                "appearances": appearances,
                "orthonormal": orthonormal,
                "init_scale": init_scale,
                "seed": seed,
            }
        )
        channels, height, width = feature_shape
        generator = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.linalg.qr(torch.randn(channels, appearances, generator=generator))[0])
        self.P = nn.Parameter(fz.random_parts(height * width, parts, generator, init_scale))
        self.register_buffer("initialized", torch.tensor(False))
        self.val_error = RelativeError()
        self.val_cubes = CoefficientCubes(appearances)
        # (order, signs) of the canonical form of A, from the last validation (exported_appearances)
        self.canonical: tuple[Tensor, Tensor] | None = None
        # built now, so that a bad option stops the run before training starts
        self.solver = solver([self.A, self.P])
        self.automatic_optimization = not isinstance(self.solver, StatisticsSolver)
        if orthonormal and not self.automatic_optimization:
            raise ConfigError("model.orthonormal=true needs model/solver=pgd, not model/solver=stats")

    # ----- the objective -------------------------------------------------------------------------
    def errors(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(sum_i ||Z_i - A A^T Z_i P P^T||^2, sum_i ||Z_i||^2)`` for ``features`` ``[B, C, H, W]``."""
        Z = fz.flatten_features(features)
        return fz.squared_error(Z, self.A, self.P), fz.squared_norm(Z)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor | None:
        if not self.automatic_optimization:
            solver = self.optimizers()
            error, norm = solver.optimizer.accumulate(fz.flatten_features(batch), self.sum_across())
            solver.step()
            self.log("train/rel_error", error / norm, prog_bar=True)
            return None
        error, norm = self.errors(batch)
        self.log("train/rel_error", error.detach() / norm, prog_bar=True)
        return error / batch.shape[0]

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self.val_error.update(*self.errors(batch))
        self.val_cubes.update(fz.flatten_features(batch), self.A, self.P)

    def on_validation_epoch_end(self) -> None:
        # logged here, by every process (one may have had no batch), which computes and resets the metric
        self.log("val/rel_error", self.val_error, prog_bar=True)
        self.canonical = fz.canonical_order(self.A.detach(), self.val_cubes.compute())
        self.val_cubes.reset()

    @torch.no_grad()
    def exported_appearances(self) -> Tensor:
        """``A`` ``[C, R_C]`` as the run exports it (``factors.pt``, ROIR): in the canonical numbering and signs
        (:func:`~panda.method.factorization.canonical_order`) of the last validation (its cubed coefficients on the
        validation samples), which training runs after its last step.

        Raises:
            RuntimeError: the model has not been validated yet.
        """
        if self.canonical is None:
            raise RuntimeError("the canonical form of the appearances needs a validation of the factors first")
        return fz.canonical_appearances(self.A.detach(), *self.canonical)

    def sum_across(self) -> Callable[[Tensor], Tensor] | None:
        """Sums a tensor over the processes of data-parallel training; ``None`` with one process."""
        if self._trainer is None or self.trainer.world_size == 1:
            return None
        return lambda tensor: self.trainer.strategy.reduce(tensor, reduce_op="sum")

    # ----- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.solver

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
    def initialize(self, batches: Any, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """HOSVD initialisation of ``A`` from an iterable of feature batches ``[B, C, H, W]``; ``reduce`` sums the
        channel scatter over the processes of data-parallel training (each one's ``batches`` are its part)."""
        channels = self.A.shape[0]
        zero = torch.zeros(channels, channels, dtype=self.A.dtype, device=self.device)
        scatter = sum((fz.channel_scatter(fz.flatten_features(b.to(self.device))) for b in batches), zero)
        if reduce is not None:
            scatter = reduce(scatter)
        self.A.copy_(fz.leading_eigenvectors(scatter, self.A.shape[1]))
        self.initialized.fill_(True)

    def needs_initialization(self) -> bool:
        """Whether the HOSVD initialisation can change the result: not with ``R_C = C`` and the statistics solver.
        There any orthonormal ``A`` spans every channel (``A A^T = I``, as the HOSVD's does): a parts solve sees
        only ``A A^T``, and an appearances solve starts from candidates that do not depend on ``A``, since an
        orthonormal ``A`` is no better than the first of them
        (:func:`~panda.method.factorization.solve_appearances`)."""
        channels, appearances = self.A.shape
        return appearances < channels or self.automatic_optimization

    def on_fit_start(self) -> None:
        if bool(self.initialized):  # a resumed run keeps its restored factors
            return
        if self.needs_initialization():
            self.initialize(self.trainer.datamodule.init_dataloader(), self.sum_across())
        else:
            log.info("R_C = C with the statistics solver: A starts as an orthonormal basis of every channel (no HOSVD)")
            self.initialized.fill_(True)
