"""The baselines on the real DCGAN (and StyleSpace on a tiny StyleGAN2): shapes, determinism, the math."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from panda.base.errors import ConfigError
from panda.generators.base import FeatureGenerator
from panda.generators.genforce import ProGAN, StyleGAN1
from panda.generators.stylegan2 import StyleGAN2
from panda.generators.stylegan3 import StyleGAN3
from panda.roir.baselines import Baseline, GANSpace, LowRankGAN, ReSeFa, SeFa, StyleSpace
from panda.roir.baselines.ganspace import first_activation
from panda.roir.baselines.jacobian import region_statistics
from panda.roir.editors import PandAEditor
from tests.conftest import PROGAN_ARCH, ROOT, STYLEGAN1_ARCH, STYLEGAN2_ARCH, STYLEGAN3_ARCHS

OPTIONS = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "roir" / "default.yaml").baselines)


def configured(cls: type[Baseline], gen: FeatureGenerator, **options: Any) -> Baseline:
    """``cls`` on ``gen`` with its options of conf/roir/default.yaml, ``options`` replacing some."""
    return cls(gen, **{**OPTIONS[cls.name], **options})


def jacobian(cls: type[Baseline]) -> dict[str, int]:
    """The options of :func:`region_statistics` that ``cls`` is configured with."""
    return {key: OPTIONS[cls.name][key] for key in ("resolution", "chunk")}


@pytest.fixture(scope="module")
def calibration(dcgan) -> tuple[torch.Tensor, torch.Tensor]:
    """Six latents and a mask over the middle of the face (rows 36-47: roughly the mouth)."""
    latents = dcgan.sample_latents(6, torch.Generator().manual_seed(1))
    masks = torch.zeros(6, 1, 64, 64)
    masks[..., 36:48, 20:44] = 1
    return latents, masks


def test_every_baseline_gives_ranked_unit_directions_deterministically(dcgan, calibration):
    latents, masks = calibration
    for make in (lambda: configured(GANSpace, dcgan, samples=400, batch_size=200), lambda: configured(SeFa, dcgan)):
        first, second = make().fit(latents), make().fit(latents)
        assert first.directions.shape == (100, 100) and first.seconds > 0
        torch.testing.assert_close(first.directions, second.directions)
        torch.testing.assert_close(first.directions.norm(dim=1), torch.ones(100))
    for cls, count in ((LowRankGAN, 80), (ReSeFa, 100)):  # LowRankGAN: D - background_rank (20)
        first = configured(cls, dcgan).fit(latents[:3], masks[:3])
        second = configured(cls, dcgan).fit(latents[:3], masks[:3])
        assert first.directions.shape == (count, 100)
        torch.testing.assert_close(first.directions, second.directions)
        torch.testing.assert_close(first.directions.norm(dim=1), torch.ones(count))


def test_sefa_matches_a_direct_eigendecomposition_of_the_first_weight(dcgan, calibration):
    directions = configured(SeFa, dcgan).fit(calibration[0]).directions.double().numpy()
    weight = dcgan.net.main[0].weight.detach().double().numpy().reshape(100, -1)  # [z, 512*4*4]
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(weight @ weight.T)
    order = np.argsort(-values.real)
    for rank in range(5):
        assert abs(directions[rank] @ vectors[:, order[rank]].real) == pytest.approx(1.0, abs=1e-6)


def test_ganspace_regresses_principal_components_of_activations_back_to_z(dcgan):
    assert first_activation(dcgan) == "main.2"  # main.0 is linear in z
    ganspace = configured(GANSpace, dcgan, samples=600, components=10, batch_size=300).fit(torch.zeros(1, 100))
    assert ganspace.directions.shape == (10, 100)
    # moving z along direction 0 moves the activations mostly along their first principal component
    z = dcgan.sample_latents(64, torch.Generator().manual_seed(5))
    with torch.inference_mode():
        before = dcgan.features(z, "main.2").flatten(1)
        changes = [
            (dcgan.features(z + 2.0 * ganspace.directions[k], "main.2").flatten(1) - before).norm(dim=1).mean()
            for k in (0, 9)
        ]
    assert changes[0] > changes[1]


def test_lowrankgan_directions_change_the_region_most_within_the_background_null_space(dcgan, calibration):
    latents, masks = calibration[0][:3], calibration[1][:3]
    method = configured(LowRankGAN, dcgan, background_rank=10).fit(latents, masks)
    region, background = (m.float() for m in region_statistics(dcgan, latents, [masks], **jacobian(LowRankGAN))[0])
    leading = torch.linalg.eigh(background)[1][:, -10:]
    v = method.directions
    assert v.shape == (90, 100)  # D - background_rank orthonormal directions
    torch.testing.assert_close(v @ v.T, torch.eye(90), atol=1e-4, rtol=0)
    assert (v @ leading).abs().max() < 1e-4  # no motion along the background's leading directions
    energy = torch.einsum("kd,de,ke->k", v, region, v)
    assert (energy[:-1] >= energy[1:] - 1e-4 * energy[0]).all()  # ranked by the change in the region
    null = torch.eye(100) - leading @ leading.T
    random = torch.nn.functional.normalize(torch.randn(50, 100, generator=torch.Generator().manual_seed(0)) @ null)
    assert energy[0] >= torch.einsum("kd,de,ke->k", random, region, random).max()


def test_jacobian_statistics_do_not_depend_on_the_chunk_size():
    torch.manual_seed(0)
    gen = StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH)
    latents = gen.sample_latents(2, torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:20, 8:20] = 1
    one = region_statistics(gen, latents, [masks], resolution=16, chunk=1)[0]
    all_at_once = region_statistics(gen, latents, [masks], resolution=16, chunk=16)[0]
    for a, b in zip(one, all_at_once, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))  # float32 round-off
    for cls in (LowRankGAN, ReSeFa):  # the Jacobian methods edit w of a style-based generator
        method = configured(cls, gen, resolution=16, chunk=4, **({"background_rank": 4} if cls is LowRankGAN else {}))
        method.fit(latents, masks)
        assert method.directions.shape[1] == 16


def test_resefa_directions_maximise_the_region_to_background_ratio(dcgan, calibration):
    latents, masks = calibration[0][:3], calibration[1][:3]
    method = configured(ReSeFa, dcgan, eps=0.01).fit(latents, masks)
    region, background = (m.float() for m in region_statistics(dcgan, latents, [masks], **jacobian(ReSeFa))[0])
    background = background + 0.01 * background.trace() / 100 * torch.eye(100)

    def ratio(v: torch.Tensor) -> torch.Tensor:
        return (v @ region @ v) / (v @ background @ v)

    ratios = torch.stack([ratio(v) for v in method.directions])
    assert (ratios[:-1] >= ratios[1:] - 1e-3 * ratios[0]).all()  # ranked by the ratio
    random = torch.nn.functional.normalize(torch.randn(50, 100, generator=torch.Generator().manual_seed(0)), dim=1)
    assert ratios[0] >= max(ratio(v) for v in random)
    with pytest.raises(ConfigError, match="region-conditioned"):
        configured(ReSeFa, dcgan).fit(latents)


def test_a_batch_of_different_edits_equals_each_edit_alone(dcgan, run, calibration):
    latents = calibration[0][:2]
    torch.manual_seed(0)
    style = StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH)
    style_latents = style.sample_latents(2, torch.Generator().manual_seed(0))
    masks = torch.ones(2, 1, 32, 32)
    cases = [(configured(SeFa, dcgan).fit(latents), latents, dcgan), (PandAEditor(run), latents, dcgan)]
    cases.append((configured(StyleSpace, style, channels=8).fit(style_latents, masks), style_latents, style))
    for editor, latents, gen in cases:
        prepared = editor.prepare(latents)
        both = editor.images(prepared, torch.tensor([3, 7]), torch.tensor([2.0, -1.5]))
        alone = [
            editor.images(editor.prepare(latents[b : b + 1]), torch.tensor([k]), torch.tensor([s]))
            for b, (k, s) in enumerate([(3, 2.0), (7, -1.5)])
        ]
        torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=1e-5)
        unedited = editor.images(prepared, torch.tensor([3, 7]), torch.zeros(2))
        with torch.inference_mode():
            torch.testing.assert_close(unedited, gen(latents), atol=1e-5, rtol=1e-5)


def test_stylespace_picks_style_channels_that_change_the_region(dcgan):
    torch.manual_seed(0)
    gen = StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH)
    latents = gen.sample_latents(4, torch.Generator().manual_seed(0))
    masks = torch.zeros(4, 1, 32, 32)
    masks[..., :16, :16] = 1  # the top-left quarter
    method = configured(StyleSpace, gen, channels=5).fit(latents, masks)
    assert method.directions.shape == (5, 5) and len(method.selected) == 5
    assert all(layer in gen.style_layers() for layer, _ in method.selected)
    with torch.inference_mode():
        original = gen(latents)
    edited = method.images(method.prepare(latents), torch.zeros(4, dtype=torch.long), torch.full((4,), 3.0))
    change = (edited - original).abs().sum(1, keepdim=True)
    assert (change * masks).sum() / change.sum() > 0.25  # the best channel acts mostly on the quarter
    with pytest.raises(ConfigError, match="StyleSpace needs style channels"):
        configured(StyleSpace, dcgan)


@pytest.mark.parametrize("name", ["progan", "stylegan1", "stylegan2", "stylegan3"])
def test_latent_baselines_edit_every_architecture(name):
    torch.manual_seed(0)
    gen = {
        "progan": lambda: ProGAN(random_init=True, arch=PROGAN_ARCH),
        "stylegan1": lambda: StyleGAN1(random_init=True, arch=STYLEGAN1_ARCH),
        "stylegan2": lambda: StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH),
        "stylegan3": lambda: StyleGAN3(random_init=True, arch=STYLEGAN3_ARCHS["T"]),
    }[name]()
    latents = gen.sample_latents(3, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        original = gen(latents)
    ganspace = configured(GANSpace, gen, samples=64, components=4, batch_size=32)
    assert (ganspace.layer is None) == gen.style_based  # PCA of w for style-based generators
    for method in (ganspace, configured(SeFa, gen)):
        method.fit(latents)
        assert method.directions.shape[1] == 16  # z_dim (ProGAN) or w_dim
        edited = method.images(method.prepare(latents), torch.zeros(3, dtype=torch.long), torch.full((3,), 2.0))
        assert edited.shape == original.shape and not torch.allclose(edited, original)
    if name in ("stylegan2", "stylegan3"):  # SeFa reads the convolutions' style affines, StyleSpace every style
        assert gen.code_layers() and set(gen.code_layers()) < set(gen.style_layers())
