import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from panda.base.errors import ConfigError
from panda.uses import editing
from panda.uses.editing import Edit
from panda.uses.factors import Factors
from tests.conftest import ROOT, SHAPE, forward_calls, made_up_factors


def test_alpha_zero_reproduces_the_original_images_exactly(run: Factors) -> None:
    latents = run.latents(0, [0, 1, 2])
    with torch.inference_mode():
        original = run.generator(latents)
    features, state = run.features_and_state(latents)
    offset = editing.edit_offset(run, [Edit(part=1, appearance=3, alpha=0.0), Edit(part=2, appearance=0, alpha=0.0)])
    same, edited = editing.edited_images(run, features, state, editing.edit_offset(run, [Edit(1, 3, 25.0)]), (0.0, 1.0))
    assert torch.equal(editing.edited_images(run, features, state, offset)[0], original)
    assert torch.equal(same, original)
    assert (edited - original).abs().max() > 0.05


def test_edit_is_alpha_a_j_p_k_and_zero_where_the_part_is_zero(run: Factors) -> None:
    offset = editing.edit_offset(run, [Edit(part=0, appearance=5, alpha=3.0)])
    p0 = run.P[:, 0].reshape(16, 16)
    expected = 3.0 * run.A[:, 5, None, None] * (p0 / p0.max())[None]  # min of part 0 is 0
    torch.testing.assert_close(offset, expected)
    assert torch.all(offset[:, :8] == 0)  # part 0 is zero on the top half
    assert torch.all(offset[:, 8:].abs().sum(0) > 0)


def test_several_triples_are_summed(run: Factors) -> None:
    a, b = Edit(0, 1, 2.0), Edit(3, 4, -5.0)
    both = editing.edit_offset(run, [a, b])
    torch.testing.assert_close(both, editing.edit_offset(run, [a]) + editing.edit_offset(run, [b]))


def test_edits_of_a_batch_match_edits_of_single_samples(run: Factors) -> None:
    latents = run.latents(0, [4, 5])
    offset = editing.edit_offset(run, [Edit(2, 2, 15.0)])
    batch = editing.edited_images(run, *run.features_and_state(latents), offset, (0.5, 1.0))
    single = editing.edited_images(run, *run.features_and_state(latents[1:]), offset, (0.5, 1.0))
    assert batch.shape == (2, 2, 3, 64, 64)
    torch.testing.assert_close(batch[:, 1:], single, atol=1e-5, rtol=0)


def test_edits_of_a_stylegan2_run_resume_from_the_state_and_run_nothing_before_the_layer(stylegan2_run: Factors):
    run, gen = stylegan2_run, stylegan2_run.generator
    before = [gen.net.mapping, gen.net.synthesis.b4, gen.net.synthesis.b8]  # the modules before synthesis.b16.conv1
    latents = run.latents(0, [0, 1])
    features, state = run.features_and_state(latents)
    offset = editing.edit_offset(run, [Edit(1, 2, 5.0)])
    with forward_calls(before) as calls:
        images = editing.edited_images(run, features, state, offset, (0, 1))
    assert calls == []
    with torch.inference_mode(), forward_calls(before) as calls:  # as before: from the latents, a pass up to the layer
        from_latents = torch.stack([gen.resume(features + t * offset, run.layer, latents) for t in (0, 1)])
        assert calls
        assert torch.equal(images[0], gen(latents))
    assert torch.equal(images, from_latents) and not torch.equal(images[0], images[1])


@pytest.mark.parametrize(("edit", "message"), [(Edit(8, 0, 1.0), "R_S=8"), (Edit(0, 16, 1.0), "R_C=16")])
def test_out_of_range_indices_name_the_valid_range(run: Factors, edit: Edit, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        editing.edit_offset(run, [edit])


def test_parse_edits_rejects_malformed_triples() -> None:
    assert editing.parse_edits([{"part": 1, "appearance": 2, "alpha": 3}]) == [Edit(1, 2, 3.0)]
    with pytest.raises(ConfigError, match="part, appearance, alpha"):
        editing.parse_edits([{"part": 1, "alpha": 3}])
    with pytest.raises(ConfigError, match="no edit"):
        editing.parse_edits([])


def test_named_edits_of_the_shipped_zoo_fit_default_factors(run: Factors) -> None:
    zoo = editing.load_zoo("dcgan_faces")
    assert {"blue_eyes", "red_lips", "open_mouth", "thick_eyebrows", "red_nose", "hair_colour"} <= set(zoo["edits"])
    A, P = made_up_factors(zoo["ranks"]["parts"], zoo["ranks"]["appearances"])
    default = dataclasses.replace(run, A=A, P=P, canonical=True)  # factors of the default run's ranks
    for name in zoo["edits"]:
        edits = editing.named_edit(default, name)
        assert edits and torch.isfinite(editing.edit_offset(default, edits)).all()


def test_the_shipped_zoo_refuses_factors_written_before_the_canonical_form(run: Factors) -> None:
    zoo = editing.load_zoo("dcgan_faces")
    A, P = made_up_factors(zoo["ranks"]["parts"], zoo["ranks"]["appearances"])
    older = dataclasses.replace(run, A=A, P=P, canonical=False)  # its appearances may have other signs
    with pytest.raises(ConfigError, match="written before panda stored that form: train it again"):
        editing.named_edit(older, "blue_eyes")


def test_the_zoo_belongs_to_the_default_training_run_and_its_indices_exist() -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train")  # `python train.py`: the run the zoo's part numbers come from
    zoo = editing.load_zoo(cfg.gen.name)
    assert zoo["layer"] == cfg.gen.layer
    appearances = cfg.rank.appearances or SHAPE[0]  # null: R_C = C, the layer's channels
    assert zoo["ranks"] == {"parts": cfg.rank.parts, "appearances": appearances}
    for name, triples in zoo["edits"].items():
        for edit in editing.parse_edits(triples):
            assert 0 <= edit.part < cfg.rank.parts and 0 <= edit.appearance < appearances, name


def test_named_edit_refuses_factors_of_another_layer_or_rank(run: Factors, tmp_path: Path) -> None:
    zoo = {
        "layer": "main.5",
        "ranks": {"parts": 8, "appearances": 16},
        "edits": {"x": [{"part": 0, "appearance": 0, "alpha": 1}]},
    }
    (tmp_path / "dcgan_faces.yaml").write_text(yaml.safe_dump(zoo))
    with pytest.raises(ConfigError, match=r"layer main.5 \(run has main.8\)"):
        editing.named_edit(run, "x", tmp_path)
    with pytest.raises(ConfigError, match="known edits: x"):
        editing.named_edit(run, "smile", tmp_path)


def test_a_part_may_be_given_by_its_label(run: Factors) -> None:
    labels = ["mouth", "hair", "face", "eyes", "nose", "background", "mixed", "artefact"]
    named = dataclasses.replace(run, labels=labels)
    by_name = editing.edit_offset(named, editing.parse_edits([{"part": "hair", "appearance": 3, "alpha": 2.0}]))
    torch.testing.assert_close(by_name, editing.edit_offset(run, [Edit(1, 3, 2.0)]))
    with pytest.raises(ConfigError, match="unknown part name 'ears'; this run's parts: mouth, hair, face, eyes"):
        named.check_index("ears", "part")
    with pytest.raises(ConfigError, match=r"this run's parts are not named: .*task=name"):
        run.check_index("hair", "part")
    with pytest.raises(ConfigError, match="appearance index 'hair' is out of range"):
        named.check_index("hair", "appearance")
