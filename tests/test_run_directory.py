"""A run directory is the run's alone: nothing read from it, nor a link inside it, reaches a file outside it; a
refused command never removes a directory a live run holds; checkpoints are written atomically, and a resume skips
one that cannot be read."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from panda.base.errors import ConfigError
from panda.training.checkpoints import SafeCheckpointIO, read_checkpoint
from tests.conftest import ROOT, TINY, run_script


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``experiment=debug`` run (4 steps), to be copied by each test."""
    run = tmp_path_factory.mktemp("trained") / "run"
    done = run_script("train.py", *TINY, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def copy_of(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "faces"
    shutil.copytree(trained, run)
    (run / ".lock").unlink(missing_ok=True)
    return run


def model_checkpoint_state(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))


def test_a_checkpoint_naming_files_outside_its_run_deletes_none_of_them(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    victims = [tmp_path / "VICTIM.txt", tmp_path / "ABSOLUTE.txt", tmp_path / "BEST.txt"]
    for victim in victims:
        victim.write_text("keep")
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    state = model_checkpoint_state(checkpoint)
    state.pop("dirpath")  # Lightning then restores the stored paths as its own
    state["last_model_path"] = str(run / "checkpoints" / ".." / ".." / ".." / "VICTIM.txt")
    state["best_model_path"] = state["kth_best_model_path"] = str(victims[2])
    state["best_k_models"] = {str(victims[1]): torch.tensor(0.5), str(victims[2]): torch.tensor(0.4)}
    torch.save(checkpoint, path)
    done = run_script("train.py", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [v.read_text() for v in victims] == ["keep"] * 3
    assert torch.load(path, weights_only=True)["global_step"] == 8


def test_stored_checkpoint_paths_are_kept_only_inside_the_checkpoints_directory(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    state = model_checkpoint_state(checkpoint)
    inside = str(run / "checkpoints" / Path(state["best_model_path"]).name)
    state["dirpath"], state["best_model_path"] = str(run / "checkpoints"), inside
    state["last_model_path"] = str(run / "checkpoints" / ".." / "factors.pt")
    state["best_k_models"] = {inside: torch.tensor(0.5), "/etc/passwd": torch.tensor(0.1)}
    torch.save(checkpoint, path)
    state = model_checkpoint_state(read_checkpoint(path))
    assert state["last_model_path"] == ""
    assert list(state["best_k_models"]) == [inside] and state["best_model_path"] == inside


def hold_lock(directory: Path) -> subprocess.Popen:
    """A live process holding ``directory``'s lock until it is killed."""
    code = "import sys, time\nfrom panda.base.files import lock_directory\n"
    code += "with lock_directory(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_refused_command_never_removes_a_directory_that_a_live_run_holds(tmp_path):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        done = run_script("train.py", *TINY, "trainer.max_steps=0", f"hydra.run.dir={run}", cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-3000:]
        assert "trainer.max_steps=0 must be an integer >= 1" in done.stdout + done.stderr
        assert (run / ".lock").read_text().strip() == str(holder.pid)
        busy = run_script("train.py", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
        assert busy.returncode == 2 and f"in use by process {holder.pid}" in busy.stdout + busy.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_refused_command_still_removes_its_own_stub(tmp_path):
    run = tmp_path / "run"
    done = run_script("train.py", *TINY, "trainer.max_steps=0", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 2
    assert not run.exists()


@pytest.mark.parametrize("name", ["csv", "checkpoints", ".lock"])
def test_a_link_out_of_the_run_directory_is_refused_and_nothing_outside_is_written(tmp_path, name):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "hparams.yaml").write_text("mine")
    run.mkdir()
    target = elsewhere if name != ".lock" else elsewhere / "hparams.yaml"
    (run / name).symlink_to(os.path.relpath(target, run))
    done = run_script("train.py", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert f"{run / name} is a link to {target}, outside the run directory" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["hparams.yaml"]
    assert (elsewhere / "hparams.yaml").read_text() == "mine"


def test_a_link_that_stays_inside_the_run_directory_is_fine(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "csv").symlink_to("logs")
    done = run_script("train.py", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "logs" / "metrics.csv").is_file()


def test_a_checkpoint_write_that_fails_leaves_the_previous_file_whole(trained, tmp_path, monkeypatch):
    path = copy_of(trained, tmp_path) / "checkpoints" / "last.ckpt"
    before = path.read_bytes()
    checkpoint = torch.load(path, weights_only=True)

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        SafeCheckpointIO().save_checkpoint(checkpoint, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(p.name for p in (trained / "checkpoints").iterdir())


def test_a_resume_skips_an_unreadable_checkpoint_for_the_newest_readable_one(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    (run / "checkpoints" / "interrupted.ckpt").write_bytes(b"")  # what a full disk left before
    done = run_script("train.py", *TINY, "trainer.max_steps=6", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert f"{run / 'checkpoints' / 'interrupted.ckpt'} is not readable" in output and "skipped" in output
    assert "resuming from" in output and "(step 4)" in output
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@contextlib.contextmanager
def run_on_small_disk(trained: Path, tmp_path: Path, size: str) -> Iterator[Path]:
    """A copy of ``trained`` (no pictures) on a tmpfs of ``size`` of its own, unmounted afterwards; skips the test
    where tmpfs cannot be mounted (not root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not let tmpfs be mounted")
    try:
        run = disk / "run"
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png", "wandb", ".lock"))
        yield run
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_full_disk_leaves_no_empty_checkpoint_and_the_run_resumes_once_there_is_room(trained, tmp_path):
    with run_on_small_disk(trained, tmp_path, "2m") as run:
        filler = run.parent / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        full = run_script("train.py", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", cwd=tmp_path)
        output = full.stdout + full.stderr
        assert full.returncode == 2, output[-3000:]
        assert "No space left on device; make room, then run the same command" in output and "Traceback" not in output
        checkpoints = list((run / "checkpoints").glob("*.ckpt"))
        assert checkpoints and all(p.stat().st_size > 0 for p in checkpoints)
        assert all(read_checkpoint(p) for p in checkpoints)
        filler.unlink()
        done = run_script("train.py", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_read_checkpoint_still_refuses_what_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ConfigError, match="is not a Lightning training checkpoint"):
        read_checkpoint(path)


def test_fewer_steps_than_a_directory_holds_are_refused_and_its_factors_kept(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    before = (run / "factors.pt").read_bytes()
    done = run_script("train.py", *TINY, "trainer.max_steps=2", f"hydra.run.dir={run}", cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "holds factors trained for 4 steps, more than trainer.max_steps=2" in output
    assert (run / "factors.pt").read_bytes() == before


def test_training_time_sums_over_the_commands_that_trained_the_factors(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    first = json.loads((run / "metrics.json").read_text())
    done = run_script("train.py", *TINY, "trainer.max_steps=6", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads((run / "metrics.json").read_text())
    assert second["steps"] == 6 and 0 < second["command_fit_seconds"] < second["fit_seconds"]
    assert second["fit_seconds"] >= second["command_fit_seconds"] + 0.5 * first["fit_seconds"]
    assert second["first_step_seconds"] == first["first_step_seconds"]  # the first command's start-up
    again = run_script("train.py", *TINY, "trainer.max_steps=6", f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0
    third = json.loads((run / "metrics.json").read_text())
    assert third["fit_seconds"] >= second["fit_seconds"] - second["command_fit_seconds"]  # never only this command


def _string_step(c: dict) -> None:
    c["global_step"] = "4"


def _junk_history(c: dict) -> None:
    c["callbacks"]["PandaArtifacts"] = {"history": [["a", None]]}


def _extra_weight(c: dict) -> None:
    c["state_dict"]["Q"] = torch.zeros(2)


def _junk_optimizer(c: dict) -> None:
    c["optimizer_states"] = [{"junk": 1}]


def _junk_loop(c: dict) -> None:
    c["loops"]["fit_loop"] = 5


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_string_step, "no checkpoint in"),
        (_junk_history, "the checkpoint's PandaArtifacts history is not (step, error) pairs"),
        (_extra_weight, "was saved for other settings: Q (now none)"),
        (_junk_optimizer, "holds an optimizer state that does not load"),
        (_junk_loop, "holds a loop state 'fit_loop' that is not Lightning's"),
    ],
)
def test_a_damaged_checkpoint_state_is_one_line_and_nothing_is_rewritten(trained, tmp_path, tamper, message):
    run = copy_of(trained, tmp_path)
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    tamper(checkpoint)
    torch.save(checkpoint, path)
    (run / "checkpoints" / "interrupted.ckpt").unlink(missing_ok=True)
    for other in (run / "checkpoints").glob("step*.ckpt"):
        other.unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    done = run_script("train.py", *TINY, "trainer.max_steps=6", f"hydra.run.dir={run}", cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert message in output and "Traceback" not in output
    assert "global_step '4'" in output or tamper is not _string_step
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k not in ("train.log", ".lock")} == {
        k: v for k, v in before.items() if k != "train.log"
    }


@pytest.mark.parametrize("task", ["train", "name"])
def test_a_read_only_run_directory_is_one_line(trained, tmp_path, task):
    with run_on_small_disk(trained, tmp_path, "4m") as run:
        before = (run / "factors.pt").read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(run.parent)], check=True)
        if task == "train":
            done = run_script("train.py", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", cwd=tmp_path)
        else:  # names the parts, then stores their labels in the run's factors.pt
            done = run_script("evaluate.py", "task=name", f"run={run}", f"hydra.run.dir={tmp_path / 'out'}")
        output = done.stdout + done.stderr
        assert done.returncode == 2, output[-3000:]
        assert ("is read-only" in output or "Read-only file system" in output) and "Traceback" not in output
        assert (run / "factors.pt").read_bytes() == before
