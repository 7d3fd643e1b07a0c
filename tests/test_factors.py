"""``factors.pt``: written and read by :mod:`panda.base.factors_file`; damage is one clear line, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from panda.base.errors import ConfigError
from panda.base.factors_file import FACTORS_FILE, checksum, load_factors, save_factors, save_labels
from tests.conftest import LAYER, SHAPE, made_up_factors


def write(path: Path) -> Path:
    """A factors file of made-up factors, written as training writes it."""
    A, P = made_up_factors()
    hparams = SimpleNamespace(feature_shape=SHAPE, parts=P.shape[1], appearances=A.shape[1])
    model = SimpleNamespace(exported_appearances=lambda: A, P=P, hparams=hparams)
    cfg = OmegaConf.create({"gen": {"name": "dcgan_faces", "layer": LAYER}, "seed": 0})
    return save_factors(model, "dcgan_faces", LAYER, cfg, path / FACTORS_FILE)


def test_a_written_file_loads_with_plain_torch_and_verifies(tmp_path, caplog):
    path = write(tmp_path)
    plain = torch.load(path, weights_only=True)
    assert len(plain["sha256"]) == 64
    with caplog.at_level(logging.WARNING):
        factors = load_factors(tmp_path)
    assert torch.equal(factors["A"], plain["A"]) and not caplog.records


def test_written_factors_say_their_appearances_are_canonical_and_an_unknown_form_is_refused(tmp_path):
    path = write(tmp_path)
    record = torch.load(path, weights_only=True)
    assert load_factors(path)["appearance_form"] == "canonical"
    record["appearance_form"] = "solver"
    record["sha256"] = checksum({k: v for k, v in record.items() if k != "sha256"})
    torch.save(record, path)
    with pytest.raises(ConfigError, match="appearance_form 'solver' is unknown"):
        load_factors(path)


def test_a_flipped_bit_in_the_factors_is_caught(tmp_path):
    path = write(tmp_path)
    data = bytearray(path.read_bytes())
    A = torch.load(path, weights_only=True)["A"]
    offset = bytes(data).index(bytes(A.untyped_storage())[:64])  # the stored bytes of A
    data[offset + 1] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        load_factors(path)


def test_a_flipped_bit_anywhere_is_one_line_or_harmless(tmp_path):
    path = write(tmp_path)
    original = path.read_bytes()
    reference = load_factors(path)
    for offset in range(0, len(original), max(1, len(original) // 97)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        try:
            factors = load_factors(path)
        except ConfigError as error:
            assert "\n" not in str(error)
        else:  # a byte nothing reads (zip padding, a record's own name)
            assert all(torch.equal(factors[k], reference[k]) for k in ("A", "P"))
            assert {k: v for k, v in factors.items() if k not in "AP"} == {
                k: v for k, v in reference.items() if k not in "AP"
            }


@pytest.mark.parametrize("keep", [0, 100, 0.5, -20])
def test_an_empty_or_truncated_file_is_one_line(tmp_path, keep):
    path = write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(ConfigError, match="damaged or truncated") as error:
        load_factors(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"A": "not a tensor"}, "A is a str, not a floating-point tensor"),
        ({"P": torch.zeros(256, 8, dtype=torch.int64)}, "P is a tensor of torch.int64"),
        ({"A": torch.zeros(64, 16)}, "A has shape [64, 16], but features [128, 16, 16] need [128, R_C]"),
        ({"P": torch.zeros(100, 8)}, "P has shape [100, 8], but features [128, 16, 16] need [256, R_S]"),
        ({"P": torch.zeros(256, 8, 1)}, "P has shape [256, 8, 1]"),
        ({"P": torch.full((256, 8), float("nan"))}, "P holds NaN or infinite values"),
        ({"feature_shape": [128, 16]}, "feature_shape [128, 16] is not [C, H, W]"),
        ({"layer": 3}, "layer is a int, not a string"),
        ({"ranks": {"parts": 6, "appearances": 16}}, "ranks {'parts': 6, 'appearances': 16} do not match"),
    ],
)
def test_factors_of_the_wrong_shape_or_type_are_one_line(tmp_path, change, message):
    A, P = made_up_factors()
    record = {"A": A, "P": P, "generator": "dcgan_faces", "layer": LAYER, "feature_shape": list(SHAPE)}
    record |= {"ranks": {"parts": 8, "appearances": 16}}
    torch.save(record | change, tmp_path / FACTORS_FILE)
    with pytest.raises(ConfigError) as error:
        load_factors(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_file_without_a_checksum_loads_with_a_warning(tmp_path, caplog):
    A, P = made_up_factors()
    record = {"A": A, "P": P, "generator": "dcgan_faces", "layer": LAYER, "feature_shape": list(SHAPE)}
    torch.save(record, tmp_path / FACTORS_FILE)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(load_factors(tmp_path)["P"], P)
    assert ["has no checksum" in r.getMessage() for r in caplog.records] == [True]


def test_a_file_that_is_not_a_record_is_one_line(tmp_path):
    torch.save([1, 2, 3], tmp_path / FACTORS_FILE)
    with pytest.raises(ConfigError, match="is not a panda factors file"):
        load_factors(tmp_path)


def test_labels_are_stored_under_the_checksum_and_old_files_keep_loading(tmp_path):
    path = write(tmp_path)
    before = torch.load(path, weights_only=True)["sha256"]
    labels = ["mouth", "hair", "face", "eyes", "nose", "background", "mixed", "artefact"]
    save_labels(tmp_path, labels, [0.5] * 8)
    factors = load_factors(tmp_path)
    assert factors["labels"] == labels and factors["label_scores"] == [0.5] * 8 and factors["sha256"] != before
    save_labels(tmp_path, [f"part{k}" for k in range(8)])  # by hand: no scores, the old ones dropped
    assert "label_scores" not in load_factors(tmp_path)
    record = torch.load(path, weights_only=True)
    record["labels"][0] = "nose_2"  # an edit that skips the checksum
    torch.save(record, path)
    with pytest.raises(ConfigError, match="checksum"):
        load_factors(path)
    assert "labels" not in load_factors(write(tmp_path / "old"))  # a file without labels (written before them)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (["mouth"] * 2, None, "labels must be a list of 8 strings, one per part"),
        (["hair"] * 8, None, "must be distinct names, none of them a number"),
        ([*"abcdefg", "7"], None, "must be distinct names, none of them a number"),
        (list("abcdefgh"), [0.5] * 7, "label_scores must be a list of 8 finite numbers"),
    ],
)
def test_bad_labels_are_refused(tmp_path, labels, scores, message):
    write(tmp_path)
    with pytest.raises(ConfigError, match=message):
        save_labels(tmp_path, labels, scores)
