import pytest
import torch

from panda.base.errors import ConfigError, WeightsError
from panda.generators.pickles import load_network
from panda.generators.stylegan2 import StyleGAN2Net
from panda.generators.stylegan3 import StyleGAN3, StyleGAN3Net, lowpass_filter
from tests.conftest import STYLEGAN2_ARCH, STYLEGAN3_ARCHS, assert_resumes_after_the_layer, compose_two_steps
from tests.official_format import stylegan3_attributes, write_stylegan_pickle


def random_net(arch: dict) -> StyleGAN3Net:
    """A random generator whose every stored value matters (biases, magnitude EMAs, w_avg, input affine)."""
    torch.manual_seed(0)
    net = StyleGAN3Net(**arch)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2)
        for name, buffer in net.named_buffers():
            if name.endswith("magnitude_ema"):
                buffer.uniform_(0.3, 3.0)
        net.mapping.w_avg.normal_()
        net.synthesis.input.affine.weight.normal_()
    return net


@pytest.fixture(scope="module", params=["T", "R"])
def tiny(request, tmp_path_factory):
    arch = STYLEGAN3_ARCHS[request.param]
    net = random_net(arch)
    path = tmp_path_factory.mktemp("sg3") / f"tiny_{request.param}.pkl"
    write_stylegan_pickle(path, net, arch, stylegan3_attributes)
    return path, net, 1 if arch["c_dim"] else None


def test_pickle_round_trip(tiny):
    path, net, class_index = tiny
    official = load_network(path)
    assert official.class_name == "StyleGAN3Net"
    assert official.state_dict.keys() == net.state_dict().keys()
    c = net.synthesis.input.channels
    assert {f"synthesis.L2_52_{c}.up_filter", f"synthesis.L2_52_{c}.down_filter"} <= official.state_dict.keys()
    assert "synthesis.L6_32_3.up_filter" not in official.state_dict  # ToRGB: None, no filtering
    gen = StyleGAN3(weights=str(path), truncation_psi=0.7, truncation_cutoff=4, class_index=class_index)
    z = gen.sample_latents(2, torch.Generator().manual_seed(1))
    c = gen.labels(2)
    assert torch.equal(gen(z), net(z, c, 0.7, 4))
    assert gen(z).shape == (2, 3, 32, 32)


def test_split_reproduces_forward(tiny):
    path, net, class_index = tiny
    gen = StyleGAN3(weights=str(path), truncation_psi=0.5, class_index=class_index)
    z = gen.sample_latents(2, torch.Generator().manual_seed(2))
    full = gen(z)
    c = net.synthesis.input.channels
    for layer, shape in [("input", (c, 36, 36)), (f"L3_52_{c}", (c, 52, 52)), (f"L5_32_{c}", (c, 32, 32)),
                         ("L6_32_3", (3, 32, 32))]:  # fmt: skip
        layer = f"synthesis.{layer}"
        features = gen.features(z, layer)
        assert features.shape == (2, *shape), layer
        assert torch.equal(gen.resume(features, layer, z), full), layer
        assert not torch.allclose(gen.resume(features + 0.5, layer, z), full), layer
        assert_resumes_after_the_layer(gen, layer, z)


def test_layers_and_errors(tiny):
    path, net, class_index = tiny
    gen = StyleGAN3(weights=str(path), class_index=class_index)
    c = net.synthesis.input.channels
    assert gen.check_layer(f"synthesis.L3_52_{c}") == (c, 52, 52)  # 16 samples per unit plus 2 x 10 margin
    assert gen.check_layer(f"synthesis.L5_32_{c}") == (c, 32, 32)  # critically sampled: no margin
    with pytest.raises(ConfigError, match=rf"synthesis\.L0_36_{c}"):
        gen.check_layer("synthesis.L3_84_512")
    with pytest.raises(ConfigError, match="do not fit"):
        gen.resume(torch.zeros(1, c, 36, 36), f"synthesis.L3_52_{c}", gen.sample_latents(1, torch.Generator()))
    with pytest.raises(ConfigError, match="needs the latents"):
        gen.resume(torch.zeros(1, c, 52, 52), f"synthesis.L3_52_{c}")


def test_truncation(tiny):
    path, net, class_index = tiny
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    plain = StyleGAN3(weights=str(path), class_index=class_index)
    mean = StyleGAN3(weights=str(path), truncation_psi=0.0, class_index=class_index)
    cut = StyleGAN3(weights=str(path), truncation_psi=0.0, truncation_cutoff=3, class_index=class_index)
    w_avg = net.mapping.w_avg
    assert torch.equal(mean.ws(z), w_avg.expand(3, net.synthesis.num_ws, -1))
    images = mean(z)
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)  # psi=0: every z gives w_avg's image
    ws, plain_ws = cut.ws(z), plain.ws(z)
    assert torch.equal(ws[:, :3], w_avg.expand(3, 3, -1)) and torch.equal(ws[:, 3:], plain_ws[:, 3:])
    assert not torch.allclose(cut(z), plain(z))


def test_random_init_and_weights_errors(tmp_path):
    gen = StyleGAN3(random_init=True, arch=STYLEGAN3_ARCHS["T"])
    assert gen(gen.sample_latents(2, torch.Generator())).shape == (2, 3, 32, 32)
    assert list(gen.net.synthesis.layer_names) == [
        "L0_36_16", "L1_36_16", "L2_52_16", "L3_52_16", "L4_52_16", "L5_32_16", "L6_32_3"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"gen\.net\.arch"):
        StyleGAN3(random_init=True)
    with pytest.raises(WeightsError, match="not found"):
        StyleGAN3(weights=str(tmp_path / "missing.pkl"))
    with pytest.raises(WeightsError, match=r"gen\.weights"):
        StyleGAN3()
    sg2 = {**STYLEGAN2_ARCH, "synthesis_kwargs": {"channel_base": 128, "channel_max": 16, "num_fp16_res": 0}}
    path = write_stylegan_pickle(tmp_path / "sg2.pkl", StyleGAN2Net(**sg2), sg2)
    with pytest.raises(WeightsError, match="does not hold a stylegan3 generator"):
        StyleGAN3(weights=str(path))
    with pytest.raises(ConfigError, match="class_index"):
        StyleGAN3(random_init=True, arch=STYLEGAN3_ARCHS["R"])


def test_lowpass_filters():
    """Kaiser low-pass design: unit DC gain, half amplitude at the cutoff, stopband beyond cutoff + width."""
    assert lowpass_filter(1, 2.0, 1.0, 16) is None
    f = lowpass_filter(12, cutoff=2.0, width=3.0, fs=16)
    assert f.shape == (12,) and torch.allclose(f, f.flip(0))
    response = torch.fft.rfft(f, n=256).abs()  # frequency of bin k: k * 16 / 256
    assert torch.allclose(response[0], torch.tensor(1.0)) and abs(response[32] - 0.5) < 0.05
    assert response[80:].max() < 0.02
    radial = lowpass_filter(12, cutoff=2.0, width=3.0, fs=16, radial=True)
    assert radial.shape == (12, 12) and torch.allclose(radial, radial.t()) and torch.allclose(radial, radial.flip(0))
    response = torch.fft.fft2(radial, s=(64, 64)).abs()
    freqs = torch.fft.fftfreq(64, d=1 / 16)
    radius = (freqs[:, None] ** 2 + freqs[None, :] ** 2).sqrt()
    assert torch.allclose(response[0, 0], torch.tensor(1.0)) and response[radius >= 5].max() < 0.02


def test_train_on_tiny_pickle(tmp_path):
    from panda.training.fit import train

    arch = STYLEGAN3_ARCHS["T"]
    path = write_stylegan_pickle(tmp_path / "tiny.pkl", random_net(arch), arch, stylegan3_attributes)
    layer = "synthesis.L3_52_16"
    cfg = compose_two_steps(tmp_path / "run", "gen=stylegan3_ffhq", f"gen.weights={path}", f"gen.layer={layer}")
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["layer"] == layer


def test_python_api(tiny):
    from panda.generators import load_generator

    path, net, class_index = tiny
    gen = load_generator("stylegan3_ffhq", weights=str(path), truncation_psi=0.7, class_index=class_index)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    layer = f"synthesis.L2_52_{net.synthesis.input.channels}"
    assert torch.equal(gen.resume(gen.features(z, layer), layer, z), gen(z))
    with pytest.raises(ConfigError, match="no option"):
        load_generator("stylegan3_ffhq", weights=str(path), noise_mode="const")
