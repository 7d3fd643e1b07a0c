"""The generator interface on the real DCGAN face model: layers, the split, resuming, weights."""

import pytest
import torch

from panda.data import FeatureDataModule, Stream, layer_features
from panda.errors import ConfigError, FeatureError, WeightsError
from panda.generators.dcgan import DCGANFaces
from tests.conftest import assert_bf16_features_close

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
    with pytest.raises(FeatureError, match=r"at layer 'main\.5' in bfloat16 \(data.precision=bf16; try fp32\)"):
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


def test_unknown_precision_lists_the_choices(dcgan):
    message = r"data.precision='fp16' is unknown; choices: fp32, bf16"
    with pytest.raises(ConfigError, match=message):
        layer_features(dcgan, "main.8", dcgan.sample_latents(1, torch.Generator().manual_seed(0)), "fp16")
    with pytest.raises(ConfigError, match=message):
        FeatureDataModule(dcgan, "main.8", precision="fp16")
