"""The generator interface on the real DCGAN face model: layers, the split, resuming, weights; the gen configs
as train.py composes them (the installed package's copy: tests/test_packaging.py)."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobRuntime
from omegaconf import OmegaConf

from panda.base.errors import ConfigError, FeatureError, WeightsError
from panda.generators.api import gen_config
from panda.generators.dcgan import DCGANFaces
from panda.method import data as data_module
from panda.method.data import FeatureDataModule, Stream, layer_features
from tests.conftest import ROOT, assert_bf16_features_close, assert_resumes_after_the_layer

LAYERS = ["main.0", "main.2", "main.3", "main.5", "main.7", "main.8", "main.11", "main.12"]


def test_layer_shapes_follow_the_dcgan_architecture(dcgan):
    shapes = dcgan.layer_shapes()
    assert shapes["main.2"] == (512, 4, 4)
    assert shapes["main.5"] == (256, 8, 8)
    assert shapes["main.8"] == (128, 16, 16)
    assert shapes["main.11"] == (64, 32, 32)
    assert shapes["main.13"] == (3, 64, 64)


def test_pretrained_weights_make_face_images(dcgan):
    images = dcgan(dcgan.sample_latents(4, torch.Generator().manual_seed(0)))
    assert images.shape == (4, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.2  # a real image, not a constant (random BN stats would be near-flat)


@pytest.mark.parametrize("layer", LAYERS)
def test_resuming_from_unedited_features_reproduces_the_full_forward(dcgan, layer):
    latents = dcgan.sample_latents(3, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(dcgan.resume(dcgan.features(latents, layer), layer, latents), dcgan(latents))
    assert_resumes_after_the_layer(dcgan, layer, latents)


def test_a_resume_state_must_fit_the_layer_and_the_batch(dcgan):
    latents = dcgan.sample_latents(2, torch.Generator().manual_seed(0))
    features, state = dcgan.features_and_state(latents, "main.8")
    assert state.layer == "main.8" and state.values == {}  # the DCGAN reads nothing but the features
    with pytest.raises(ConfigError, match=r"resume state belongs to layer 'main\.8', not 'main\.7'"):
        dcgan.resume(dcgan.features(latents, "main.7"), "main.7", state=state)
    with pytest.raises(ConfigError, match="the latents or a resume state, not both"):
        dcgan.resume(features, "main.8", latents, state)
    with pytest.raises(ConfigError, match=r"do not fit layer 'main\.8' \(128, 16, 16\)"):
        dcgan.resume(features[:, :64], "main.8")


def test_features_stop_the_forward_at_the_layer(dcgan):
    calls = []
    hook = dcgan.net.main[9].register_forward_hook(lambda *_: calls.append(1))
    try:
        features = dcgan.features(dcgan.sample_latents(2, torch.Generator().manual_seed(0)), "main.8")
    finally:
        hook.remove()
    assert features.shape == (2, 128, 16, 16)
    assert calls == []


def test_resume_does_not_modify_the_given_features(dcgan):
    latents = dcgan.sample_latents(2, torch.Generator().manual_seed(0))
    features = dcgan.features(latents, "main.7")
    copy = features.clone()
    dcgan.resume(features, "main.7")
    assert torch.equal(features, copy)


def test_unknown_layer_lists_the_valid_ones(dcgan):
    with pytest.raises(ConfigError, match=r"unknown layer 'main\.99'.*Valid layers: main\.0, main\.1"):
        dcgan.check_layer("main.99")


def test_missing_and_corrupt_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match=r"not found.*pip install --force-reinstall gan-face-generate"):
        DCGANFaces(weights=str(tmp_path / "nothing.tar"))
    corrupt = tmp_path / "weights.tar"
    corrupt.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(WeightsError, match=r"unreadable.*gan-face-generate"):
        DCGANFaces(weights=str(corrupt))
    wrong = tmp_path / "wrong.tar"
    torch.save({"something": 1}, wrong)
    with pytest.raises(WeightsError, match="netG_state_dict"):
        DCGANFaces(weights=str(wrong))


def test_nan_features_are_reported_with_the_layer():
    broken = DCGANFaces(random_init=True)
    with torch.no_grad():
        broken.net.main[0].weight[0, 0, 0, 0] = float("nan")
    latents = broken.sample_latents(2, torch.Generator().manual_seed(0))
    with pytest.raises(FeatureError, match=r"NaN or infinite features at layer 'main\.5'; check its weights"):
        layer_features(broken, "main.5", latents)
    with pytest.raises(FeatureError, match=r"at layer 'main\.5' in bfloat16 \(data.precision=bf16 or auto; try fp32\)"):
        layer_features(broken, "main.5", latents, "bf16")


def test_features_are_usable_by_autograd(dcgan):
    features = layer_features(dcgan, "main.8", dcgan.sample_latents(2, torch.Generator().manual_seed(0)))
    weight = torch.ones(128, requires_grad=True)
    (features.flatten(2) * weight[:, None]).sum().backward()
    assert weight.grad is not None


def test_bf16_forward_gives_float32_features_close_to_fp32(dcgan):
    assert_bf16_features_close(dcgan, "main.8", 0.02)


def test_validation_stays_fp32_when_training_features_are_bf16(dcgan):
    fp32, bf16 = (FeatureDataModule(dcgan, "main.8", batch_size=4, precision=p) for p in ("fp32", "bf16"))
    assert torch.equal(bf16.batch(Stream.VAL, 0), fp32.batch(Stream.VAL, 0))
    for stream in (Stream.TRAIN, Stream.INIT):
        assert not torch.equal(bf16.batch(stream, 0), fp32.batch(stream, 0))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(dcgan, monkeypatch, native):
    monkeypatch.setattr(data_module, "native_bfloat16", lambda device: native)
    latents = dcgan.sample_latents(2, torch.Generator().manual_seed(0))
    expected = layer_features(dcgan, "main.8", latents, "bf16" if native else "fp32")
    assert torch.equal(layer_features(dcgan, "main.8", latents, "auto"), expected)
    auto, fixed = (
        FeatureDataModule(dcgan, "main.8", batch_size=2, precision=p) for p in ("auto", "bf16" if native else "fp32")
    )
    assert torch.equal(auto.batch(Stream.TRAIN, 0), fixed.batch(Stream.TRAIN, 0))


@pytest.mark.parametrize(
    ("capabilities", "native"),
    [({"avx512_bf16": True}, True), ({"amx_bf16": True}, True), ({"bf16": True}, True), ({"avx2": True}, False)],
)
def test_native_bfloat16_reads_the_cpu_capabilities(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert data_module.native_bfloat16(torch.device("cpu")) is native
    monkeypatch.delattr(torch.cpu, "get_capabilities")  # a torch that does not report them: float32
    assert data_module.native_bfloat16(torch.device("cpu")) is False


def test_a_negative_validation_cache_is_rejected(dcgan):
    with pytest.raises(ConfigError, match=r"data.val_cache_mb=-1 must be >= 0"):
        FeatureDataModule(dcgan, "main.8", val_cache_mb=-1)


def test_unknown_precision_lists_the_choices(dcgan):
    message = r"data.precision='fp16' is unknown; choices: fp32, bf16, auto"
    with pytest.raises(ConfigError, match=message):
        layer_features(dcgan, "main.8", dcgan.sample_latents(1, torch.Generator().manual_seed(0)), "fp16")
    with pytest.raises(ConfigError, match=message):
        FeatureDataModule(dcgan, "main.8", precision="fp16")


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "gen").glob("*.yaml")))
def test_load_generator_reads_the_gen_node_train_composes(name):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        composed = compose("train", overrides=[f"gen={name}"]).gen
    assert OmegaConf.to_container(gen_config(name)) == OmegaConf.to_container(composed)


@pytest.mark.parametrize(
    ("name", "parent", "differences"),
    [
        (
            "stylegan2_afhqdog",
            "stylegan2_ffhq",
            {
                "name": "stylegan2_afhqdog",
                "weights": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl",
                "net.arch.img_resolution": 512,
            },
        ),
        (
            "stylegan3_afhqv2",
            "stylegan3_ffhq",
            {
                "name": "stylegan3_afhqv2",
                "layer": "synthesis.L4_84_1024",
                "weights": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
                "stylegan3-r-afhqv2-512x512.pkl",
                "net.arch.img_resolution": 512,
                "net.arch.channel_base": 65536,
                "net.arch.channel_max": 1024,
                "net.arch.conv_kernel": 1,
                "net.arch.use_radial_filters": True,
            },
        ),
    ],
)
def test_configs_extend_their_parent_in_exactly_these_values(name, parent, differences):
    child, base = (_flat(OmegaConf.to_container(gen_config(n), resolve=False)) for n in (name, parent))
    assert {k: v for k, v in child.items() if base.get(k, object()) != v} == differences
    assert base.keys() <= child.keys()


def _flat(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def test_gen_config_inside_a_running_hydra_app_leaves_it_as_found(tmp_path):
    """evaluate.py rebuilds a run's generator while its own Hydra app holds GlobalHydra (here: another config
    dir with no gen group), and Hydra's job name stays the app's."""
    (tmp_path / "app.yaml").write_text("x: 1\n")
    with initialize_config_dir(str(tmp_path), job_name="evaluate", version_base="1.3"):
        running = GlobalHydra.instance()
        hydra = running.hydra
        assert gen_config("stylegan2_afhqdog").net.arch.img_resolution == 512
        with pytest.raises(ConfigError, match=r"^unknown generator 'nope'; configured generators: biggan, dcgan_faces"):
            gen_config("nope")
        assert GlobalHydra.instance() is running and running.hydra is hydra
        assert JobRuntime.instance().get("name") == "evaluate"
        assert compose("app").x == 1
    assert not GlobalHydra.instance().is_initialized()
    gen_config("dcgan_faces")
    assert not GlobalHydra.instance().is_initialized()
