"""Guarantees of the commands not checked elsewhere: an output directory that cannot be written or made (read-only, a
full disk) is one line, results are replaced whole or not at all, Ctrl-C saves and says how to resume, the default
generator needs no network, a sweep's summary times every command, sample i is the same whatever else is asked for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from panda.base.files import atomic_write, save_json
from panda.cli.sweep import record, summarize
from panda.training.checkpoints import InterruptCheckpoint
from panda.training.fit import train
from panda.uses.factors import open_run
from tests.conftest import TINY, compose_two_steps, interrupted_training, run_script
from tests.test_run_directory import run_on_small_disk


def test_a_result_write_that_fails_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "metrics.json", b'{"steps": 4}')

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_json({"steps": 8}, path)
    assert path.read_bytes() == b'{"steps": 4}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize(
    ("script", "where", "message"),
    [
        ("evaluate.py", "read-only/out", "{disk}/out is read-only: make it writable, or pass another directory"),
        ("evaluate.py", "read-only/new/out", "{disk}/new/out is read-only (cannot be made in {disk}): make it"),
        ("train.py", "read-only/new", "{disk}/new is read-only (cannot be made in {disk}): make it writable"),
        ("evaluate.py", "full/new", "cannot make {disk}/new: No space left on device; make room"),
        ("train.py", "full/new", "cannot make {disk}/new: No space left on device; make room"),
    ],
)
def test_an_output_directory_that_cannot_be_written_or_made_is_one_line(run_dir, tmp_path, script, where, message):
    with run_on_small_disk(run_dir, tmp_path, "1m") as run:
        disk = run.parent
        (disk / "out").mkdir()
        if where.startswith("read-only"):
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        else:
            subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True)
        args = [*TINY] if script == "train.py" else ["task=edit", f"run={run}", "samples=[0]"]
        done = run_script(script, *args, f"hydra.run.dir={disk}/{where.split('/', 1)[1]}", cwd=tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == 2, output[-3000:]
        assert message.format(disk=disk) in output and "Traceback" not in output
        assert len(output.strip().splitlines()) == 1
        assert {p.name for p in disk.iterdir()} - {"filler"} == {"run", "out"}  # Hydra made nothing


def test_ctrl_c_saves_exits_130_and_says_how_to_resume(tmp_path):
    args = [*TINY, "trainer.max_steps=100000", "trainer.val_check_interval=1", f"hydra.run.dir={tmp_path}"]
    returncode, output = interrupted_training(tmp_path, args, signal.SIGINT)
    assert returncode == 130, output[-3000:]
    assert "Traceback" not in output
    steps = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", weights_only=True)["global_step"]
    assert f"training stopped by Ctrl-C at step {steps}; its checkpoints are in {tmp_path / 'checkpoints'}" in output
    assert f"resume with: python train.py {' '.join(args)}" in output


class _Trainer(SimpleNamespace):
    def save_checkpoint(self, path: Path) -> None:
        self.saved.append(path)


def test_an_interruption_saves_a_checkpoint_only_after_a_step_of_finite_factors(tmp_path):
    callback, model = InterruptCheckpoint(str(tmp_path)), torch.nn.Linear(2, 2)
    trainer = _Trainer(global_step=3, saved=[])
    callback.on_exception(trainer, model, KeyboardInterrupt())  # before training started (a failed restore)
    callback.on_train_start(trainer, model)
    callback.on_exception(trainer, model, KeyboardInterrupt())  # no step since it started or resumed
    assert trainer.saved == []
    trainer.global_step = 4
    callback.on_exception(trainer, model, KeyboardInterrupt())
    assert trainer.saved == [tmp_path / "interrupted.ckpt"]
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    callback.on_exception(trainer, model, KeyboardInterrupt())
    assert len(trainer.saved) == 1


def test_the_default_generator_trains_and_opens_without_the_network(run_dir, tmp_path, monkeypatch):
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    metrics = train(compose_two_steps(tmp_path / "run"))
    assert metrics["steps"] == 2 and (tmp_path / "run" / "factors.pt").is_file()
    assert open_run(tmp_path / "run").name == "dcgan_faces" and open_run(run_dir).name == "dcgan_faces"
    assert attempts == []


def test_the_sweep_summary_gives_the_training_time_of_every_command(tmp_path):
    job = tmp_path / "0"
    record(job, "completed", ["rank.parts=4"])
    metrics = {"overrides": ["rank.parts=4"], "fit_seconds": 4.2, "command_fit_seconds": 0.36, "steps": 8}
    save_json(metrics, job / "metrics.json")
    (row,) = summarize(tmp_path)
    assert row["fit_seconds"] == 4.2


def test_sample_i_is_fixed_by_the_seed_and_i_alone(run):
    alone, among = run.latents(0, [5]), run.latents(0, [2, 5, 9])
    assert torch.equal(alone[0], among[1])
    assert not torch.equal(alone, run.latents(1, [5]))
