"""The ROIR benchmark: disjoint calibration/test samples, scale calibration, choosing, the methods' needs, the task
and the callbacks end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from panda.base.config import instantiate
from panda.base.errors import ConfigError
from panda.base.factors_file import save_labels
from panda.method.data import FeatureDataModule, Stream, batch_generator
from panda.method.model import LABELS
from panda.roir import benchmark as benchmark_module
from panda.roir import editors as editors_module
from panda.roir.baselines.base import Editor, Need, repeat
from panda.roir.callbacks import FinalROIR
from panda.roir.editors import NAMED, Method, PandAEditor, build_editors, direction_seconds, named_parts
from panda.roir.faces import Faces, face_batches
from panda.roir.measure import Worst, measure
from panda.roir.metric import inside_change
from panda.roir.report import row as result_row
from panda.roir.report import tables
from panda.roir.search import BUDGET, FULL, Choice, choose, choose_all, targets
from panda.roir.settings import ChooseSettings, ROIRSettings
from panda.tasks.registry import evaluate as evaluate_task
from panda.uses.landmarks import LandmarkDetector
from tests.conftest import (
    LAYER,
    ROOT,
    SHAPE,
    TINY,
    fit_in_process,
    panda_model,
    run_evaluate,
    run_script,
    write_run,
)

CONF = OmegaConf.merge(  # conf/roir/default.yaml reads dlib's settings from conf/naming/default.yaml
    {"naming": OmegaConf.load(ROOT / "conf" / "naming" / "default.yaml")},
    {"eval": OmegaConf.load(ROOT / "conf" / "roir" / "default.yaml")},
).eval


def tiny_roir(run: Path, out: Path, *overrides: str) -> DictConfig:
    """``evaluate.py task=roir`` on ``run`` writing into ``out``, on 8 calibration and 4 test samples with one
    face per grid, regions only, the equal-budget search only, and ``overrides``."""
    budget = ["eval.test_samples=4", "eval.calibration=8", "eval.grid=1", "eval.features=[]", "eval.full_search=false"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=["task=roir", f"run={run}", f"output_dir={out}", *budget, *overrides])


def settings(**options: Any) -> ChooseSettings:
    """The search settings of conf/roir/default.yaml, ``options`` replacing some."""
    return ChooseSettings.from_config({**CONF.choose, **options}, "eval.choose")


def benchmark_settings(**options: Any) -> ROIRSettings:
    """The benchmark's settings of conf/roir/default.yaml, ``options`` replacing some."""
    return ROIRSettings.from_config(OmegaConf.merge(CONF, options), "eval")


class PatternEditor(Editor):
    """Adds ``scale * pattern_k`` to the images: pattern 0 lies inside the box, 1 half outside, 2 is zero."""

    name = "patterns"

    def __init__(self, box: Tensor) -> None:
        self.patterns = torch.stack([box, torch.ones_like(box) * 0.5, torch.zeros_like(box)]) * 0.01

    @property
    def count(self) -> int:
        return len(self.patterns)

    def prepare(self, latents: Tensor) -> Tensor:
        return latents  # the "latents" are the images themselves

    def images(self, prepared: Tensor, directions: Tensor, scales: Tensor) -> Tensor:
        return prepared + scales[:, None, None, None] * self.patterns[directions]


def test_inside_change_is_the_rms_change_inside_the_mask():
    original = torch.zeros(2, 3, 8, 8)
    edited = original.clone()
    edited[0, :, :2, :2] = 0.3  # inside the mask
    edited[1, :, 6:, 6:] = 5.0  # outside the mask
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., :4, :4] = 1
    torch.testing.assert_close(inside_change(original, edited, mask), torch.tensor([0.3 * (12 / 48) ** 0.5, 0.0]))


def test_choose_picks_the_local_direction_and_scales_it_to_the_target_change():
    box = torch.zeros(3, 16, 16)
    box[:, 4:12, 4:12] = 1
    mask = box[:1]
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    faces = Faces(images, images, [None] * 6)
    faces.masks = lambda region, dilation: mask.expand(6, 1, 16, 16)  # a known region instead of landmarks
    choice = choose(PatternEditor(box), faces, ["eyes"], settings(inside_change=0.2, screen=3, chunk=7))["eyes"]
    assert choice.index == 0 and choice.calibration_roir == pytest.approx(0.0, abs=1e-6)
    assert abs(choice.scale) == pytest.approx(20.0, rel=1e-4)  # 0.01 * |scale| = 0.2 inside


def test_a_repeated_prepared_batch_edits_as_the_repeated_latents_do(stylegan2_run):
    """The search edits a prepared batch repeated once per direction: its resume state is repeated with it."""
    editor = PandAEditor(stylegan2_run)
    latents = stylegan2_run.latents(0, [0, 1])
    directions, scales = torch.tensor([0, 1, 5, 11]), torch.tensor([20.0, -20.0, 10.0, 30.0])
    edited = editor.images(repeat(editor.prepare(latents), 2), directions, scales)
    expected = editor.images(editor.prepare(latents.repeat(2, 1)), directions, scales)
    torch.testing.assert_close(edited, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(edited[:2], edited[2:])  # the second copy has other edits


def test_calibration_validation_and_test_samples_are_disjoint(dcgan):
    streams = (Stream.CALIBRATION, Stream.ROIR_VALIDATION, Stream.TEST)
    latents = [torch.cat([dcgan.sample_latents(8, batch_generator(0, s, i)) for i in range(3)]) for s in streams]
    for i, first in enumerate(latents):
        for second in latents[i + 1 :]:
            assert torch.cdist(first, second).min() > 1.0  # no sample of one stream is a sample of another
    detector = LandmarkDetector(CONF.upscale)
    calibration = next(face_batches(dcgan, detector, 0, Stream.CALIBRATION, 8, 8))
    assert len(calibration.latents) + calibration.skipped == 8 and len(calibration.latents) > 0
    assert torch.cdist(calibration.latents, latents[0][:8]).min(1).values.max() == 0  # faces of the stream's samples


def test_the_roir_task_draws_calibration_and_test_faces_from_different_streams(run_dir, tmp_path, monkeypatch):
    streams = recorded_streams(monkeypatch)
    cfg = tiny_roir(run_dir, tmp_path, "eval.methods=[sefa]", "eval.regions=[mouth]", "eval.choose.candidates=2")
    result = evaluate_task(cfg)
    assert streams == [Stream.CALIBRATION, Stream.TEST]
    assert result["rows"][0]["images"] + result["rows"][0]["unchanged"] + result["skipped"] == 4


def test_worst_keeps_the_faces_with_the_highest_roir_over_batches():
    worst = Worst(2)
    images = torch.arange(5.0)[:, None, None, None].expand(5, 3, 2, 2)  # face i is filled with i
    masks = torch.ones(5, 1, 2, 2)
    worst.update(torch.tensor([1.0, 4.0, float("nan")]), images[:3], masks[:3], -images[:3])
    worst.update(torch.tensor([3.0, 4.0]), images[3:], masks[3:], -images[3:])
    torch.testing.assert_close(worst.ratios, torch.tensor([4.0, 4.0], dtype=torch.float64))
    assert worst.originals[:, 0, 0, 0].tolist() == [1.0, 4.0]  # a tie keeps the earlier face first
    assert worst.edits[:, 0, 0, 0].tolist() == [-1.0, -4.0] and worst.masks.shape == (2, 1, 2, 2)
    worst.update(torch.tensor([float("nan")]), images[:1], masks[:1], images[:1])  # unchanged: never kept
    assert len(worst.ratios) == 2 and not worst.ratios.isnan().any()


def test_tables_report_mean_std_median_quartiles_faces_and_effects_per_search():
    row = {"roir_mean": 2.5, "roir_std": 0.75, "roir_median": 2.25, "roir_q1": 1.5, "roir_q3": 3.125}
    row |= {"faces_above_5": 3, "images": 40, "unchanged": 1, "skipped": 9, "effect_mean": 0.05, "effect_std": 0.01}
    rows = [
        {"search": BUDGET, "method": "panda", "target": "eyes", **row},
        {"search": BUDGET, "method": "sefa", "target": "mouth", **row},
        {"search": BUDGET, "method": "sefa", "target": "smile", **row},
        {"search": FULL, "method": "panda", "target": "eyes", **row, "roir_mean": 1.0},
    ]
    markdown = tables(rows, ["eyes", "mouth"], ["open_mouth", "smile"], 32, {"panda": 12.0, "sefa": 0.5}, above=5.0)
    budget, full = markdown.split("### Regions, full search")
    assert "### Regions, equal budget (at most 32 candidates per method and target)" in budget
    assert "| panda | 2.50 +- 0.75 | n/a | 12.0 |" in budget and "| panda | 1.00 +- 0.75 | n/a | 12.0 |" in full
    assert "| sefa | n/a | 2.50 +- 0.75 | 0.5 |" in budget
    assert "| panda | 2.25 [1.50, 3.12], 3 of 40 | n/a |" in budget
    assert (
        "| method | Open mouth | Smile |" in budget
        and "| sefa | n/a | 2.50 +- 0.75 (effect 0.050 +- 0.010) |" in budget
    )
    assert "### Semantic edits, full search" in full and "The paper's Table 1" in full
    assert "faces with ROIR above 5" in markdown
    assert "Faces measured: 41 found, 9 of the 50 samples skipped (no face found)." in markdown


def test_bad_search_settings_are_refused():
    with pytest.raises(ConfigError, match=r"eval\.choose\.screen=0 must be >= 1"):
        settings(screen=0)


def test_evaluate_roir_writes_the_table_grids_and_counts(run_dir: Path, tmp_path: Path):
    out = tmp_path / "roir"
    done = run_script(
        "evaluate.py",
        f"hydra.run.dir={out}",
        "task=roir",
        f"run={run_dir}",
        "eval.test_samples=12",
        "eval.calibration=10",
        "eval.batch_size=12",
        "eval.methods=[panda,sefa,resefa,stylespace]",
        "eval.regions=[eyes,mouth]",
        "eval.grid=2",
        "eval.choose.screen=3",
        "eval.choose.finalists=2",
        "eval.choose.candidates=10",
        "eval.features=[smile]",
        "eval.full_search=false",
        "eval.effect_faces=4",
        "eval.tune_samples=8",
        "eval.tune={resefa:{eps:[0.001,0.1]}}",
        "eval.wandb=true",
        env={"WANDB_MODE": "offline"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "evaluate.json").read_text())
    rows = list(csv.DictReader((out / "roir.csv").open()))
    assert {(r["method"], r["target"]) for r in rows if r["target"] != "smile"} == {
        (m, r) for m in ("panda", "sefa", "resefa") for r in ("eyes", "mouth")
    }
    assert {r["region"] for r in rows if r["target"] == "smile"} <= {"mouth"}
    for row in rows:  # every image is measured or skipped, and every region's edit scaled to the same inside change
        assert int(row["images"]) + int(row["unchanged"]) + result["skipped"] == 12
        assert int(row["skipped"]) == result["skipped"]
        if row["target"] == "smile":
            assert float(row["calibration_effect"]) > 0 and row["effect_mean"] != "nan"
            continue
        assert float(row["inside_change"]) == pytest.approx(0.1, rel=0.5)
        assert float(row["roir_mean"]) > 0
        assert 0 < float(row["roir_q1"]) <= float(row["roir_median"]) <= float(row["roir_q3"])
        assert 0 <= int(row["faces_above_5"]) <= int(row["images"])
    assert result["above"] == 5.0 and result["rows"][0]["faces_above_5"] == int(rows[0]["faces_above_5"])
    markdown = (out / "roir.md").read_text()
    assert "| panda |" in markdown and "| resefa |" in markdown and "stylespace" not in markdown  # no style channels
    assert "### Semantic edits, equal budget" in markdown and "| method | Smile |" in markdown
    assert re.search(
        r"- resefa: eps=0\.(001|1) \(mean validation ROIR of each value tried, on \d+ faces: eps: 0\.001 ", markdown
    )
    assert f"{result['skipped']} of the 12 samples skipped" in markdown
    for region in ("eyes", "mouth"):
        assert (out / f"roir_{region}.png").stat().st_size > 0 and (out / f"roir_{region}_worst.png").stat().st_size > 0
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the table and grids, logged offline


def test_evaluate_roir_rejects_unknown_methods_and_regions(run_dir: Path, tmp_path: Path):
    done = run_evaluate(tmp_path / "a", "task=roir", f"run={run_dir}", "eval.regions=[ears]")
    assert done.returncode == 2 and "regions: eyes, nose, mouth" in done.stdout + done.stderr
    methods = "eval.methods=[panda,interfacegan]"
    done = run_evaluate(tmp_path / "b", "task=roir", f"run={run_dir}", methods, "eval.calibration=4")
    assert done.returncode == 2
    assert "methods: panda, ganspace, sefa, lowrankgan, resefa, stylespace" in done.stdout + done.stderr
    done = run_evaluate(tmp_path / "c", "task=roir", f"run={run_dir}", "eval.above=five")
    assert done.returncode == 2 and "eval.above='five' must be a finite number" in done.stdout + done.stderr


def monitor_config(*overrides: str) -> Any:
    """``callbacks.roir`` of the training config with ``callbacks=roir`` and ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=["callbacks=roir", *overrides]).callbacks.roir


def test_roir_monitor_logs_the_roir_of_each_region_during_training(dcgan, tmp_path: Path):
    data = FeatureDataModule(dcgan, "main.8", batch_size=8, val_samples=8, init_samples=16)
    model = panda_model(SHAPE, 2, 2)
    overrides = ["callbacks.roir.regions=[mouth]", "callbacks.roir.calibration=6", "callbacks.roir.choose.screen=2"]
    trainer = pl.Trainer(
        max_steps=2,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        logger=pl.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[instantiate(monitor_config(*overrides))],
    )
    trainer.fit(model, datamodule=data)
    logged = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    values = [float(row["roir/mouth"]) for row in logged if row.get("roir/mouth")]
    assert len(values) == 1 and values[0] > 0


def test_roir_monitor_names_its_own_settings_when_they_are_bad():
    with pytest.raises(ConfigError, match=r"callbacks\.roir\.choose\.finalists=0 must be >= 1"):
        instantiate(monitor_config("callbacks.roir.choose.finalists=0"))
    with pytest.raises(ConfigError, match=r"callbacks\.roir\.min_face=-0\.1 must be a share of the image width"):
        instantiate(monitor_config("callbacks.roir.min_face=-0.1"))
    with pytest.raises(ConfigError, match=r"callbacks\.roir\.methods=\['sefa'\]: the monitor measures \[panda\]"):
        instantiate(monitor_config("callbacks.roir.methods=[sefa]"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("calibration=1", r"callbacks\.roir_final\.calibration=1 must be >= 2"),
        ("test_samples=0", r"callbacks\.roir_final\.test_samples=0 must be an integer >= 1"),
        ("batch_size=0", r"callbacks\.roir_final\.batch_size=0 must be an integer >= 1"),
        ("regions=[ears]", "unknown region .ears.; regions: eyes, nose, mouth"),
        ("choose.screen=0", r"callbacks\.roir_final\.choose\.screen=0 must be >= 1"),
        ("min_face=1", r"callbacks\.roir_final\.min_face=1 must be a share of the image width in \[0, 1\)"),
        ("above=five", r"callbacks\.roir_final\.above='five' must be a finite number"),
    ],
)
def test_final_roir_names_its_own_settings_when_they_are_bad(override: str, message: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["callbacks=roir_final", f"callbacks.roir_final.{override}"])
    with pytest.raises(ConfigError, match=message):
        instantiate(cfg.callbacks.roir_final, output_dir="unused")


def test_a_training_run_does_not_load_the_benchmark(tmp_path: Path):
    """``python train.py`` with the default callbacks imports neither :mod:`panda.roir` (its baselines) nor dlib."""
    script = tmp_path / "train_and_list_modules.py"
    overrides = [*TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    script.write_text(
        "import json, runpy, sys\n"
        f"sys.argv = ['train.py', *{overrides!r}]\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
        "print('MODULES', json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'panda', 'dlib'})))\n"
    )
    done = run_script(str(script))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "factors.pt").is_file()
    modules = json.loads(done.stdout.split("MODULES", 1)[1])
    assert "panda.training.callbacks" in modules and "panda.training.fit" in modules  # it built its callbacks, trained
    assert [m for m in modules if m == "dlib" or m.startswith("panda.roir")] == []


def test_panda_named_searches_only_the_parts_named_after_the_region(run_dir, tmp_path, caplog):
    labelled = tmp_path / "run"
    labelled.mkdir()
    shutil.copy(run_dir / "factors.pt", labelled / "factors.pt")
    save_labels(labelled, ["hair", "mouth_2", "face", "mouth", "nose", "background", "mixed", "artefact"])
    overrides = ["eval.methods=[panda_named]", "eval.regions=[eyes,mouth]", "eval.choose.screen=2"]
    cfg = tiny_roir(labelled, tmp_path / "out", *overrides, "eval.choose.finalists=2")
    with caplog.at_level(logging.WARNING):
        result = evaluate_task(cfg)
    assert "panda_named: no part is named after the eyes" in caplog.text
    rows = {(row["method"], row["region"]): row for row in result["rows"]}
    assert set(rows) == {("panda_named", "mouth")}
    assert re.match(r"part [13] \(mouth(_2)?\), appearance \d+", rows["panda_named", "mouth"]["direction"])
    assert "| panda_named | n/a |" in (tmp_path / "out" / "roir.md").read_text()


def test_panda_named_is_skipped_for_a_run_whose_parts_are_not_named(run, caplog):
    no_faces = Faces(torch.empty(0, 100), torch.empty(0, 3, 64, 64), [])  # PandA fits nothing on them
    with caplog.at_level(logging.WARNING):
        editors = build_editors(run, no_faces, benchmark_settings(methods=[NAMED, "panda"]), 5.0)
    assert "panda_named skipped: the run's parts are not named" in caplog.text and list(editors) == ["panda"]
    named = dataclasses.replace(run, labels=["eyes_2", "mouth", "eyes", "eyesore", *map(str, "abcd")])
    assert named_parts(named, ["eyes", "mouth"]) == {"eyes": [0, 2], "mouth": [1]}
    editor = PandAEditor(named, 5.0, [0, 2], NAMED)
    assert editor.count == 2 * run.appearances and editor.label(run.appearances + 1) == "part 2 (eyes), appearance 1"
    assert direction_seconds({"eyes": editor, "mouth": PandAEditor(named, 5.0, [1])}) == 5.0


def test_a_method_is_skipped_when_the_generator_lacks_what_it_declares_it_needs(run, monkeypatch, caplog):
    made = []
    probe = Method("probe", lambda *args: made.append(args), frozenset({Need.STYLE_CHANNELS}))
    monkeypatch.setitem(editors_module.METHODS, "probe", probe)
    no_faces = Faces(torch.empty(0, 100), torch.empty(0, 3, 64, 64), [])
    with caplog.at_level(logging.WARNING):
        editors = build_editors(run, no_faces, benchmark_settings(methods=["probe", "stylespace", "panda"]), 1.0)
    assert list(editors) == ["panda"] and made == []  # the DCGAN has no style channels: neither is made
    for name in ("probe", "stylespace"):
        assert f"{name} skipped: generator 'dcgan_faces' has no style channels" in caplog.text
    with pytest.raises(ConfigError, match=r"none of the methods \['probe'\] applies to generator 'dcgan_faces'"):
        build_editors(run, no_faces, benchmark_settings(methods=["probe"]), 1.0)


def test_an_edit_panda_and_panda_named_share_is_made_once_and_measured_for_both(run, monkeypatch):
    everything, first_part = PandAEditor(run), PandAEditor(run, parts=[0], name=NAMED)
    assert everything.edit(5) == first_part.edit(5) == (id(run), (0, 5))
    assert everything.edit(run.appearances) != first_part.edit(5)
    original, made = PandAEditor.images, []

    def counting(self, *args):
        made.append(self.name)
        return original(self, *args)

    monkeypatch.setattr(PandAEditor, "images", counting)
    choices = {(BUDGET, name, "mouth"): Choice(name, "mouth", "mouth", 5, "", 2.0, 1.0) for name in ("panda", NAMED)}
    editors = {"panda": {"mouth": everything}, NAMED: {"mouth": first_part}}
    detector = LandmarkDetector(CONF.upscale, min_face=CONF.min_face)
    measured = measure(editors, choices, face_batches(run.generator, detector, 0, Stream.TEST, 8, 8), 1, 5.0, 0)
    assert made == ["panda"]  # one batch, one edit
    panda, named = (result_row(measured.results[key], 0) for key in choices)
    assert panda["images"] > 0 and panda.pop("method") != named.pop("method") and panda == named


def recorded_streams(monkeypatch) -> list[Stream]:
    """The stream of every face set the benchmark draws from now on, in order."""
    streams: list[Stream] = []
    original = benchmark_module.face_batches

    def recording(gen, detector, seed, stream, *args, **kwargs):
        streams.append(stream)
        return original(gen, detector, seed, stream, *args, **kwargs)

    monkeypatch.setattr(benchmark_module, "face_batches", recording)
    return streams


def test_the_task_and_the_final_callback_choose_alike_and_only_the_task_measures_on_the_test_stream(
    run, tmp_path, monkeypatch
):
    """``evaluate.py task=roir`` and ``callbacks=roir_final`` run one benchmark: same settings, same factors, same
    choices on the calibration faces; the callback (which the ablations choose the defaults by) measures them on the
    ROIR validation stream, never the test stream, writes the tables into the run directory and publishes each
    region's mean in the trainer's callback metrics. Both search the parts named after the region: the callback takes
    the labels the training's naming set on the module."""
    streams = recorded_streams(monkeypatch)
    labels = ["mouth", *(f"blob {k}" for k in range(1, 8))]
    budget = {"methods": ["panda"], "regions": ["mouth"], "calibration": 8, "test_samples": 4, "grid": 1}
    budget |= {"features": [], "full_search": False, "choose": {"screen": 2, "finalists": 2, "iterations": 1}}
    overrides = ["eval.methods=[panda]", "eval.regions=[mouth]", "eval.choose.screen=2", "eval.choose.finalists=2"]
    cfg = tiny_roir(write_run(tmp_path / "trained", labels), tmp_path / "task", *overrides, "eval.choose.iterations=1")
    task = evaluate_task(cfg)
    assert streams == [Stream.CALIBRATION, Stream.TEST]
    streams.clear()
    (tmp_path / "run").mkdir()
    callback = FinalROIR(str(tmp_path / "run"), **OmegaConf.to_container(OmegaConf.merge(CONF, budget), resolve=True))
    data = SimpleNamespace(generator=run.generator, seed=cfg.seed, layer=LAYER)
    trainer = SimpleNamespace(is_global_zero=True, datamodule=data, loggers=[], global_step=2, callback_metrics={})
    model = SimpleNamespace(exported_appearances=lambda: run.A, P=run.P, hparams=SimpleNamespace(feature_shape=SHAPE))
    setattr(model, LABELS, (labels, [0.5] * len(labels)))  # as the training's PartNames callback sets them
    callback.on_fit_end(trainer, model)
    assert streams == [Stream.CALIBRATION, Stream.ROIR_VALIDATION]

    def chosen(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        return [tuple(str(r[key]) for key in ("search", "method", "target", "direction", "scale")) for r in rows]

    rows = list(csv.DictReader((tmp_path / "run" / "roir.csv").open()))
    assert chosen(rows) == chosen(task["rows"])
    assert {row["direction"].split(",")[0] for row in rows} == {"part 0 (mouth)"}
    assert "| panda |" in (tmp_path / "run" / "roir.md").read_text()
    assert list(trainer.callback_metrics) == ["roir/mouth"]
    assert trainer.callback_metrics["roir/mouth"].item() == float(rows[0]["roir_mean"])


def test_the_budget_applies_to_every_method_alike(run, dcgan, monkeypatch):
    """Every method's search tries exactly its ``budget`` preselected candidates per region (both signs), PandA's as
    the baselines': the parts named after the region (of ``panda``, and of ``panda_named``), its appearances ranked
    by their presence on the part; a baseline's leading directions."""
    labelled = dataclasses.replace(run, labels=["mouth", "mouth_2", *(f"blob {k}" for k in range(6))])
    options = {"methods": ["panda", NAMED, "sefa", "ganspace"], "regions": ["mouth"], "features": []}
    options["baselines"] = {**CONF.baselines, "ganspace": {**CONF.baselines.ganspace, "samples": 200}}
    faces = next(
        face_batches(dcgan, LandmarkDetector(CONF.upscale, min_face=CONF.min_face), 0, Stream.CALIBRATION, 8, 8)
    )
    editors = build_editors(labelled, faces, benchmark_settings(**options), 1.0)
    budget, tried = 6, {}
    for method, by_region in editors.items():
        editor = by_region["mouth"]
        original = editor.images

        def recording(prepared, directions, scales, method=method, original=original):
            tried.setdefault(method, set()).update(directions.tolist())
            return original(prepared, directions, scales)

        monkeypatch.setattr(editor, "images", recording)
        picked = editor.preselect("mouth", budget)
        assert len(set(picked)) == budget, method
        if method in ("panda", NAMED):  # the named parts' appearances, most present first
            assert {editor.parts[k // run.appearances] for k in picked} <= {0, 1}
            presence = [float(editor.presence[k % run.appearances, editor.parts[k // run.appearances]]) for k in picked]
            assert presence == sorted(presence, reverse=True)
        else:
            assert picked == list(range(budget))
    choices = choose_all(
        editors, faces, targets(["mouth"]), settings(screen=2, finalists=2, iterations=1), budget, None, BUDGET
    )
    for method, by_region in editors.items():
        assert tried[method] == set(by_region["mouth"].preselect("mouth", budget))  # all of them, and only them
        assert choices[BUDGET, method, "mouth"].index in tried[method]


def test_training_with_the_roir_callbacks_of_the_ablations_never_draws_the_test_stream(dcgan, tmp_path, monkeypatch):
    """Training, ``callbacks=roir`` and ``callbacks=roir_final`` as every ablation config sets it up draw the training,
    validation, calibration and ROIR validation streams, never the test stream."""
    import panda.method.data as data_module
    import panda.roir.faces as faces_module

    streams: list[Stream] = []
    original = data_module.batch_generator

    def recording(seed, stream, index):
        streams.append(Stream(stream))
        return original(seed, stream, index)

    monkeypatch.setattr(data_module, "batch_generator", recording)
    monkeypatch.setattr(faces_module, "batch_generator", recording)
    small = ["regions=[mouth]", "calibration=6", "test_samples=4", "choose.screen=2", "choose.finalists=2"]
    for experiment in ("ablation_layers", "ablation_ranks", "ablation_solvers"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                "train", overrides=[f"experiment={experiment}", *(f"callbacks.roir_final.{o}" for o in small)]
            )
        assert cfg.callbacks.roir_final._target_ == "panda.roir.callbacks.FinalROIR"  # it measures on ROIR_VALIDATION
    final = instantiate(cfg.callbacks.roir_final, output_dir=str(tmp_path))
    monitor = instantiate(monitor_config("callbacks.roir.regions=[mouth]", "callbacks.roir.calibration=6"))
    data = FeatureDataModule(dcgan, "main.8", batch_size=8, val_samples=8, init_samples=16)
    trainer = fit_in_process(data, panda_model(SHAPE, 2, 2), 2, tmp_path, callbacks=(monitor, final))
    assert "roir/mouth" in trainer.callback_metrics and (tmp_path / "roir.csv").is_file()
    assert {Stream.TRAIN, Stream.VAL, Stream.CALIBRATION, Stream.ROIR_VALIDATION} <= set(streams)
    assert Stream.TEST not in streams
