"""The studio's callbacks as pure functions of the session (no browser), and ``task=studio``'s start-up errors."""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from panda.base.errors import ConfigError
from panda.studio.core import MAX_SAMPLE, Session, Settings, Studio, parse_sample
from panda.uses import editing, localization
from panda.uses.editing import Edit
from panda.uses.factors import Factors
from panda.uses.visualize import to_uint8
from tests.conftest import LABELS, ROOT, forward_calls, run_script


def options(**changes: Any) -> dict[str, Any]:
    """``conf/task/studio.yaml`` with ``changes`` (few statistics samples: fast)."""
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "studio.yaml").eval)
    small = {"statistics": 24, "batch_size": 12, "refine": {"steps": 20, "lr": 0.001}, "row": 3}
    return settings | small | {"preview": {"strength": 6.0, "batch_size": 12}} | changes


@pytest.fixture
def studio(run: Factors, run_copy: Path) -> Studio:
    """The studio on :func:`tests.conftest.run` with :data:`tests.conftest.LABELS` (part 0, "chin": the bottom
    half), saving into a run of the test's own."""
    return Studio(replace(run, labels=LABELS), Settings.from_config(options(), run_copy), seed=0)


@pytest.fixture
def loaded(studio: Studio) -> Session:
    return studio.load(Session(), "3")


def test_samples_are_numbers_or_random() -> None:
    assert parse_sample(" 17 ") == 17 and parse_sample(0) == 0
    assert 0 <= parse_sample("random") <= MAX_SAMPLE
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        parse_sample("abc")
    for bad in (-1, MAX_SAMPLE + 1):
        with pytest.raises(ConfigError, match="out of range"):
            parse_sample(bad)


def test_default_settings_and_the_zoo_under_the_run(run_dir: Path) -> None:
    settings = Settings.from_config(options(), run_dir)
    assert settings.host == "127.0.0.1" and not settings.share
    assert settings.zoo_dir == run_dir.resolve() / "edits"
    assert Settings.from_config(options(), run_dir / "factors.pt").zoo_dir == settings.zoo_dir


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "eval.port=0 must be in 1..65535"),
        ({"statistics": 0}, "eval.statistics and eval.batch_size must be >= 1"),
        ({"threads": 0}, "eval.threads must be >= 1"),
        ({"strength": {"min": 5, "max": 5, "step": 1}}, "min < max"),
        ({"strength": {"min": -5, "max": float("inf"), "step": 1}}, "min < max"),
        ({"strength": {"min": -5, "max": 5, "step": 0}}, "step=0.0 must be > 0"),
        ({"remove_alpha": 50}, "remove_alpha must lie in"),
        ({"preview": {"strength": 0, "batch_size": 4}}, "eval.preview.strength must be > 0"),
        ({"preview": {"strength": 30, "batch_size": 4}}, "its negative must lie in"),
        ({"preview": {"strength": 6, "batch_size": 0}}, "eval.preview.batch_size and eval.row must be >= 1"),
        ({"row": 0}, "eval.preview.batch_size and eval.row must be >= 1"),
        ({"refine": {"steps": 0, "lr": 0.001}}, "eval.refine.steps=0"),
        ({"gif_scales": []}, "at least one"),
        ({"display": 8}, "eval.display and eval.thumbnail must be >= 16"),
        ({"sample": "first"}, "'first' is not a number"),
        ({"zoo_dir": str(editing.ZOO_DIR)}, "the project's conf/edits, which the studio never writes"),
    ],
)
def test_bad_settings_are_refused(run_dir: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_config(options(**changes), run_dir)


def test_a_loaded_sample_is_the_numbered_sample(studio: Studio, loaded: Session) -> None:
    latents = studio.factors.latents(0, [3])
    with torch.inference_mode():
        expected = to_uint8(studio.factors.generator(latents))[0]
    assert loaded.sample.index == 3
    np.testing.assert_array_equal(loaded.sample.image, expected)
    np.testing.assert_array_equal(studio.edited(loaded)[0], expected)  # nothing to edit yet
    assert studio.original(loaded).shape == (64, 64, 3)  # smaller than eval.display: sent as it is
    assert studio.parts(loaded).shape == (256, 256, 3)  # enlarged: clicks on it come in its pixels


def test_an_edit_update_resumes_from_the_cached_features(
    studio: Studio, loaded: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_features(*_args: Any) -> None:
        raise AssertionError("the features were computed again")

    for method in ("features", "features_and_state", "forward"):
        monkeypatch.setattr(studio.factors.generator, method, no_features)
    state = studio.set_strength(studio.choose_appearance(loaded, 5), 7.5)
    offset = editing.edit_offset(studio.factors, [Edit(0, 5, 7.5)])
    expected = editing.edited_images(studio.factors, loaded.sample.features, loaded.sample.state, offset)[0]
    np.testing.assert_array_equal(studio.edited(state)[0], to_uint8(expected)[0])  # as task=edit computes it


def test_a_stylegan2_edit_resumes_from_the_loaded_state_and_runs_nothing_before_the_layer(
    stylegan2_run: Factors, tmp_path: Path
) -> None:
    run, gen = stylegan2_run, stylegan2_run.generator
    studio = Studio(run, Settings.from_config(options(), tmp_path), seed=0)
    loaded = studio.load(Session(), 2)
    state = studio.set_strength(studio.choose_appearance(studio.choose_part(loaded, 1), 3), 6)
    before = [gen.net.mapping, gen.net.synthesis.b4, gen.net.synthesis.b8]  # the modules before synthesis.b16.conv1
    with forward_calls(before) as calls:
        edited = studio.edited(state)[0]
    assert calls == []
    offset = editing.edit_offset(run, [Edit(1, 3, 6.0)]).to(loaded.sample.features)
    with torch.inference_mode():  # as before: resumed from the latents, with a pass up to the layer
        expected = gen.resume(loaded.sample.features + offset, run.layer, run.latents(0, [2]))
    np.testing.assert_array_equal(edited, to_uint8(expected)[0])
    assert (edited != loaded.sample.image).any()


def test_every_view_works_on_a_stylegan2_run_without_labels(stylegan2_run: Factors, tmp_path: Path) -> None:
    studio = Studio(stylegan2_run, Settings.from_config(options(), tmp_path), seed=0)
    state = studio.set_strength(studio.choose_part(studio.load(Session(), 2), 1), 5)
    assert [name for _, name, _ in studio.legend()] == ["0", "1", "2"]
    assert [caption for _, caption in studio.part_gallery(state)] == ["0", "1", "2"]
    assert "over part 1 at strength 3" in studio.removal_hint(state)
    (previews,) = studio.previews(state)  # 4 appearances, both signs: one pass
    assert len(previews) == 8 and previews[0].change >= previews[-1].change
    assert studio.parts(state).shape == (256, 256, 3) and len(studio.row(state)) == 3
    assert studio.restore(studio.snapshot(state)).edits == state.edits


def test_an_edit_of_the_clicked_part_changes_only_its_region(studio: Studio, loaded: Session) -> None:
    state = studio.part_at(studio.choose_part(loaded, 4), 100, 200)  # bottom half of the 256 px parts image: part 0
    assert state.part == 0
    state = studio.set_strength(studio.choose_appearance(state, 2), 10)
    change = np.abs(studio.live(state).astype(int) - studio.original(state).astype(int))
    assert change[:24].max() == 0 and change[40:].mean() > 10  # part 0 is zero on the top half


def test_large_images_are_shrunk_to_the_display_size(run: Factors, run_dir: Path) -> None:
    studio = Studio(run, Settings.from_config(options(display=32), run_dir), seed=0)
    state = studio.set_strength(studio.load(Session(), 3), 5)
    assert studio.live(state).shape == studio.original(state).shape == studio.parts(state).shape == (32, 32, 3)
    assert studio.part_at(state, 12, 25).part == 0
    with pytest.raises(ConfigError, match=r"pixel \(12, 32\) is outside the 32 x 32 image"):
        studio.part_at(state, 12, 32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, state: s.choose_part(state, 8), "part index 8 is out of range: this run has R_S=8"),
        (lambda s, state: s.choose_part(state, 1.5), "part 1.5 is not a whole number"),
        (lambda s, state: s.choose_appearance(state, -1), "appearance index -1 is out of range"),
        (lambda s, state: s.choose_appearance(state, None), r"no appearance given: type an index 0..15"),
        (lambda s, state: s.choose_appearance(state, ""), r"no appearance given"),
        (lambda s, state: s.choose_appearance(state, 3.5), r"appearance 3.5 is not a whole number: give an index"),
        (lambda s, state: s.set_strength(state, float("nan")), "strength nan is outside"),
        (lambda s, state: s.set_strength(state, 1e30), r"strength 1e\+30 is outside \[-20, 20\]"),
        (lambda s, state: s.set_strength(state, "strong"), "strength 'strong' is not a number"),
        (lambda s, state: s.part_at(state, 256, 3), r"pixel \(256, 3\) is outside the 256 x 256 image"),
        (lambda s, state: s.part_at(state, 2.5, 3), r"pixel \(2.5, 3\) is outside"),
        (lambda s, state: s.drop(state, 0), "there is no edit 0 in a stack of 0"),
        (lambda s, state: s.add(state), "strength 0"),
        (lambda s, state: s.load(state, "x1"), "'x1' is not a number"),
    ],
)
def test_bad_input_is_one_message_and_the_session_is_unchanged(
    studio: Studio, loaded: Session, call: Any, message: str
) -> None:
    before = loaded
    with pytest.raises(ConfigError, match=message):
        call(studio, loaded)
    assert loaded == before and loaded.sample is before.sample


def test_nothing_loaded_is_a_message(studio: Studio) -> None:
    with pytest.raises(ConfigError, match="no sample is loaded"):
        studio.live(Session())


def test_whole_numbers_from_number_boxes_are_indices(studio: Studio, loaded: Session) -> None:
    assert studio.choose_appearance(loaded, 7.0).appearance == 7
    assert studio.choose_part(loaded, 2).part == 2


def test_edits_stack_and_unstack(studio: Studio, loaded: Session) -> None:
    first = studio.add(studio.set_strength(studio.choose_appearance(loaded, 1), 4))
    assert first.stack == (Edit(0, 1, 4.0),) and first.strength == 0 and first.edits == [Edit(0, 1, 4.0)]
    both = studio.set_strength(studio.choose_part(first, 3), -2)
    assert both.edits == [Edit(0, 1, 4.0), Edit(3, 1, -2.0)]  # the stack, then the current edit
    two = studio.add(both)
    assert studio.drop(two, 0).stack == (Edit(3, 1, -2.0),)
    offset = editing.edit_offset(studio.factors, two.edits)
    expected = editing.edited_images(studio.factors, loaded.sample.features, loaded.sample.state, offset)[0]
    np.testing.assert_array_equal(studio.edited(two)[0], to_uint8(expected)[0])


def test_the_generator_runs_one_pass_at_a_time(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions share the generator, whose split passes hook its modules: every pass holds the studio's lock."""
    calls = []
    for method in ("features_and_state", "resume"):
        original = getattr(studio.factors.generator, method)

        def locked(*args: Any, original: Any = original, **kwargs: Any) -> Any:
            calls.append(studio.generator_lock.locked())
            return original(*args, **kwargs)

        monkeypatch.setattr(studio.factors.generator, method, locked)
    studio.live(studio.set_strength(studio.load(Session(), 1), 3))
    assert calls == [True, True, True]  # load: features and the image; the edit


def test_tabs_are_independent_sessions(studio: Studio, loaded: Session) -> None:
    other = studio.load(Session(), "3")
    edited = studio.add(studio.set_strength(loaded, 6))
    assert other.stack == () and other.strength == 0 and loaded.stack == ()
    assert edited.sample is loaded.sample  # a sample's features are computed once, then shared by its edits
    np.testing.assert_array_equal(studio.live(other), studio.original(other))


def test_a_new_sample_keeps_the_edits(studio: Studio, loaded: Session) -> None:
    state = studio.load(studio.add(studio.set_strength(loaded, 6)), "random")
    assert state.stack == (Edit(0, 0, 6.0),) and state.sample is not loaded.sample


def test_remove_paints_the_background_found_as_task_remove_does(studio: Studio, loaded: Session) -> None:
    maps = localization.dataset_maps(studio.factors, 0, 24, 12)
    masks = localization.binarize(maps, localization.thresholds(maps))
    background, _ = localization.background_appearance(studio.factors, masks, 2)
    state = studio.remove_part(studio.choose_part(loaded, 2))
    assert state.edits == [Edit(2, background, 3.0)]  # eval.remove_alpha


def test_gallery_shows_every_appearances_localisation(studio: Studio, loaded: Session) -> None:
    gallery = studio.gallery(loaded)
    assert [caption for _, caption in gallery] == [f"appearance {j}" for j in range(16)]
    masks = localization.concept_masks(loaded.sample.maps, studio.thresholds, 64)[0]
    image, _ = gallery[4]
    tinted = torch.from_numpy((image != loaded.sample.image).any(-1))
    assert image.shape == (64, 64, 3) and 0 < masks[4].sum() < 64 * 64 and torch.equal(tinted, masks[4])


def test_the_part_list_groups_the_parts_by_name(run: Factors, run_dir: Path) -> None:
    labels = ["hair", "eyes", "nose", "eyes_2", "background", "hair_2", "mouth", "eyes_3"]
    studio = Studio(replace(run, labels=labels), Settings.from_config(options(), run_dir), seed=0)
    assert [name for _, name, _ in studio.legend()] == [
        "4: background", "1: eyes", "3: eyes_2", "7: eyes_3", "0: hair", "5: hair_2", "6: mouth", "2: nose"
    ]  # fmt: skip
    unnamed = Studio(run, Settings.from_config(options(), run_dir), seed=0)  # a run without labels: the numbers
    assert [(k, name) for k, name, _ in unnamed.legend()] == [(k, str(k)) for k in range(8)]


def test_the_chosen_part_is_outlined_and_the_tint_can_be_hidden(studio: Studio, loaded: Session) -> None:
    plain = studio.original(loaded).repeat(4, axis=0).repeat(4, axis=1)  # 64 px enlarged to the 256 px parts image
    untinted = studio.parts(loaded, tint=False)  # part 0 is the bottom half: its edge is the middle row
    assert (untinted[127] == 255).all() and (untinted[128] == 0).all()  # white outside, black inside
    np.testing.assert_array_equal(np.delete(untinted, [127, 128], axis=0), np.delete(plain, [127, 128], axis=0))
    tinted = studio.parts(loaded)
    assert (tinted[127] == 255).all() and (
        np.delete(tinted, [127, 128], axis=0) != np.delete(plain, [127, 128], 0)
    ).any()
    assert (studio.parts(studio.choose_part(loaded, 3), tint=False)[127] != 255).any()  # another part, another edge


def test_previews_paint_each_appearance_on_the_part_sorted_by_change(studio: Studio, loaded: Session) -> None:
    state = studio.add(studio.set_strength(studio.choose_part(loaded, 3), 4))  # previews paint over the stack
    batches = list(studio.previews(studio.set_strength(studio.choose_part(state, 0), 9)))
    assert [len(done) for done in batches] == [12, 24, 32]  # 16 appearances, both signs, 12 per pass
    previews = batches[-1]
    assert {(p.edit.appearance, p.edit.alpha) for p in previews} == {(j, s) for j in range(16) for s in (6.0, -6.0)}
    changes = [p.change for p in previews]
    assert changes == sorted(changes, reverse=True) and changes[0] > changes[-1] >= 0
    for preview in (previews[0], previews[-1]):  # each is the image its edit gives over the stack
        shown = studio.edited(studio.choose_edit(state, preview.edit))[0]
        assert np.abs(preview.image.astype(int) - shown).max() <= 1  # batched: float rounding at most
        before = studio.edited(state)[0].astype(float)
        weights = np.zeros((64, 64, 1))
        weights[32:] = 1  # part 0's map, upsampled
        rms = np.sqrt((np.square(shown - before) * weights).sum() / (3 * weights.sum()))
        assert preview.change == pytest.approx(rms, abs=1.0)


def test_the_previews_sheet_shows_them_in_order_and_a_click_picks_one(studio: Studio, loaded: Session) -> None:
    *_, previews = studio.previews(loaded)
    sheet, edits = studio.sheet(loaded, previews), [p.edit for p in previews]
    assert sheet.shape == (4 * (64 + 12 + 2), 8 * (64 + 2), 3)  # 32 previews, 8 a row, each captioned
    np.testing.assert_array_equal(sheet[78:142, 66:130], previews[9].image)  # the second row's second
    assert studio.preview_at(loaded, edits, 70, 80) == edits[9] and studio.preview_at(loaded, edits, 0, 0) == edits[0]
    assert (studio.sheet(loaded, previews[:3])[78:] == 255).all()  # room for the previews still to come
    for x, y in ((70, 80), (600, 0), (-1, 0), (1.5, 0)):
        with pytest.raises(ConfigError, match="there is no preview at"):
            studio.preview_at(loaded, edits[:3], x, y)


def test_undo_goes_back_and_clear_removes_every_edit(studio: Studio, loaded: Session) -> None:
    with pytest.raises(ConfigError, match="nothing to undo"):
        studio.undo(loaded)
    with pytest.raises(ConfigError, match="nothing to clear"):
        studio.clear(loaded)
    first = studio.set_strength(studio.choose_appearance(loaded, 1), 4)
    added = studio.add(first)
    chosen = studio.choose_edit(added, Edit(2, 5, -6.0))
    removed = studio.remove_part(chosen)
    cleared = studio.clear(studio.drop(studio.add(removed), 0))
    assert cleared.edits == [] and cleared.sample is loaded.sample
    states = [cleared]
    while states[-1].history:
        states.append(studio.undo(states[-1]))
    assert [s.edits for s in states] == [
        [],  # cleared
        [Edit(2, removed.appearance, 3.0)],  # the dropped first entry is back
        [Edit(0, 1, 4.0), Edit(2, removed.appearance, 3.0)],  # the removal is back as the current edit
        removed.edits,
        [Edit(0, 1, 4.0), Edit(2, 5, -6.0)],  # the chosen preview
        [Edit(0, 1, 4.0)],  # on the stack
        [Edit(0, 1, 4.0)],  # not added yet: the current edit
    ]
    assert states[-2].stack == (Edit(0, 1, 4.0),) and states[-1].stack == ()
    assert states[-1] == replace(first, history=()) and all(s.sample is loaded.sample for s in states)


def test_removal_says_what_it_paints(studio: Studio, loaded: Session) -> None:
    edit, covered = studio.removal(2)
    hint = studio.removal_hint(studio.choose_part(loaded, 2))
    assert f"paints appearance {edit.appearance} over part 2: blob 2 at strength 3" in hint
    assert f"({covered:.0%} of them, over 24 samples)" in hint and 0 < covered <= 1
    state = studio.remove_part(studio.choose_part(loaded, 2))
    assert state.stack == () and state.edits == [edit]  # shown, not on the stack


def test_a_saved_session_is_restored(studio: Studio, loaded: Session) -> None:
    state = studio.set_strength(studio.choose_part(studio.add(studio.set_strength(studio.load(loaded, 7), 4)), 3), -2)
    saved = json.loads(json.dumps(studio.snapshot(state)))  # what the browser keeps
    restored = studio.restore(saved)
    assert restored.sample.index == 7 and restored.edits == state.edits and restored.history == ()
    np.testing.assert_array_equal(studio.live(restored), studio.live(state))
    assert studio.snapshot(Session()) is None
    with pytest.raises(ConfigError, match="belongs to another studio: starting afresh"):
        studio.restore({**saved, "studio": "dcgan_faces elsewhere"})
    for bad in ({**saved, "stack": [[9, 0, 1.0]]}, {**saved, "strength": "x"}, {**saved, "sample": -1}, "junk"):
        with pytest.raises(ConfigError, match="starting afresh"):
            studio.restore(bad)


def test_the_row_shows_the_edits_on_the_next_samples(studio: Studio, loaded: Session) -> None:
    state = studio.set_strength(studio.load(loaded, MAX_SAMPLE - 1), 8)
    row = studio.row(state)
    assert [caption for _, caption in row] == [f"sample {i}" for i in (MAX_SAMPLE - 1, MAX_SAMPLE, 0)]
    for (pair, _), index in zip(row, (MAX_SAMPLE - 1, MAX_SAMPLE, 0), strict=True):
        single = studio.load(state, index)
        np.testing.assert_array_equal(pair[:, :64], single.sample.image)
        assert np.abs(pair[:, 64:].astype(int) - studio.edited(single)[0]).max() <= 1  # batched: float rounding
    unedited = studio.row(loaded)
    assert all((pair[:, :64] == pair[:, 64:]).all() for pair, _ in unedited)


def test_the_part_gallery_shows_where_each_part_is(studio: Studio, loaded: Session) -> None:
    gallery = studio.part_gallery(loaded)
    assert [caption for _, caption in gallery] == [f"{k}: {label}" for k, label in enumerate(LABELS)]
    chin, _ = gallery[0]
    tinted = (chin != loaded.sample.image).any(-1)
    assert tinted[40:].all() and not tinted[:24].any()  # the bottom half


def test_refine_lowers_this_samples_error(studio: Studio, loaded: Session) -> None:
    global_parts, refined, before, after = studio.refine(loaded)
    assert after < before and global_parts.shape == refined.shape == (256, 256, 3)
    np.testing.assert_array_equal(global_parts, studio.parts(loaded))


def test_saved_edits_are_named_edits_of_the_zoo(studio: Studio, loaded: Session) -> None:
    state = studio.set_strength(studio.add(studio.set_strength(studio.choose_appearance(loaded, 6), 6)), -3)
    path = studio.save(state, "ginger", overwrite=False)
    assert path == studio.settings.zoo_dir / "dcgan_faces.yaml"
    assert editing.named_edit(studio.factors, "ginger", path.parent) == [Edit(0, 6, 6.0), Edit(0, 6, -3.0)]
    with pytest.raises(ConfigError, match="already has an edit named 'ginger': tick 'overwrite'"):
        studio.save(state, "ginger", overwrite=False)
    studio.save(studio.set_strength(loaded, 2), "ginger", overwrite=True)
    studio.save(studio.set_strength(loaded, 1), "other", overwrite=False)
    assert editing.named_edit(studio.factors, "ginger", path.parent) == [Edit(0, 0, 2.0)]
    assert set(editing.load_zoo("dcgan_faces", path.parent)["edits"]) == {"ginger", "other"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must be letters"),
        ("a b", "must be letters"),
        ("x=1", "must be letters"),
        *((name, "not a number, true, false or null") for name in ("null", "true", "123", "1e3")),
    ],
)
def test_bad_edit_names_are_refused(studio: Studio, loaded: Session, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        studio.save(studio.set_strength(loaded, 1), name, overwrite=False)


def test_save_refuses_what_it_should_not_write(studio: Studio, loaded: Session, run_copy: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to save"):
        studio.save(loaded, "none", overwrite=False)
    edit = studio.set_strength(loaded, 1)
    zoo = studio.settings.zoo_dir / "dcgan_faces.yaml"
    zoo.parent.mkdir(parents=True)
    zoo.write_text("# hand-written\n" + (ROOT / "conf" / "edits" / "dcgan_faces.yaml").read_text())
    with pytest.raises(ConfigError, match="was not written by the studio"):
        studio.save(edit, "mine", overwrite=False)
    zoo.unlink()
    studio.save(edit, "mine", overwrite=False)
    zoo.write_text(zoo.read_text().replace("parts: 8", "parts: 16"))
    with pytest.raises(ConfigError, match="another layer or ranks"):
        studio.save(edit, "mine2", overwrite=False)
    written = zoo.read_text()
    zoo.write_text(written.split("\n", 1)[0] + "\nedits: {a: [\n")  # the studio's, then damaged
    with pytest.raises(ConfigError, match="is not a readable edit zoo"):
        studio.save(edit, "mine2", overwrite=False)
    zoo.write_text(written)
    shutil.rmtree(run_copy)
    with pytest.raises(ConfigError, match="has disappeared"):
        studio.save(edit, "mine3", overwrite=False)
    assert not run_copy.exists()  # not recreated
    assert (studio.live(edit) != studio.original(edit)).any()  # editing goes on from memory


def test_export_writes_the_image_and_a_before_after_gif(studio: Studio, loaded: Session, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to export"):
        studio.export(loaded, tmp_path)
    state = studio.set_strength(loaded, 8)
    png, gif = studio.export(state, tmp_path / "out")
    assert png.parent == gif.parent and png.parent.parent == tmp_path / "out"
    assert studio.export(state, tmp_path / "out")[0].parent != png.parent  # a fresh folder per export
    with Image.open(png) as image:  # 64 px enlarged 4 times (nearest) to eval.display
        np.testing.assert_array_equal(np.asarray(image)[::4, ::4], studio.edited(state)[0])
        assert image.size == (256, 256)
    with Image.open(gif) as animation:
        assert animation.n_frames == len(studio.settings.gif_scales)
        assert animation.size == (2 * 256, 256)  # before | after, enlarged to the display size


def test_the_zoo_of_the_studio_is_applied_by_task_edit(studio: Studio, loaded: Session, tmp_path: Path) -> None:
    path = studio.save(studio.set_strength(studio.choose_appearance(loaded, 6), 6), "ginger", overwrite=False)
    done = run_script(
        "evaluate.py",
        f"hydra.run.dir={tmp_path / 'edit'}",
        "task=edit",
        f"run={studio.settings.run_dir}",
        "eval.name=ginger",
        f"eval.zoo_dir={path.parent}",
        "samples=[3]",
        "eval.scales=[1]",
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((tmp_path / "edit" / "evaluate.json").read_text())["edits"] == [
        {"part": 0, "appearance": 6, "alpha": 6.0}
    ]


def test_the_studio_refuses_a_run_it_cannot_load(tmp_path: Path) -> None:
    done = run_script("evaluate.py", f"hydra.run.dir={tmp_path}", "task=studio", f"run={tmp_path / 'nowhere'}")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "nowhere does not exist" in output and "Traceback" not in output


def test_the_studio_refuses_bad_settings_and_a_busy_port(run_dir: Path, tmp_path: Path) -> None:
    done = run_script("evaluate.py", f"hydra.run.dir={tmp_path}", "task=studio", f"run={run_dir}", "eval.port=0")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "eval.port=0 must be in 1..65535" in output and "Traceback" not in output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_script(
            "evaluate.py",
            f"hydra.run.dir={tmp_path}",
            "task=studio",
            f"run={run_dir}",
            f"eval.port={port}",
            "eval.statistics=4",
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in output and "Traceback" not in output
