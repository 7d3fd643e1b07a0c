"""ProGAN and StyleGAN1 from tiny checkpoints written in genforce's file format."""

import os
import pickle
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from panda.base.errors import ConfigError, WeightsError
from panda.generators import load_generator
from panda.generators.genforce import ProGAN, ProGANNet, StyleGAN1, StyleGAN1Net
from panda.generators.weights import cached_path
from tests.conftest import PROGAN_ARCH, STYLEGAN1_ARCH, assert_resumes_after_the_layer, compose_two_steps

# genforce's own names (models/pggan_generator.py, models/stylegan_generator.py), checked in the files written here
PROGAN_KEYS = {"lod", "layer0.weight", "layer1.bias", "output3.weight"}
STYLEGAN_KEYS = {
    "mapping.dense1.weight",
    "truncation.w_avg",
    "synthesis.lod",
    "synthesis.layer0.const",
    "synthesis.layer0.style.weight",
    "synthesis.layer2.blur.kernel",
    "synthesis.layer3.apply_noise.noise",
    "synthesis.layer3.apply_noise.weight",
    "synthesis.output5.bias",
}


def random_net(net_class, arch: dict, seed: int) -> torch.nn.Module:
    """A generator with random weights, including the biases, noise weights, constant and w_avg genforce zeroes."""
    torch.manual_seed(seed)
    net = net_class(**arch)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith(("bias", "apply_noise.weight", "const", "w_avg")):
                tensor.normal_(0, 0.2 if name.endswith("bias") else 1.0)
    return net.eval()


def write_genforce(path: Path, smooth: torch.nn.Module, raw: torch.nn.Module | None = None) -> Path:
    """genforce's converter format: ``torch.save`` of ``{generator, discriminator, generator_smooth}`` state dicts."""
    raw = raw or smooth
    discriminator = {"layer0.weight": torch.randn(4, 3, 1, 1), "lod": torch.zeros(())}
    torch.save(
        {"generator": raw.state_dict(), "discriminator": discriminator, "generator_smooth": smooth.state_dict()}, path
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("genforce")
    progan, stylegan = random_net(ProGANNet, PROGAN_ARCH, 0), random_net(StyleGAN1Net, STYLEGAN1_ARCH, 1)
    return {
        "progan": (write_genforce(root / "pggan.pth", progan, random_net(ProGANNet, PROGAN_ARCH, 2)), progan),
        "stylegan": (
            write_genforce(root / "stylegan.pth", stylegan, random_net(StyleGAN1Net, STYLEGAN1_ARCH, 3)),
            stylegan,
        ),
    }


def test_files_use_genforce_names_and_load_generator_smooth(files):
    for kind, names in (("progan", PROGAN_KEYS), ("stylegan", STYLEGAN_KEYS)):
        stored = torch.load(files[kind][0], weights_only=True)
        assert names <= stored["generator_smooth"].keys(), kind
    path, net = files["progan"]
    gen = ProGAN(weights=str(path), arch=PROGAN_ARCH)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    assert torch.equal(gen(z), net(z))  # the moving average, not the raw 'generator'
    assert gen(z).shape == (2, 3, 32, 32)
    path, net = files["stylegan"]
    gen = StyleGAN1(weights=str(path), arch=STYLEGAN1_ARCH, truncation_psi=0.6, truncation_cutoff=4)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    assert torch.equal(gen(z), net(z, 0.6, 4))
    assert gen(z).shape == (2, 3, 128, 128)


@pytest.mark.parametrize(
    ("kind", "layer"),
    [
        ("progan", "layer0"),
        ("progan", "layer5"),
        ("progan", "layer6"),
        ("progan", "output3"),
        ("stylegan", "synthesis.layer0"),
        ("stylegan", "synthesis.layer5"),
        ("stylegan", "synthesis.layer10.blur"),
        ("stylegan", "synthesis.layer10"),
        ("stylegan", "synthesis.layer11.apply_noise"),
        ("stylegan", "synthesis.layer11.style"),
        ("stylegan", "synthesis.output5"),
    ],
)
def test_split_reproduces_forward(files, kind, layer):
    if kind == "progan":
        gen = ProGAN(weights=str(files[kind][0]), arch=PROGAN_ARCH)
    else:
        gen = StyleGAN1(weights=str(files[kind][0]), arch=STYLEGAN1_ARCH, truncation_psi=0.7, truncation_cutoff=6)
    z = gen.sample_latents(3, torch.Generator().manual_seed(2))
    features = gen.features(z, layer)
    assert features.shape[1:] == gen.check_layer(layer)
    assert torch.equal(gen.resume(features, layer, z), gen(z))
    assert not torch.allclose(gen.resume(features + 1.0, layer, z), gen(z))
    assert_resumes_after_the_layer(gen, layer, z)


def test_layers_follow_resolutions(files):
    gen = ProGAN(weights=str(files["progan"][0]), arch=PROGAN_ARCH)
    assert gen.check_layer("layer5") == (16, 16, 16)  # the PandA code's layer=5: 16x16
    assert "output0" not in gen.layer_shapes()  # lower-resolution ToRGBs never run
    gen = StyleGAN1(weights=str(files["stylegan"][0]), arch=STYLEGAN1_ARCH)
    assert gen.check_layer("synthesis.layer5") == (16, 16, 16)
    assert gen.check_layer("synthesis.layer11") == (4, 128, 128)


def test_truncation(files):
    path, net = files["stylegan"]
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    plain = StyleGAN1(weights=str(path), arch=STYLEGAN1_ARCH)
    w = net.mapping(z)
    cut = StyleGAN1(weights=str(path), arch=STYLEGAN1_ARCH, truncation_psi=0.5, truncation_cutoff=3)
    wp = cut.ws(z)
    w_avg = net.truncation.w_avg
    torch.testing.assert_close(wp[:, :3], (w_avg + 0.5 * (w - w_avg))[:, None].expand(-1, 3, -1))
    assert torch.equal(wp[:, 3:], w[:, None].expand(-1, wp.shape[1] - 3, -1))
    assert not torch.allclose(cut(z), plain(z))
    collapsed = StyleGAN1(weights=str(path), arch=STYLEGAN1_ARCH, truncation_psi=0.0)  # every layer gets w_avg
    images = collapsed(z)
    torch.testing.assert_close(images, images[:1].expand_as(images))
    assert not torch.allclose(plain(z), plain(z)[:1].expand_as(images))


def test_noise_modes(files):
    path = str(files["stylegan"][0])
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(6))
    const, none = (
        StyleGAN1(weights=path, arch=STYLEGAN1_ARCH),
        StyleGAN1(weights=path, arch=STYLEGAN1_ARCH, noise_mode="none"),
    )
    assert torch.equal(const(z), const(z))
    assert not torch.allclose(const(z), none(z))
    with pytest.raises(ConfigError, match="noise_mode"):
        StyleGAN1(weights=path, arch=STYLEGAN1_ARCH, noise_mode="random")


def test_random_init_resolution_from_checkpoint_and_runner_format(files, tmp_path):
    gen = StyleGAN1(random_init=True, arch=STYLEGAN1_ARCH)
    assert gen(gen.sample_latents(1, torch.Generator())).shape == (1, 3, 128, 128)
    with pytest.raises(ConfigError, match="resolution"):
        ProGAN(random_init=True, arch={"z_dim": 16})
    path, net = files["progan"]
    gen = ProGAN(weights=str(path), arch={**PROGAN_ARCH, "resolution": 1024})  # the file says 32 px
    z = gen.sample_latents(1, torch.Generator())
    assert torch.equal(gen(z), net(z))
    runner = tmp_path / "checkpoint_iter100.pth"  # genforce's training runner nests the models under 'models'
    torch.save({"models": {"generator_smooth": net.state_dict()}, "running_metadata": {"iter": 100}}, runner)
    assert torch.equal(ProGAN(weights=str(runner), arch=PROGAN_ARCH)(z), net(z))


class _Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_bad_weights(files, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ProGAN(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match=r"gen\.weights"):
        StyleGAN1()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(files["progan"][0].read_bytes()[:5000])
    with pytest.raises(WeightsError, match="not a readable genforce checkpoint"):
        ProGAN(weights=str(corrupt))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"generator_smooth": _Exploit()}))
    with pytest.raises(WeightsError, match="not a readable genforce checkpoint"):
        ProGAN(weights=str(evil))
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(WeightsError, match="generator_smooth"):
        StyleGAN1(weights=str(other))
    with pytest.raises(WeightsError, match="does not hold a progan generator"):
        ProGAN(weights=str(files["stylegan"][0]), arch=PROGAN_ARCH)
    with pytest.raises(WeightsError, match="does not hold a stylegan1 generator"):
        StyleGAN1(weights=str(files["stylegan"][0]))  # default 512-d arch against a 16-d file
    growing = random_net(ProGANNet, PROGAN_ARCH, 4)
    growing.lod.fill_(1.5)
    with pytest.raises(WeightsError, match=r"lod=1\.5"):
        ProGAN(weights=str(write_genforce(tmp_path / "growing.pth", growing)), arch=PROGAN_ARCH)
    gen = ProGAN(weights=str(files["progan"][0]), arch=PROGAN_ARCH)
    with pytest.raises(ConfigError, match="layer5"):
        gen.check_layer("layer99")


def test_progan_resumes_without_latents_stylegan1_needs_them(files):
    gen = ProGAN(weights=str(files["progan"][0]), arch=PROGAN_ARCH)
    z = gen.sample_latents(2, torch.Generator().manual_seed(4))
    assert torch.equal(gen.resume(gen.features(z, "layer5"), "layer5"), gen(z))  # later layers read only features
    gen = StyleGAN1(weights=str(files["stylegan"][0]), arch=STYLEGAN1_ARCH)
    with pytest.raises(ConfigError, match="needs the latents"):
        gen.resume(gen.features(z, "synthesis.layer5"), "synthesis.layer5")


def test_download_into_named_cache_file(files, tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path / "cache"))
    handler = partial(SimpleHTTPRequestHandler, directory=str(files["progan"][0].parent))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/pggan.pth?e=x&download=1"
        gen = ProGAN(weights=url, arch=PROGAN_ARCH, cache_name="pggan_tiny.pth")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert cached_path(url, "pggan_tiny.pth").read_bytes() == files["progan"][0].read_bytes()
    assert cached_path(url, "pggan_tiny.pth").parent.parent == tmp_path / "cache"
    z = gen.sample_latents(1, torch.Generator())
    assert torch.equal(gen(z), files["progan"][1](z))


def test_python_api_and_training(files, tmp_path):
    gen = load_generator("progan_celebahq", weights=str(files["progan"][0]), arch=PROGAN_ARCH)
    z = gen.sample_latents(2, torch.Generator().manual_seed(0))
    assert torch.equal(gen.resume(gen.features(z, "layer5"), "layer5", z), gen(z))

    from panda.training.fit import train

    arch = [f"gen.net.arch.{k}={v}" for k, v in STYLEGAN1_ARCH.items()]
    cfg = compose_two_steps(tmp_path, "gen=stylegan1_ffhq", f"gen.weights={files['stylegan'][0]}", *arch)
    assert cfg.rank.parts == 8
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["layer"] == "synthesis.layer5"
