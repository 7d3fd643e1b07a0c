"""``train.py`` end to end: artefacts, resuming, sweeps, loggers and bad input, as a user runs it."""

import csv
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import warnings

import pytest
import torch
import yaml

from panda.base.progress import quiet_lightning
from tests.conftest import ROOT, TINY, run_script
from tests.test_sweep import wandb_run

# TINY with the progress bar on, stopping at step 3, before its first scheduled validation (step 5)
PROGRESS = [*TINY, "trainer.enable_progress_bar=true"]  # the debug budget with its progress output on
SHORT = ["trainer.max_steps=3", "trainer.val_check_interval=5", "trainer.log_every_n_steps=1"]
LOG_RECORD = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[")


def train(tmp_path, *overrides: str, env=None):
    return run_script("train.py", *TINY, f"hydra.run.dir={tmp_path}", *overrides, env=env)


@pytest.fixture(scope="module")
def trained_run_dir(tmp_path_factory):
    """The debug run of train.py at main.5 with R_S = 6 and R_C = 32."""
    path = tmp_path_factory.mktemp("trained")
    result = train(path, "gen.layer=main.5", "rank.parts=6", "rank.appearances=32")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_factors_file_loads_without_panda(trained_run_dir):
    factors = torch.load(trained_run_dir / "factors.pt", map_location="cpu", weights_only=True)
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


def test_run_directory_has_pictures_metrics_and_a_checkpoint(trained_run_dir):
    for name in ["parts.png", "overlay.png", "error_curve.png"]:
        assert (trained_run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = json.loads((trained_run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert 0 < metrics["val_rel_error"] < 1
    assert (trained_run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((trained_run_dir / "csv" / "metrics.csv").open()))
    assert any(row.get("val/rel_error") for row in rows)


def test_resume_from_checkpoint_continues_the_run(trained_run_dir, tmp_path):
    result = train(
        tmp_path,
        "gen.layer=main.5",
        "rank.parts=6",
        "rank.appearances=32",
        "trainer.max_steps=6",
        f"ckpt_path={trained_run_dir / 'checkpoints' / 'last.ckpt'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored all states from the checkpoint" in result.stdout + result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 6


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A run whose output goes to a pipe (not a terminal), with its progress bar on."""
    path = tmp_path_factory.mktemp("piped")
    result = run_script("train.py", *PROGRESS, *SHORT, f"hydra.run.dir={path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return path, result.stdout + result.stderr


def test_output_to_a_pipe_is_periodic_plain_lines(piped):
    _, output = piped
    lines = output.splitlines()
    assert max(len(line) for line in lines) < 500 and "\r" not in output
    for step in (1, 2, 3):
        assert re.search(rf"step {step}/3, .*train/rel_error 0\.\d{{4}}", output), step
    assert re.search(r"validation at step 3: val/rel_error 0\.\d{4}", output)


def test_long_phases_say_what_they_do(piped):
    _, output = piped
    assert "initialising the appearances A (HOSVD) from 32 samples (4 batches) ..." in output
    assert re.search(r"initialising the appearances A \(HOSVD\) from 32 samples: done in [\d.]+ s", output)
    assert output.index("rendering parts.png") < output.index("rendering overlay.png") < output.index("rendering error")


def test_lightning_warnings_and_tips_that_do_not_apply_are_filtered(piped):
    _, output = piped
    for noise in ("ckpt_path", "last checkpoint", "LeafSpec", "💡", "litlogger"):
        assert noise not in output, noise


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("`.fit(ckpt_path=None)` was called without a model. The last model of the previous `fit` call", UserWarning),
        ('.fit(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint', UserWarning),
        ("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no pre-op", UserWarning),
        ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning),
    ],
)
def test_quiet_lightning_filters_exactly_its_messages(message, category):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        warnings.warn(message, category, stacklevel=1)
        warnings.warn("another " + message, category, stacklevel=1)  # anchored: other messages still show
    assert [str(w.message) for w in caught] == ["another " + message]


def test_error_curve_has_the_final_step_when_training_stops_before_a_validation(piped):
    path, _ = piped
    assert (path / "error_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((path / "metrics.json").read_text())["steps"] == 3
    checkpoint = torch.load(path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3
    (history,) = [v["history"] for k, v in checkpoint["callbacks"].items() if "PandaArtifacts" in k]
    assert [step for step, _ in history] == [3]


def test_on_a_terminal_log_lines_are_not_glued_to_the_progress_bar(tmp_path):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "train.py"), *PROGRESS, *SHORT, f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(args, stdout=terminal, stderr=terminal, cwd=ROOT, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=600) == 0
    output = b"".join(chunks).decode()
    assert "it/s" in output and "Epoch 0" in output  # tqdm's bar
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in output  # logged while the bar is shown
    starts = [m.start() for m in LOG_RECORD.finditer(output)]
    assert len(starts) > 5 and all(i == 0 or output[i - 1] in "\r\n" for i in starts)


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
    result = train(tmp_path / "run", override)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()  # not even Hydra's .hydra/ and train.log


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_is_one_clear_line(tmp_path):
    result = train(tmp_path / "run", "trainer=gpu")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "trainer.accelerator=gpu: no GPU found; accelerator: auto (the default) already uses a GPU" in output
    assert "Traceback" not in output and not (tmp_path / "run").exists()


def test_a_failed_run_in_the_default_folder_leaves_no_directory(tmp_path):
    result = run_script("train.py", "rank.parts=0", cwd=tmp_path)  # outputs/<date>/<time> below tmp_path
    assert result.returncode == 2 and "rank.parts=0 is out of range" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_keeps_a_directory_that_holds_results(tmp_path):
    kept = tmp_path / "run"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    result = train(kept, "rank.parts=0")
    assert result.returncode == 2 and (kept / "notes.txt").read_text() == "mine"


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
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {k: v for k, v in wandb_run(tmp_path / "run")["summary"].items() if k in metrics} == metrics


def test_tensorboard_logger_writes_events_and_the_pictures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tmp_path, "logger=tensorboard")
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "val/rel_error" in events.Tags()["scalars"]
    assert {"images/parts", "images/overlay", "images/error_curve"} <= set(events.Tags()["images"])


def test_each_part_after_training_turns_off_as_conf_callbacks_default_says(tmp_path):
    comment = (ROOT / "conf" / "callbacks" / "default.yaml").read_text()
    assert "~callbacks.<name> or callbacks.<name>=null" in comment
    result = train(tmp_path, "~callbacks.artifacts", "callbacks.part_names=null", "naming.after_training=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "labels" not in metrics and "labels" not in torch.load(tmp_path / "factors.pt", weights_only=True)


def test_callbacks_none_keeps_only_what_every_run_needs(tmp_path):
    """No checkpoints or pictures, the same results. experiment=debug sets callbacks.artifacts.num_images, which
    callbacks=none leaves without a callback to build: one line says so."""
    result = train(tmp_path / "bad", "callbacks=none")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "callbacks.artifacts has no _target_" in output, output[-3000:]
    result = train(tmp_path / "run", "callbacks=none", "~callbacks.artifacts")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == [
        "csv",
        "factors.pt",
        "metrics.json",
        "train.log",
    ]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    keys = "val_rel_error steps samples fit_seconds command_fit_seconds first_step_seconds generator layer solver lr"
    keys += " parts appearances"
    assert sorted(metrics) == sorted([*keys.split(), "overrides"])
    assert metrics["steps"] == 4 and 0 < metrics["val_rel_error"] < 1


def test_a_value_left_unset_in_a_callback_config_is_one_line(tmp_path):
    result = train(tmp_path, "callbacks.artifacts.num_images=???")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "callbacks.artifacts.num_images is not set" in output, output[-3000:]
