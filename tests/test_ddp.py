"""Data-parallel training (``trainer=ddp``) on 2 CPU processes (gloo): the same samples, factors and validation error
as one process with the global batch, the same factors on every process, one-line errors, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from panda.base.errors import ConfigError
from panda.base.factors_file import load_factors
from panda.method.data import FeatureDataModule, Stream
from panda.tasks.registry import evaluate
from panda.training.fit import check_processes, train
from tests.conftest import LAYER, ROOT, TWO_STEPS, run_script

# TWO_STEPS on 2 processes of batch 2 (one process: batch 4); 10 validation samples leave rank 1 without a part
# of the last validation batch
ONE = [*TWO_STEPS, "data.val_samples=10"]
TWO = [a if a != "trainer=cpu" else "trainer=ddp" for a in ONE] + [
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "data.batch_size=2",
]
STATS = [
    "model/solver=stats",
    "rank.appearances=16",
    "model.solver.parts_steps=2",
    "model.solver.appearance_steps=2",
    "trainer.max_steps=4",
]


def shard(dcgan, rank: int, world: int, batch_size: int) -> FeatureDataModule:
    """The data module of process ``rank`` of ``world`` (a stand-in for the trainer that says which)."""
    data = FeatureDataModule(dcgan, LAYER, batch_size=batch_size, val_samples=10, init_samples=6)
    data.trainer = SimpleNamespace(world_size=world, global_rank=rank, global_step=0, accumulate_grad_batches=1)
    return data


def test_two_processes_of_batch_b_see_the_samples_of_one_process_of_batch_2b(dcgan):
    one, ranks = shard(dcgan, 0, 1, 4), [shard(dcgan, r, 2, 2) for r in range(2)]
    for index in (0, 5):
        joined = torch.cat([data.batch(Stream.TRAIN, index) for data in ranks])
        assert torch.equal(joined, one.batch(Stream.TRAIN, index))
    for loader, counts in (("val_dataloader", [3, 2]), ("init_dataloader", [2, 1])):  # 4+4+2 and 4+2 samples
        parts = [list(getattr(data, loader)()) for data in ranks]
        assert [len(p) for p in parts] == counts  # rank 1 has no part of the last batch
        joined = [torch.cat([p[i] for p in parts if i < len(p)]) for i in range(counts[0])]
        assert torch.equal(torch.cat(joined), torch.cat(list(getattr(one, loader)())))


def compose_one(output_dir: Path, *overrides: str) -> DictConfig:
    """The config of :data:`ONE` and ``overrides`` (which win), writing into ``output_dir``."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*ONE, *overrides, f"paths.output_dir={output_dir}"])


def run_two(output_dir: Path, *overrides: str) -> dict:
    result = run_script("train.py", *TWO, *overrides, f"hydra.run.dir={output_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output_dir / "metrics.json").read_text())


def test_stats_on_two_processes_solves_what_one_process_solves_on_the_same_samples(tmp_path):
    # batches of 16 samples: on fewer, L-BFGS-B's 50 iterations amplify the statistics' float rounding
    two = run_two(tmp_path / "two", *STATS, "data.batch_size=8")
    one = train(compose_one(tmp_path / "one", *STATS, "data.batch_size=16"))
    assert two["samples"] == one["samples"] == 64
    assert two["val_rel_error"] == pytest.approx(one["val_rel_error"], rel=1e-4)
    mine, reference = (load_factors(tmp_path / name / "factors.pt") for name in ("two", "one"))
    for key in ("A", "P"):  # float32 statistics summed in another order: within 2e-3, columns of cosine 0.9999
        assert (mine[key] - reference[key]).abs().max() < 2e-3, key
        assert torch.nn.functional.cosine_similarity(mine[key], reference[key], dim=0).min() > 0.9999, key


@pytest.mark.slow
def test_the_default_run_on_two_processes_numbers_and_signs_every_appearance_as_one_process(tmp_path):
    # `python train.py` against 2 processes of half the batch (about 3 minutes on 2 cores): the exported appearances
    # are canonical, so the same numbers and signs come out (experiments/results/scaling.md has the measurement)
    two = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.batch_size=32"]
    for name, overrides in (("one", []), ("two", two)):
        result = run_script("train.py", *overrides, f"hydra.run.dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-3000:]
    mine, reference = (load_factors(tmp_path / name / "factors.pt") for name in ("two", "one"))
    assert torch.nn.functional.cosine_similarity(mine["A"], reference["A"], dim=0).min() > 0.999
    assert (mine["P"] - reference["P"]).abs().max() < 1e-2 * reference["P"].abs().max()


def test_pgd_on_two_processes_keeps_one_set_of_factors_and_takes_the_global_batch_step(tmp_path):
    out = tmp_path / "ranks.pt"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_ranks.py"), str(out), *TWO],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = torch.load(out, weights_only=True)
    assert ranks["checked"] == 2  # A and P compared on both processes after each step
    train(compose_one(tmp_path / "one"))
    reference = load_factors(tmp_path / "one" / "factors.pt")
    for key in ("A", "P"):
        assert torch.allclose(ranks[key], torch.as_tensor(reference[key]), rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"accelerator": "cpu", "devices": 64}, "trainer.devices=64 is more than this machine has"),
        ({"accelerator": "cpu", "devices": 1, "strategy": "fsdp"}, "trainer.strategy=fsdp cannot train PandA"),
    ],
)
def test_too_many_devices_or_another_strategy_is_one_line(trainer, message):
    with pytest.raises(ConfigError, match=message):
        check_processes(OmegaConf.create(trainer))


def test_too_many_devices_stops_train_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.devices=64 is more than this machine has \(\d+ CPU cores"):
        train(compose_one(tmp_path, "trainer.devices=64"))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_factors(tmp_path):
    overrides = [*STATS, "trainer.max_steps=8", "callbacks=default", "callbacks.artifacts.num_images=2"]
    overrides += ["model.solver.parts_steps=3"]  # passes that straddle the checkpoints (every 2 steps)
    run_two(tmp_path / "whole", *overrides)

    killed = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "train.py"), *TWO, *overrides, f"hydra.run.dir={killed}"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    with subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as job:
        for _ in range(6000):  # until the first checkpoint
            if (killed / "checkpoints" / "last.ckpt").is_file() or job.poll() is not None:
                break
            time.sleep(0.05)
        children = psutil.Process(job.pid).children()
        os.kill(job.pid, signal.SIGSTOP)  # hold rank 0 while rank 1 is killed
        step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        for child in children:
            child.kill()
        os.kill(job.pid, signal.SIGCONT)
        job.communicate(timeout=300)
    assert job.returncode != 0 and step < 8 and not (killed / "factors.pt").exists()

    resumed = run_two(killed, *overrides)
    assert resumed["steps"] == 8
    whole, again = (load_factors(tmp_path / name / "factors.pt") for name in ("whole", "killed"))
    for key in ("A", "P"):
        assert torch.equal(torch.as_tensor(again[key]), torch.as_tensor(whole[key])), key


ROIR = [
    "task=roir",
    "eval.test_samples=24",
    "eval.batch_size=6",
    "eval.calibration=10",
    "eval.methods=[panda,sefa]",
    "eval.regions=[mouth]",
    "eval.grid=1",
    "eval.choose.screen=3",
    "eval.choose.finalists=2",
    "eval.choose.candidates=10",
    "eval.features=[]",  # the region table alone: what is split across processes
    "eval.full_search=false",
]


def test_roir_on_two_processes_writes_the_table_of_one_process(run_dir, tmp_path):
    tables = {}
    for devices in (1, 2):
        out = tmp_path / str(devices)
        done = run_script("evaluate.py", *ROIR, f"eval.devices={devices}", f"run={run_dir}", f"hydra.run.dir={out}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("MEMBER: 2/2" in done.stdout + done.stderr) == (devices == 2)  # rank 1 joined
        rows = [{k: v for k, v in r.items() if k != "find_seconds"} for r in csv.DictReader((out / "roir.csv").open())]
        tables[devices] = rows, json.loads((out / "evaluate.json").read_text())["skipped"]
    assert tables[2] == tables[1]
    assert sum(int(r["images"]) + int(r["unchanged"]) for r in tables[1][0][:1]) + tables[1][1] == 24


def compose_evaluate(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[*overrides, f"output_dir={output_dir}"])


def test_more_evaluation_processes_than_cores_is_one_line(run_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"eval.devices=64 is more than this machine has \(\d+ CPU cores"):
        evaluate(compose_evaluate(tmp_path, *ROIR, "eval.devices=64", f"run={run_dir}"))
