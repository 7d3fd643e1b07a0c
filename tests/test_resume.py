"""Resuming: a run directory belongs to one configuration, and checkpoints load safely or not at all."""

from __future__ import annotations

import csv
import json
import logging
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from panda.base.errors import BusyError, ConfigError
from panda.base.files import atomic_write, lock_directory
from panda.training.checkpoints import CONFIG_KEY, SafeCheckpointIO, differences
from panda.training.fit import train
from tests.conftest import ROOT, TINY, configured, interrupted_training, run_script


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run: factors.pt, metrics.json and its checkpoints."""
    path = tmp_path_factory.mktemp("finished")
    train(configured(path))
    return path


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["rank.parts=4"], ["rank.parts=8 (now 4)"]),
        (["seed=7", "model.solver.lr=0.01"], ["seed=0 (now 7)", "model.solver.lr=0.003 (now 0.01)"]),
        (["gen.layer=main.5"], ["gen.layer=main.8 (now main.5)"]),
    ],
)
def test_a_finished_directory_refuses_other_settings_and_is_left_as_it_was(copy, overrides, named):
    before = snapshot(copy)
    with pytest.raises(ConfigError, match="belongs to a run with other settings") as error:
        train(configured(copy, *overrides))
    assert all(name in str(error.value) for name in named), str(error.value)
    assert "\n" not in str(error.value)
    assert snapshot(copy) == before  # no interrupted.ckpt, factors.pt untouched


def test_the_same_settings_resume_the_directory_explicitly(copy, caplog):
    caplog.set_level(logging.INFO)
    # the validation cache changes no result either
    metrics = train(configured(copy, "trainer.max_steps=3", "trainer.val_check_interval=3", "data.val_cache_mb=0"))
    assert metrics["steps"] == 3
    assert any(f"resuming from {copy / 'checkpoints' / 'last.ckpt'} (step 2)" in r.getMessage() for r in caplog.records)
    stored = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
    assert stored["global_step"] == 3 and stored[CONFIG_KEY]["trainer"]["max_steps"] == 3


def test_the_newest_of_last_and_interrupted_is_resumed(copy, caplog):
    caplog.set_level(logging.INFO)
    (copy / "factors.pt").unlink()
    checkpoints = copy / "checkpoints"
    shutil.copy(checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt")
    older = torch.load(checkpoints / "last.ckpt", weights_only=True)
    older["global_step"] = 1
    torch.save(older, checkpoints / "last.ckpt")
    train(configured(copy, "trainer.max_steps=3"))
    assert any("interrupted.ckpt (step 2)" in r.getMessage() for r in caplog.records)
    assert not (checkpoints / "interrupted.ckpt").exists()  # removed once the run ended normally


def test_only_keys_that_do_not_change_results_may_differ():
    stored = {"seed": 0, "trainer": {"max_steps": 4, "accelerator": "cpu"}, "paths": {"output_dir": "a"}}
    current = {"seed": 0, "trainer": {"max_steps": 9, "accelerator": "gpu"}, "paths": {"output_dir": "b"}, "x": 1}
    assert differences(stored, current) == ["trainer.accelerator=cpu (now gpu)", "x=<unset> (now 1)"]


# ----- ckpt_path ---------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this touches a file: a stand-in for a checkpoint that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker, evil = tmp_path / "code-ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "optimizer_states": [], "loops": _RunsCode(marker)}, evil)
    torch.load(evil, weights_only=False)  # the test's own check: an unsafe load does run the code
    assert marker.exists()
    marker.unlink()
    result = run_script("train.py", *TINY, f"hydra.run.dir={tmp_path / 'run'}", f"ckpt_path={evil}")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"checkpoint {evil} is refused: it needs more than tensors and plain data" in output
    assert "Traceback" not in output and not marker.exists()


def test_lightning_loads_checkpoints_through_the_safe_reader(tmp_path):
    marker, evil = tmp_path / "code-ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "optimizer_states": [], "loops": _RunsCode(marker)}, evil)
    with pytest.raises(ConfigError, match="could run code"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)  # whatever Lightning asks for
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"not a checkpoint at all" * 10, "is not readable (damaged or truncated"),
        (lambda data: data[: len(data) // 2], "is not readable (damaged or truncated"),
        (lambda data: b"", "is not readable (damaged or truncated"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_and_writes_nothing(finished, tmp_path, damage, message):
    ckpt = tmp_path / "damaged.ckpt"
    ckpt.write_bytes(damage((finished / "checkpoints" / "last.ckpt").read_bytes()))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        train(configured(tmp_path / "run", f"ckpt_path={ckpt}"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_checkpoint_of_other_settings_names_what_differs(finished, tmp_path):
    ckpt = finished / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as error:
        train(configured(tmp_path / "run", f"ckpt_path={ckpt}", "gen.layer=main.5", "rank.parts=6"))
    message = str(error.value)
    assert "was saved by a run with other settings" in message
    assert "gen.layer=main.8 (now main.5)" in message and "rank.parts=8 (now 6)" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_checkpoint_without_a_stored_config_is_checked_by_its_shapes(finished, tmp_path):
    ckpt = tmp_path / "old.ckpt"
    checkpoint = torch.load(finished / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint[CONFIG_KEY]  # as written before panda stored its config
    torch.save(checkpoint, ckpt)
    with pytest.raises(ConfigError) as error:
        train(configured(tmp_path / "run", f"ckpt_path={ckpt}", "rank.parts=6"))
    assert "was saved for other settings: parts=8 (now 6), P of shape [256, 8] (now [256, 6])" in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----- one run per directory at a time -----------------------------------------------------------------
def test_a_second_run_in_a_busy_directory_names_the_process_and_exits_2(tmp_path):
    with lock_directory(tmp_path):
        result = run_script("train.py", *TINY, f"hydra.run.dir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"{tmp_path} is in use by process {os.getpid()}" in output and "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", ".lock", "train.log"]  # nothing of its own


def test_the_lock_dies_with_its_process(tmp_path):
    holder = "import os, signal; from panda.base.files import lock_directory\n"
    holder += f"with lock_directory({str(tmp_path)!r}):\n"
    holder += "    os.kill(os.getpid(), signal.SIGKILL)"
    killed = subprocess.run([sys.executable, "-c", holder], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -signal.SIGKILL and (tmp_path / ".lock").read_text().strip().isdigit()
    with lock_directory(tmp_path):  # free again: the killed holder's lock went with it
        second = lock_directory(tmp_path)
        with pytest.raises(BusyError, match=f"in use by process {os.getpid()}"):
            second.__enter__()


# ----- SIGTERM -------------------------------------------------------------------------------------------
def test_sigterm_saves_exits_143_and_says_how_to_resume(tmp_path):
    args = [*TINY, "trainer.max_steps=100000", "trainer.val_check_interval=1", "ckpt_path=null"]
    returncode, output = interrupted_training(tmp_path, [*args, f"hydra.run.dir={tmp_path}"], signal.SIGTERM)
    assert returncode == 143, output[-3000:]
    assert "Traceback" not in output
    interrupted = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", weights_only=True)
    steps = interrupted["global_step"]
    assert f"training stopped by SIGTERM at step {steps}" in output
    resume = shlex.join(["python", "train.py", *args[:-1], f"hydra.run.dir={tmp_path}"])  # without ckpt_path
    assert f"its checkpoints are in {tmp_path / 'checkpoints'}; resume with: {resume}" in output

    again = [a if a != "trainer.max_steps=100000" else f"trainer.max_steps={steps + 2}" for a in shlex.split(resume)]
    result = run_script(*again[1:])
    assert result.returncode == 0, result.stderr[-3000:]
    pattern = rf"resuming from {tmp_path / 'checkpoints'}/(last|interrupted)\.ckpt \(step (\d+)\)"
    resumed = re.search(pattern, result.stdout)
    assert resumed and int(resumed.group(2)) == steps  # last.ckpt when it is as new as interrupted.ckpt
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == steps + 2


def test_resuming_keeps_the_logged_rows_before_the_checkpoint(tmp_path):
    train(configured(tmp_path, "logger=csv", "trainer.log_every_n_steps=1"))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert {r["step"] for r in rows} >= {"0", "1"}
    train(configured(tmp_path, "logger=csv", "trainer.log_every_n_steps=1", "trainer.max_steps=4"))
    resumed = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    kept = [r for r in rows if int(r["step"]) < 2]  # those logged before the step-2 checkpoint
    assert kept and resumed[: len(kept)] == kept
    # steps 2 and 3 (0-based), the last one's validation included: the final factors are not validated again
    assert sorted({int(r["step"]) for r in resumed[len(kept) :]}) == [2, 3]


def test_result_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        assert (atomic_write(tmp_path / "a.json", b"{}").stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (atomic_write(tmp_path / "b.json", b"{}").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(previous)


def test_resuming_a_finished_run_validates_its_factors_once(copy, monkeypatch):
    """Fit has nothing left to do, so it does not validate: train validates the factors itself, once."""
    before = json.loads((copy / "metrics.json").read_text())
    validate, validations = pl.Trainer.validate, []
    monkeypatch.setattr(pl.Trainer, "validate", lambda *a, **k: validations.append(1) or validate(*a, **k))
    metrics = train(configured(copy))
    assert validations == [1] and metrics["steps"] == before["steps"]
    assert metrics["val_rel_error"] == pytest.approx(before["val_rel_error"], rel=1e-6)


@pytest.mark.parametrize("name", ["plain", "é run", "a,b", 'say "hi"', "back\\slash"])
def test_the_printed_resume_command_names_the_directory_as_hydra_reads_it(tmp_path, name):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from panda.training.fit import resume_command

    directory = tmp_path / name
    words = shlex.split(resume_command(directory))
    assert words[:2] == ["python", "train.py"]
    override = OverridesParser.create().parse_override(words[-1])
    assert override.key_or_group == "hydra.run.dir" and override.value() == str(directory)
