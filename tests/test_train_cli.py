"""``train.py`` end to end: artefacts, resuming, sweeps, loggers and bad input, as a user runs it."""

import csv
import json

import pytest
import torch
import yaml

from tests.conftest import TINY, run_script


def train(tmp_path, *overrides: str, env=None):
    return run_script("train.py", *TINY, f"hydra.run.dir={tmp_path}", *overrides, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    result = train(path, "gen.layer=main.5", "rank.parts=6", "rank.appearances=32")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_factors_file_loads_without_panda(run_dir):
    factors = torch.load(run_dir / "factors.pt", map_location="cpu", weights_only=True)
    assert factors["A"].shape == (256, 32)
    assert factors["P"].shape == (64, 6)
    assert (factors["P"] >= 0).all()
    assert factors["generator"] == "dcgan_faces"
    assert factors["layer"] == "main.5"
    assert factors["feature_shape"] == [256, 8, 8]
    assert factors["ranks"] == {"parts": 6, "appearances": 32}
    config = yaml.safe_load(factors["config"])
    assert config["gen"]["layer"] == "main.5"
    assert config["rank"]["parts"] == 6


def test_run_directory_has_pictures_metrics_and_a_checkpoint(run_dir):
    for name in ["parts.png", "overlay.png", "error_curve.png"]:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert 0 < metrics["val_rel_error"] < 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert any(row.get("val/rel_error") for row in rows)


def test_resume_from_checkpoint_continues_the_run(run_dir, tmp_path):
    result = train(
        tmp_path,
        "gen.layer=main.5",
        "rank.parts=6",
        "rank.appearances=32",
        "trainer.max_steps=6",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored all states from the checkpoint" in result.stdout + result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 6


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gen.layer=main.99", "unknown layer 'main.99' for generator 'dcgan_faces'. Valid layers: main.0, main.1"),
        ("rank.parts=0", "rank.parts=0 is out of range: it must be an integer in [1, 256]"),
        ("rank.parts=257", "rank.parts=257 is out of range"),
        ("rank.parts=abc", "rank.parts='abc' is not an integer"),
        ("+rank.part=16", "unknown config key rank.part (did you mean rank.parts?)"),
        ("rank.appearances=129", "rank.appearances=129 is out of range: it must be an integer in [1, 128]"),
        ("gen.weights=/nonexistent/weights.tar", "DCGAN weights not found at /nonexistent/weights.tar"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_written(tmp_path, override, message):
    result = train(tmp_path, override)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "factors.pt").exists()


def test_unknown_generator_lists_the_available_ones(tmp_path):
    result = train(tmp_path, "gen=biggan_nonexistent")
    assert result.returncode == 2
    assert "Could not find 'gen/biggan_nonexistent'" in result.stderr
    assert "available gen configs: biggan, dcgan_faces, " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())  # Hydra did not start


def test_multirun_sweep_writes_a_summary_table(tmp_path):
    result = run_script(
        "train.py", "-m", *TINY, "rank.parts=2,3", "gen.layer=main.5,main.8", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == 4
    assert {(r["layer"], r["parts"]) for r in rows} == {
        ("main.5", "2"),
        ("main.5", "3"),
        ("main.8", "2"),
        ("main.8", "3"),
    }
    assert all(0 < float(r["val_rel_error"]) < 1 for r in rows)
    assert all((tmp_path / r["job"] / "factors.pt").is_file() for r in rows)
    assert "| job | overrides |" in (tmp_path / "summary.md").read_text()


def test_wandb_runs_offline_without_credentials(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(tmp_path / "none")}
    result = train(tmp_path / "run", "logger=wandb", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logging offline" in result.stdout + result.stderr
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))
    assert list((runs[0] / "files" / "media" / "images" / "images").glob("parts_*.png"))


def test_tensorboard_logger_writes_events(tmp_path):
    result = train(tmp_path, "logger=tensorboard")
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
