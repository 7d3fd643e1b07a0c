import json
import re

import pytest
import torch

from panda.base.errors import ConfigError, WeightsError
from panda.generators.biggan import BigGAN, class_index, random_biggan
from panda.generators.weights import cached_path
from tests.conftest import assert_bf16_features_close, assert_resumes_after_the_layer

TINY = {
    "output_dim": 32,
    "z_dim": 8,
    "class_embed_dim": 8,
    "channel_width": 4,
    "num_classes": 1000,
    "layers": [[False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4], [True, 4, 2], [False, 2, 1]],
    "attention_layer_position": 3,
    "eps": 1e-4,
    "n_stats": 51,
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("biggan")
    torch.manual_seed(0)
    net = random_biggan(TINY)
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if "running_vars" in name:
                buffer.uniform_(0.5, 2.0)
            elif "running_means" in name:
                buffer.normal_(0, 0.1)
    net.eval()
    (directory / "config.json").write_text(json.dumps(TINY))
    torch.save(net.state_dict(), directory / "pytorch_model.bin")
    return directory, net


def test_load_and_forward_match_package(tiny_dir):
    directory, net = tiny_dir
    gen = BigGAN(weights=str(directory), class_name="golden retriever", truncation=0.5)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 1.0
    one_hot = torch.zeros(2, 1000)
    one_hot[:, 207] = 1
    with torch.no_grad():
        assert torch.equal(gen(z), net(z, one_hot, 0.5))
    assert gen(z).shape == (2, 3, 32, 32)


@pytest.mark.parametrize(
    "layer",
    [
        "generator.layers.0",
        "generator.layers.1.bn_0",
        "generator.layers.1.conv_1",  # after the upsampling of an upsampling block
        "generator.layers.2.conv_3",
        "generator.layers.3",  # self-attention
        "generator.layers.5",
        "generator.bn",
        "generator.conv_to_rgb",
    ],
)
def test_split_reproduces_forward(tiny_dir, layer):
    gen = BigGAN(weights=str(tiny_dir[0]), class_name=1, truncation=0.7)
    z = gen.sample_latents(2, torch.Generator().manual_seed(3))
    features = gen.features(z, layer)
    assert torch.equal(gen.resume(features, layer, z), gen(z))
    assert not torch.allclose(gen.resume(features * 2, layer, z), gen(z))
    assert_resumes_after_the_layer(gen, layer, z)


def test_layers_inside_self_attention_or_a_shared_relu_are_not_resumed(tiny_dir):
    gen = BigGAN(weights=str(tiny_dir[0]), class_name=1, truncation=0.7)
    z = gen.sample_latents(1, torch.Generator().manual_seed(3))
    for layer in ("generator.layers.3.snconv1x1_g", "generator.layers.1.relu"):
        assert gen.features(z, layer).shape[1:] == gen.check_layer(layer)  # features are there to factorise
        with pytest.raises(ConfigError, match=rf"cannot resume from layer '{layer}'; it resumes from: .*layers\.3, "):
            gen.features_and_state(z, layer)
    with pytest.raises(ConfigError, match="needs the latents"):
        gen.resume(gen.features(z, "generator.layers.4"), "generator.layers.4")


def test_classes_and_errors(tmp_path):
    assert class_index("Golden Retriever") == 207 and class_index("207") == 207 and class_index(3) == 3
    with pytest.raises(ConfigError, match="close names"):
        class_index("golden retreiver")
    with pytest.raises(ConfigError):
        class_index(1000)
    missing = f"missing: {tmp_path / 'config.json'}, {tmp_path / 'pytorch_model.bin'}"
    with pytest.raises(WeightsError, match=re.escape(missing)):
        BigGAN(weights=str(tmp_path))
    gen = BigGAN(random_init=True, arch=TINY, class_name="tench")
    assert gen.check_layer("generator.layers.3") == (32, 8, 8)


def test_named_model_offline_names_every_file_and_the_directory_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path))
    monkeypatch.setattr("panda.generators.biggan.BASE_URL", "http://127.0.0.1:9/biggan")
    urls = [f"http://127.0.0.1:9/biggan/biggan-deep-256-{name}" for name in ("config.json", "pytorch_model.bin")]
    files = {url.rsplit("-", 1)[1]: (url, cached_path(url)) for url in urls}
    with pytest.raises(WeightsError) as error:
        BigGAN(weights="biggan-deep-256")
    message = str(error.value)
    assert "\n" not in message and "gen.weights=DIR, a directory holding config.json and pytorch_model.bin" in message
    for url, path in files.values():
        assert f"{path} (from {url})" in message
    files["config.json"][1].write_text("{}")  # the config placed by hand: only the weights are missing
    with pytest.raises(WeightsError) as error:
        BigGAN(weights="biggan-deep-256")
    message = str(error.value)
    url, path = files["pytorch_model.bin"]
    assert f"not in the cache: {path} (from {url})." in message
    assert "gen.weights=DIR" in message


def test_bf16_forward_gives_float32_features_close_to_fp32(tiny_dir):
    gen = BigGAN(weights=str(tiny_dir[0]), class_name=1, truncation=0.7)
    assert_bf16_features_close(gen, "generator.layers.3", 0.05)
