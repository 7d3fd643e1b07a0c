"""Region-conditioned directions from the Jacobian of the image with respect to the code.

For calibration sample ``i`` with Jacobian ``J_i = d x_i / d code`` ``[3*H*W, D]`` and ROI mask
``m_i``, the region and background statistics are ``M_f = mean_i J_i^T diag(m_i) J_i`` and
``M_b = mean_i J_i^T diag(1 - m_i) J_i`` ``[D, D]``.

- LowRankGAN (Zhu et al., 2021): the principal directions of ``M_f`` within the null space of
  ``M_b``'s leading ``background_rank`` directions (the original also denoises both with robust
  PCA; this version does not).
- ReSeFa (Zhu et al., 2022), in the generalised-eigenproblem form of the notes: directions
  maximising ``v^T M_f v / v^T M_b v``, with ``M_b`` regularised by ``eps * trace(M_b) / D``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence

import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jvp, vmap

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.roir.baselines.base import Baseline, Need, unit_rows


def region_statistics(
    gen: FeatureGenerator, latents: Tensor, masks: Sequence[Tensor], resolution: int, chunk: int
) -> list[tuple[Tensor, Tensor]]:
    """``(M_f, M_b)`` ``[D, D]`` (float64) over ``latents`` ``[N, ...]`` for each set of their masks
    ``[N, 1, H, W]`` in ``masks`` (one Jacobian per latent serves every region).

    Images and masks are area-downsampled to at most ``resolution`` px before the Jacobian, whose
    ``D`` columns are computed ``chunk`` at a time (forward-mode products; memory grows with ``chunk``).
    """
    if len(latents) == 0:
        raise ConfigError("region-conditioned baselines need at least one calibration sample with a face")
    sums: list[list[Tensor | float]] = [[0.0, 0.0] for _ in masks]  # M_f and M_b summed, per region
    for i, latent in enumerate(latents):
        code = gen.codes(latent[None]).detach()
        size = min(resolution, masks[0].shape[-1])

        def image(v: Tensor, code: Tensor = code, size: int = size) -> Tensor:
            x = gen.synthesize(code + v)
            return F.adaptive_avg_pool2d(x, size).flatten() if x.shape[-1] != size else x.flatten()

        zero = torch.zeros(code.shape[-1], device=code.device)
        basis = torch.eye(len(zero), device=code.device)
        columns = vmap(lambda t, zero=zero, image=image: jvp(image, (zero,), (t,))[1], chunk_size=chunk)(basis)
        jacobian = columns.T.double()  # [3*h*w, D]
        for total, region_masks in zip(sums, masks, strict=True):
            weight = F.adaptive_avg_pool2d(region_masks[i][None].to(jacobian), size)[0].expand(3, size, size)
            weight = weight.flatten()[:, None]
            total[0] = total[0] + jacobian.T @ (weight * jacobian)
            total[1] = total[1] + jacobian.T @ ((1 - weight) * jacobian)
    return [(inside / len(latents), outside / len(latents)) for inside, outside in sums]


_KEPT: dict[str, tuple[list[tuple[Tensor, Tensor]], float]] = {}  # the last statistics and their seconds


class JacobianBaseline(Baseline):
    """A region-conditioned baseline solved from :func:`region_statistics` (resolution, chunk: of the Jacobian);
    fitted to several regions, it computes each calibration sample's Jacobian once."""

    needs = frozenset({Need.REGION_FIT})

    def __init__(self, gen: FeatureGenerator, resolution: int, chunk: int) -> None:
        super().__init__(gen)
        self.resolution, self.chunk = resolution, chunk

    @abstractmethod
    def solve(self, region: Tensor, background: Tensor) -> Tensor:
        """Ranked unit directions ``[K, D]`` from ``M_f`` and ``M_b``."""

    def find(self, latents: Tensor, masks: Tensor | None) -> Tensor:
        return self.solve(*region_statistics(self.gen, latents, [masks], self.resolution, self.chunk)[0])

    def fit_regions(self, latents: Tensor, masks: Mapping[str, Tensor]) -> dict[str, Baseline]:
        """A copy fitted to each region; the statistics of the same generator, latents and masks are computed once
        (the last ones are kept: settings tried in turn on the same faces, LowRankGAN and ReSeFa, share them), and
        each copy records the seconds they took, split among the regions."""
        device = self.gen.device
        digest = hashlib.sha256(f"{id(self.gen)} {self.resolution} {self.chunk} {list(masks)}".encode())
        for tensor in (latents, *masks.values()):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key not in _KEPT:
            start = time.perf_counter()
            statistics = region_statistics(
                self.gen, latents.to(device), [m.to(device) for m in masks.values()], self.resolution, self.chunk
            )
            _KEPT.clear()
            _KEPT[key] = statistics, time.perf_counter() - start
        statistics, seconds = _KEPT[key]
        shared = seconds / len(masks)  # the Jacobians' time, split among the regions
        return {
            region: copy.copy(self)._found(lambda pair=pair: self.solve(*pair), shared)
            for region, pair in zip(masks, statistics, strict=True)
        }


class LowRankGAN(JacobianBaseline):
    """Args: gen; background_rank: leading directions of ``M_b`` the edits must not move along;
    resolution, chunk: of the Jacobian (:func:`region_statistics`).

    Directions: eigenvectors of ``N M_f N`` with non-zero eigenvalue, ``N`` the projector onto the
    null space of ``M_b``'s leading ``background_rank`` eigenvectors: orthonormal, inside that null
    space, ranked by how much they change the region.
    """

    name = "lowrankgan"

    def __init__(self, gen: FeatureGenerator, background_rank: int, resolution: int, chunk: int) -> None:
        super().__init__(gen, resolution, chunk)
        if background_rank < 0:
            raise ConfigError(f"lowrankgan background_rank must be >= 0, got {background_rank}")
        self.background_rank = background_rank

    def solve(self, region: Tensor, background: Tensor) -> Tensor:
        dim = len(region)
        if self.background_rank >= dim:
            raise ConfigError(f"lowrankgan background_rank must be below the code dimension {dim}")
        leading = torch.linalg.eigh(background)[1].flip(1)[:, : self.background_rank]
        null = torch.eye(dim, dtype=region.dtype, device=region.device) - leading @ leading.T
        vectors = torch.linalg.eigh(null @ region @ null)[1]  # by ascending eigenvalue
        keep = dim - self.background_rank  # the rest have eigenvalue 0 (they span the background's directions)
        return unit_rows(vectors.flip(1)[:, :keep].T).float()


class ReSeFa(JacobianBaseline):
    """Args: gen; eps: regularisation of ``M_b`` relative to its mean eigenvalue; resolution, chunk:
    of the Jacobian (:func:`region_statistics`)."""

    name = "resefa"

    def __init__(self, gen: FeatureGenerator, eps: float, resolution: int, chunk: int) -> None:
        super().__init__(gen, resolution, chunk)
        self.eps = eps

    def solve(self, region: Tensor, background: Tensor) -> Tensor:
        dim = len(region)
        identity = torch.eye(dim, dtype=background.dtype, device=background.device)
        regularised = background + self.eps * background.trace() / dim * identity
        _, vectors = scipy.linalg.eigh(region.cpu().numpy(), regularised.cpu().numpy())  # ascending ratios
        return unit_rows(torch.from_numpy(vectors[:, ::-1].T.copy())).float()
