"""Streamed feature maps of a frozen generator: fresh latents every batch, nothing stored.

Every batch is drawn from its own seeded ``torch.Generator`` (a function of the run seed, the
stream and the batch index), so a run is reproducible and a resumed run continues the stream
exactly where the checkpoint left it (the stream restarts at the trainer's global step).

Data-parallel training (``trainer=ddp``): with ``N`` processes of batch ``B`` (``data.batch_size``
is per process), batch ``k`` of a stream is the batch of ``N*B`` latents one process draws for
batch ``k``, and process ``r`` computes the features of its slice ``[r*B, (r+1)*B)``. So ``N``
processes with batch ``B`` see exactly the samples of one process with batch ``N*B``, and one
process sees the stream it always saw. Drawing the ``N*B`` latents on every process costs
little next to the generator's forward.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from panda.base.config import positive_int
from panda.base.errors import ConfigError, FeatureError
from panda.base.progress import tracked
from panda.generators.base import FeatureGenerator

log = logging.getLogger(__name__)


@enum.unique
class Stream(enum.IntEnum):
    """The seeded latent streams; the number enters every batch's seed, so it never changes."""

    TRAIN = 0
    VAL = 1
    INIT = 2  # the HOSVD initialisation
    SAMPLES = 3  # the numbered samples of evaluation
    STATS = 4  # dataset statistics of evaluation
    CALIBRATION = 5  # ROIR protocol: choosing directions
    TEST = 6  # ROIR protocol: measuring them
    FIT = 7  # the baselines' own samples
    NAMING = 8  # the faces the parts are named on (panda.uses.face_regions)
    ROIR_VALIDATION = 9  # ROIR protocol: measuring edits to choose settings by (ranks, layers, knobs), never TEST


PRECISIONS = ("fp32", "bf16", "auto")  # of the generator's forward (data.precision)


def batch_generator(seed: int, stream: Stream, index: int) -> torch.Generator:
    """The seeded RNG of batch ``index`` of ``stream`` (any integer ``seed`` and ``index``: a number beyond the
    range ``torch`` seeds with is taken modulo ``2**64``)."""
    number = (seed * 1_000_003 + stream) * 1_000_000_007 + index
    return torch.Generator().manual_seed(number if -(1 << 63) <= number < 1 << 64 else number % (1 << 64))


def check_precision(precision: str) -> None:
    """A :class:`ConfigError` listing the choices unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"data.precision={precision!r} is unknown; choices: {', '.join(PRECISIONS)}")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU of compute capability 8.0 or later (Ampere on),
    or a CPU with AVX512-BF16 or AMX-BF16 (x86) or BF16 (ARM) instructions, as torch reports them (torch builds
    that do not report CPU capabilities count as without). Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if device.type == "cpu" and capabilities is not None:
        return any(capabilities().get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "bf16"))
    return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """``precision`` (one of :data:`PRECISIONS`) as ``fp32`` or ``bf16``: ``auto`` is ``bf16`` where ``device``
    computes bfloat16 natively (:func:`native_bfloat16`), else ``fp32``."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bfloat16(device) else "fp32"
    return precision


def forward_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a generator's forward on ``device`` runs in for a resolved ``precision`` (``fp32`` or ``bf16``,
    :func:`resolve_precision`): bfloat16 autocast or none."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def layer_features(gen: FeatureGenerator, layer: str, latents: Tensor, precision: str = "fp32") -> Tensor:
    """Features ``[B, C, H, W]`` at ``layer``, computed without autograd (a normal tensor).

    ``precision="bf16"`` runs the forward under bfloat16 autocast on the generator's device and
    returns the features as float32 (the factorisation stays in float32); ``"auto"`` does so where
    the device computes bfloat16 natively (:func:`resolve_precision`).
    Raises :class:`FeatureError` if the generator produced NaN or infinite values.
    """
    precision = resolve_precision(gen.device, precision)
    # not inference mode: its tensors would need a copy to enter autograd (pgd)
    with torch.no_grad(), forward_precision(gen.device, precision):
        features = gen.features(latents.to(gen.device), layer)
    return checked_features(gen, layer, features, precision)


def checked_features(gen: FeatureGenerator, layer: str, features: Tensor, precision: str = "fp32") -> Tensor:
    """``features`` of ``gen`` at ``layer`` (computed in ``precision``) as float32 if they are finite; a
    :class:`FeatureError` otherwise."""
    bf16 = precision == "bf16"
    if bf16:
        features = features.float()
    if not bool(torch.isfinite(features.sum())):  # a NaN or inf anywhere makes the sum non-finite
        raise FeatureError(
            f"generator '{gen.name}' produced NaN or infinite features at layer '{layer}'"
            + (" in bfloat16 (data.precision=bf16 or auto; try fp32)" if bf16 else "")
            + "; check its weights (a damaged checkpoint?) and its input latents"
        )
    return features


class _Endless(IterableDataset):
    """The endless training stream of feature batches, starting at batch ``start``."""

    def __init__(self, module: FeatureDataModule, start: int) -> None:
        self.module, self.start = module, start

    def __iter__(self) -> Iterator[Tensor]:
        index = self.start
        while True:
            yield self.module.batch(Stream.TRAIN, index)
            index += 1


class _Fixed(IterableDataset):
    """A fixed number of samples of one stream (validation, initialisation): this process's part of each batch.

    Iterable, so that Lightning does not shard it again with a sampler: the last batch may leave some
    processes without a part, and they skip it. With :attr:`keep` set the batches are computed once, at the
    first iteration, and every later iteration yields the same tensors.
    """

    def __init__(self, module: FeatureDataModule, stream: Stream, samples: int) -> None:
        self.module, self.stream, self.keep = module, stream, False
        step, part = module.global_batch_size, module.rank_slice()
        self.sizes = [min(step, samples - i) for i in range(0, samples, step)]
        self.indices = [index for index, size in enumerate(self.sizes) if part.start < size]
        self.samples = sum(min(part.stop, self.sizes[index]) - part.start for index in self.indices)  # this process's
        self.kept: list[Tensor] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Tensor]:
        if not self.keep:
            yield from self._batches()
            return
        if self.kept is None:
            self.kept = list(self._batches())
        yield from self.kept

    def _batches(self) -> Iterator[Tensor]:
        for index in self.indices:
            yield self.module.batch(self.stream, index, self.sizes[index])


class FeatureDataModule(pl.LightningDataModule):
    """Feature maps of ``generator`` at ``layer``, computed on the trainer's device.

    Args:
        generator: the frozen generator.
        layer: module path of the layer to read features at.
        batch_size: samples per training step.
        seed: seed of every latent stream.
        val_samples: size of the fixed validation set.
        init_samples: samples used for the HOSVD initialisation of the appearances.
        precision: of the generator's forward for the training and initialisation streams, ``fp32``,
            ``bf16``, or ``auto`` (``bf16`` where the device computes it natively, else ``fp32``; see
            :func:`layer_features`; ``bf16`` is faster where the device has native bfloat16, measured in
            ``experiments/results/solvers_cpu.md``). Validation always runs in ``fp32``, so validation
            errors compare across precisions.
        val_cache_mb: the validation features are computed at the first validation and kept (on the
            trainer's device) when this process's part takes at most this many MiB; beyond it (or at
            0) every validation computes them afresh.
    """

    def __init__(
        self,
        generator: FeatureGenerator,
        layer: str,
        batch_size: int = 64,
        seed: int = 0,
        val_samples: int = 512,
        init_samples: int = 1024,
        precision: str = "fp32",
        val_cache_mb: float = 1024,
    ) -> None:
        super().__init__()
        check_precision(precision)
        for label, count in (("batch_size", batch_size), ("val_samples", val_samples), ("init_samples", init_samples)):
            positive_int(f"data.{label}", count)
        if not val_cache_mb >= 0:
            raise ConfigError(f"data.val_cache_mb={val_cache_mb} must be >= 0")
        self.generator, self.layer, self.precision = generator, layer, precision
        self.batch_size, self.seed = batch_size, seed
        self.val_samples, self.init_samples, self.val_cache_mb = val_samples, init_samples, val_cache_mb
        self._val: dict[tuple[int, int], _Fixed] = {}  # by (global batch, this process's first sample in it)

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.generator.to(self.trainer.strategy.root_device)
        if self.precision == "auto" and stage == "fit":
            device = self.generator.device
            log.info("data.precision=auto: %s on %s", resolve_precision(device, "auto"), device.type)

    @property
    def world_size(self) -> int:
        """Processes of data-parallel training (1 without a trainer)."""
        return 1 if self.trainer is None else self.trainer.world_size

    @property
    def global_batch_size(self) -> int:
        """Samples per training step over all processes: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def rank_slice(self) -> slice:
        """This process's samples of a global batch: ``[r*B, (r+1)*B)`` for global rank ``r``."""
        rank = 0 if self.trainer is None else self.trainer.global_rank
        return slice(rank * self.batch_size, (rank + 1) * self.batch_size)

    def latents(self, stream: Stream, index: int, size: int | None = None) -> Tensor:
        """Latents of batch ``index`` of ``stream`` (``size`` samples, by default :attr:`batch_size`)."""
        return self.generator.sample_latents(size or self.batch_size, batch_generator(self.seed, stream, index))

    def batch(self, stream: Stream, index: int, size: int | None = None) -> Tensor:
        """Features of this process's part (:meth:`rank_slice`) of batch ``index`` of ``stream`` of ``size``
        samples (by default :attr:`global_batch_size`); validation in ``fp32``, the others in :attr:`precision`."""
        precision = "fp32" if stream == Stream.VAL else self.precision
        latents = self.latents(stream, index, size or self.global_batch_size)
        if self.world_size > 1:
            latents = latents[self.rank_slice()]
        return layer_features(self.generator, self.layer, latents, precision)

    def train_dataloader(self) -> DataLoader:
        start = 0
        if self.trainer is not None:
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        return DataLoader(_Endless(self, start), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        layout = (self.global_batch_size, self.rank_slice().start)
        if layout not in self._val:
            val = _Fixed(self, Stream.VAL, self.val_samples)
            val.keep = val.samples * math.prod(self.generator.check_layer(self.layer)) * 4 <= self.val_cache_mb * 2**20
            self._val[layout] = val
        return DataLoader(self._val[layout], batch_size=None)

    def init_dataloader(self) -> Iterator[Tensor]:
        """This process's batches for the HOSVD initialisation (a stream of their own), with their progress logged."""
        loader = DataLoader(_Fixed(self, Stream.INIT, self.init_samples), batch_size=None)
        return tracked(loader, len(loader), f"initialising the appearances A (HOSVD) from {self.init_samples} samples")
