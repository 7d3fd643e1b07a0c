import pickle

import pytest
import torch

from panda.base.errors import ConfigError, WeightsError
from panda.generators.pickles import load_network
from panda.generators.stylegan2 import StyleGAN2, StyleGAN2Net
from tests.conftest import (
    STYLEGAN2_ARCH,
    assert_bf16_features_close,
    assert_resumes_after_the_layer,
    compose_two_steps,
)
from tests.official_format import write_stylegan_pickle


@pytest.fixture(scope="module")
def tiny_pickle(tmp_path_factory):
    torch.manual_seed(0)
    net = StyleGAN2Net(**STYLEGAN2_ARCH)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith(("bias", "noise_strength")):
                param.normal_(0, 0.1)
        net.mapping.w_avg.normal_()
    return write_stylegan_pickle(tmp_path_factory.mktemp("sg2") / "tiny.pkl", net, STYLEGAN2_ARCH), net


def test_pickle_round_trip(tiny_pickle):
    path, net = tiny_pickle
    official = load_network(path)
    assert official.class_name == "StyleGAN2Net"
    assert official.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert official.state_dict.keys() == net.state_dict().keys()
    assert "synthesis.b16.conv1.affine.weight" in official.state_dict
    gen = StyleGAN2(weights=str(path), truncation_psi=0.7, truncation_cutoff=4)
    z = gen.sample_latents(2, torch.Generator().manual_seed(1))
    expected = net(z, None, 0.7, 4)
    assert torch.equal(gen(z), expected)
    assert gen(z).shape == (2, 3, 32, 32)


@pytest.mark.parametrize(
    "layer",
    [
        "synthesis.b4.conv1",
        "synthesis.b4.torgb",
        "synthesis.b8.conv0",
        "synthesis.b16.conv1",
        "synthesis.b16.torgb",
        "synthesis.b32.torgb",
        "synthesis",
    ],
)
def test_split_reproduces_forward(tiny_pickle, layer):
    gen = StyleGAN2(weights=str(tiny_pickle[0]), truncation_psi=0.5)
    z = gen.sample_latents(3, torch.Generator().manual_seed(2))
    features = gen.features(z, layer)
    assert features.shape[0] == 3 and features.dim() == 4
    assert torch.equal(gen.resume(features, layer, z), gen(z))
    edited = gen.resume(features + 1.0, layer, z)
    assert not torch.allclose(edited, gen(z))
    assert_resumes_after_the_layer(gen, layer, z)


def test_resume_state_holds_ws_and_what_earlier_blocks_pass_on(tiny_pickle):
    gen = StyleGAN2(weights=str(tiny_pickle[0]))
    z = gen.sample_latents(2, torch.Generator().manual_seed(3))
    _, state = gen.features_and_state(z, "synthesis.b16.torgb")
    assert set(state.values) == {"ws", "img", "conv1"} and torch.equal(state.values["ws"], gen.ws(z))
    assert state.values["img"].shape == (2, 3, 8, 8)  # the skip image of blocks b4, b8
    _, state = gen.features_and_state(z, "synthesis.b4.conv1")
    assert set(state.values) == {"ws", "img"} and state.values["img"] is None
    with pytest.raises(ConfigError, match=r"needs the latents"):
        gen.resume(gen.features(z, "synthesis.b16.conv1"), "synthesis.b16.conv1")
    with pytest.raises(ConfigError, match=r"3 feature maps, but a resume state of \[2\] samples"):
        gen.resume(
            torch.zeros(3, 8, 16, 16), "synthesis.b16.conv1", state=gen.features_and_state(z, "synthesis.b16.conv1")[1]
        )


def test_layers_and_errors(tiny_pickle):
    gen = StyleGAN2(weights=str(tiny_pickle[0]))
    assert gen.check_layer("synthesis.b16.conv1") == (8, 16, 16)
    with pytest.raises(ConfigError, match=r"synthesis\.b8\.conv0"):
        gen.check_layer("synthesis.b99")
    with pytest.raises(ConfigError):
        gen.resume(torch.zeros(1, 8, 15, 15), "synthesis.b16.conv1", gen.sample_latents(1, torch.Generator()))


def test_random_init_and_missing_weights(tmp_path):
    gen = StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH)
    assert gen(gen.sample_latents(1, torch.Generator())).shape == (1, 3, 32, 32)
    with pytest.raises(WeightsError, match="not found"):
        StyleGAN2(weights=str(tmp_path / "missing.pkl"))
    with pytest.raises(WeightsError, match=r"gen\.weights"):
        StyleGAN2()


class _Exploit:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def test_restricted_unpickler_rejects_malicious(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Exploit()}))
    with pytest.raises(WeightsError, match="not allowed"):
        load_network(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a readable"):
        load_network(path)


def test_train_on_tiny_pickle(tiny_pickle, tmp_path):
    from panda.training.fit import train

    cfg = compose_two_steps(tmp_path, "gen=stylegan2_ffhq", f"gen.weights={tiny_pickle[0]}")
    assert cfg.rank.parts == 8  # the paper's R_S from gen.ranks
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["layer"] == "synthesis.b16.conv1"

    # the run's factors edit StyleGAN2 images: resuming reads the state (w, the skip image) of the same latents
    from panda.uses.editing import Edit, edit_offset, edited_images
    from panda.uses.factors import open_run

    run = open_run(tmp_path)
    latents = run.latents(0, [0, 1])
    features, state = run.features_and_state(latents)
    same, edited = edited_images(run, features, state, edit_offset(run, [Edit(0, 0, 50.0)]), (0.0, 1.0))
    with torch.inference_mode():
        assert torch.equal(same, run.generator(latents))
    assert (edited - same).abs().max() > 1e-3


def test_python_api(tiny_pickle):
    from panda.generators import load_generator

    gen = load_generator("stylegan2_ffhq", weights=str(tiny_pickle[0]), truncation_psi=0.7)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    features = gen.features(z, "synthesis.b16.conv1")
    assert torch.equal(gen.resume(features, "synthesis.b16.conv1", z), gen(z))
    with pytest.raises(ConfigError, match="configured generators"):
        load_generator("nope")
    with pytest.raises(ConfigError, match="no option"):
        load_generator("stylegan2_ffhq", weights=str(tiny_pickle[0]), psi=0.7)


def test_bf16_forward_gives_float32_features_close_to_fp32(tiny_pickle):
    assert_bf16_features_close(StyleGAN2(weights=str(tiny_pickle[0])), "synthesis.b16.conv1", 0.05)
