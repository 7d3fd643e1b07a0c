"""Sweeps that finish: a failing job is recorded, the others run, the summary has a status column, a
re-run finishes what did not complete; the submitit launchers (``hydra/launcher=local|slurm``); the ablation
sweeps (ROIR per job, the plot) and what a sweep logs to W&B."""

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict
from submitit.core.utils import FailedJobError, UncompletedJobError
from wandb.proto import wandb_internal_pb2

from hydra_plugins.panda_launcher import _outcome
from panda.base.files import save_json
from panda.base.multirun import in_multirun, sweep_group
from panda.cli.sweep import read_status, record, summarize, sweep_job
from panda.method.model import LABELS
from panda.training.fit import train
from panda.training.loggers import flatten
from tests.conftest import ROOT, TINY, compose_two_steps, run_script

BAD_RANK = "rank.parts=0 is out of range: it must be an integer in [1, 256]"


def sweep(sweep_dir, *overrides: str):
    return run_script("train.py", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}")


def rows(sweep_dir) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    return sweep_dir, sweep(sweep_dir, "rank.parts=4,0,8")


def test_a_failing_job_is_recorded_and_the_others_complete(failed_sweep):
    sweep_dir, result = failed_sweep
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "1 of 3 jobs did not complete: 1 (failed)" in output
    table = rows(sweep_dir)
    assert [(r["job"], r["status"], r["parts"]) for r in table] == [
        ("0", "completed", "4"),
        ("1", "failed", ""),
        ("2", "completed", "8"),
    ]
    assert BAD_RANK in table[1]["error"]
    assert table[1]["overrides"].endswith("rank.parts=0")
    assert table[0]["error"] == table[2]["error"] == ""
    assert all(0 < float(table[i]["val_rel_error"]) < 1 for i in (0, 2))
    assert (sweep_dir / "0" / "factors.pt").is_file() and (sweep_dir / "2" / "factors.pt").is_file()
    assert not (sweep_dir / "1" / "factors.pt").exists()
    assert "| 1 | " in (sweep_dir / "summary.md").read_text()
    status = json.loads((sweep_dir / "1" / "status.json").read_text())
    assert status["status"] == "failed" and BAD_RANK in status["error"]


def test_a_sweep_directory_holds_one_sweep(failed_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(failed_sweep[0], sweep_dir)
    metrics = (sweep_dir / "0" / "metrics.json").read_text()
    result = sweep(sweep_dir, "rank.parts=16,32")
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    table = rows(sweep_dir)
    assert [(r["job"], r["status"], r["parts"], r["val_rel_error"]) for r in table] == [
        ("0", "failed", "", ""),
        ("1", "failed", "", ""),
    ]  # job 2 of the earlier sweep is not this sweep's, and no row carries another job's metrics
    assert all("holds a job of another sweep" in r["error"] for r in table)
    assert (sweep_dir / "0" / "metrics.json").read_text() == metrics  # the earlier sweep's results are kept


def test_rerunning_a_sweep_resumes_unfinished_jobs_and_skips_completed_ones(failed_sweep):
    sweep_dir, _ = failed_sweep
    # job 0 as a cancelled SLURM job leaves it: status cancelled, checkpoints in its directory
    status = json.loads((sweep_dir / "0" / "status.json").read_text())
    record(sweep_dir / "0", "cancelled", status["overrides"], "CANCELLED by 0")
    (sweep_dir / "0" / "metrics.json").unlink()
    completed = (sweep_dir / "2" / "metrics.json").read_text()

    result = sweep(sweep_dir, "rank.parts=4,0,8")
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    statuses = [(r["job"], r["status"]) for r in rows(sweep_dir)]
    assert statuses == [("0", "completed"), ("1", "failed"), ("2", "completed")]
    assert "Restored all states from the checkpoint" in (sweep_dir / "0" / "train.log").read_text()
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["steps"] == 4
    assert "already completed" in (sweep_dir / "2" / "train.log").read_text()
    assert (sweep_dir / "2" / "metrics.json").read_text() == completed


def test_local_launcher_runs_jobs_as_processes_and_finishes_the_sweep(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=local", "rank.parts=4,0")
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    table = rows(tmp_path)
    assert [(r["job"], r["status"]) for r in table] == [("0", "completed"), ("1", "failed")]
    assert BAD_RANK in table[1]["error"]
    assert list((tmp_path / ".submitit").glob("*/*_result.pkl"))


def test_summary_cells_stay_on_one_line(tmp_path):
    record(tmp_path / "0", "failed", ["rank.parts=0"], "first line | a pipe\nsecond line")
    (table,) = summarize(tmp_path)
    assert table["status"] == "failed"
    assert "| first line \\| a pipe second line |" in (tmp_path / "summary.md").read_text()


class FakeJob:
    """What the launcher reads of a finished submitit job."""

    def __init__(self, tmp_path, state: str, result=None):
        self.state = state
        self.paths = SimpleNamespace(result_pickle=tmp_path / "result.pkl")
        self._result = result
        if result is not None:
            self.paths.result_pickle.touch()

    def wait(self) -> None:
        pass

    def results(self):
        if isinstance(self._result, Exception):
            raise self._result
        return [self._result]


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("CANCELLED by 0", ("cancelled", "CANCELLED by 0")),
        ("TIMEOUT", ("timed out", "TIMEOUT")),
        ("OUT_OF_MEMORY", ("failed", "OUT_OF_MEMORY")),
        ("NODE_FAIL", ("failed", "NODE_FAIL")),
        ("INTERRUPTED", ("cancelled", "INTERRUPTED")),
    ],
)
def test_a_job_slurm_ended_gets_its_status_from_the_slurm_state(tmp_path, state, outcome):
    assert _outcome(FakeJob(tmp_path, state)) == outcome


def test_a_job_that_raised_is_failed_with_its_last_error_line(tmp_path):
    error = FailedJobError("Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'panda'\n")
    assert _outcome(FakeJob(tmp_path, "FAILED", error)) == ("failed", "ModuleNotFoundError: No module named 'panda'")
    timed_out = FailedJobError("...\nUncompletedJobError: Job not requeued because: timed-out too many times.")
    assert _outcome(FakeJob(tmp_path, "FAILED", timed_out))[0] == "timed out"


def test_a_job_that_returned_gives_its_return_unless_hydra_caught_an_error(tmp_path):
    returned = JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)
    assert _outcome(FakeJob(tmp_path, "COMPLETED", returned)) is returned
    raised = JobReturn(status=JobStatus.FAILED, _return_value=ImportError("cannot import name 'train'"))
    assert _outcome(FakeJob(tmp_path, "COMPLETED", raised)) == ("failed", "ImportError: cannot import name 'train'")


@pytest.fixture
def multirun_job(tmp_path):
    """This process as job 3 of a multirun writing into ``tmp_path``."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["rank.parts=3"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 3
    HydraConfig.instance().set_config(cfg)
    yield tmp_path
    HydraConfig.instance().cfg = None


def test_run_job_records_a_job_that_returns(multirun_job):
    assert in_multirun()
    assert sweep_job(lambda: 0.5) == 0.5
    expected = {"status": "completed", "overrides": ["rank.parts=3"], "error": "", "sweep": None}  # no SweepSummary
    assert read_status(multirun_job) == expected
    assert sweep_job(lambda: pytest.fail("a completed job runs again")) is None


def test_run_job_records_an_error_and_returns(multirun_job, caplog):
    def crash():
        raise RuntimeError("CUDA out of memory")

    assert sweep_job(crash) is None
    assert read_status(multirun_job)["error"] == "RuntimeError: CUDA out of memory"
    assert "Traceback" in caplog.text
    assert sweep_job(lambda: 0.5) == 0.5  # a failed job runs again


def test_run_job_records_submitits_end_of_a_timed_out_job(multirun_job):
    def time_limit():
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    assert sweep_job(time_limit) is None
    assert read_status(multirun_job)["status"] == "timed out"


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_configs_compose_and_are_overridable(launcher):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "trainer.devices=2", "hydra.launcher.timeout_min=7"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_ == f"hydra_plugins.panda_launcher.{launcher.capitalize()}Launcher"
    assert callable(get_class(cfg.hydra.launcher._target_))
    assert cfg.hydra.launcher.tasks_per_node == 2
    assert cfg.hydra.launcher.timeout_min == 7
    assert cfg.hydra.callbacks.sweep_summary._target_ == "panda.cli.sweep.SweepSummary"


def test_summary_has_solver_roir_and_label_columns(tmp_path):
    for job, metrics in enumerate(
        [
            {
                "parts": 8,
                "solver": "stats",
                "lr": None,
                "roir/eyes": 2.5,
                "roir/mouth": 1.25,
                "labels": ["eyes", "hair"],
            },
            {"parts": 16, "solver": "pgd", "lr": 0.003, "roir/mouth": 3.0},
        ]
    ):
        record(tmp_path / str(job), "completed", [f"rank.parts={metrics['parts']}"])
        save_json({"val_rel_error": 0.5, **metrics}, tmp_path / str(job) / "metrics.json")
    table = summarize(tmp_path)
    header = next(csv.reader((tmp_path / "summary.csv").open()))
    assert header[header.index("fit_seconds") + 1 : header.index("labels")] == ["roir/eyes", "roir/mouth"]
    assert [(r["solver"], r["lr"], r["roir/eyes"], r["labels"]) for r in rows(tmp_path)] == [
        ("stats", "", "2.5", "eyes; hair"),
        ("pgd", "0.003", "", ""),
    ]
    assert table[1]["roir/mouth"] == 3.0
    assert "| 2.5000 | 1.2500 | eyes; hair |" in (tmp_path / "summary.md").read_text()


class PartsTotal(pl.Callback):
    """Once training has ended, publishes the sum of the final parts (as FinalROIR publishes ROIR) and the steps
    taken, and labels the parts (as PartNames does)."""

    def on_fit_end(self, trainer, pl_module):
        trainer.callback_metrics["test/parts_total"] = pl_module.P.detach().double().sum()
        trainer.callback_metrics["test/steps"] = torch.tensor(trainer.global_step)
        setattr(pl_module, LABELS, (["eyes", "hair", *(f"part {k}" for k in range(2, 8))], [0.5] * 8))


def test_metrics_record_the_solver_its_rate_labels_and_what_callbacks_publish_after_fit(tmp_path):
    cfg = compose_two_steps(tmp_path, "model.solver.lr=0.002")
    with open_dict(cfg):  # under a key the configs know (training checks them), and first: whatever the order, the
        # results are written once every on_fit_end hook has run
        cfg.callbacks = {"roir_final": {"_target_": "tests.test_sweep.PartsTotal"}, **cfg.callbacks}
    metrics = train(cfg)
    factors = torch.load(tmp_path / "factors.pt", weights_only=True)
    assert (metrics["solver"], metrics["lr"], metrics["labels"][:2]) == ("Adam", 0.002, ["eyes", "hair"])
    assert metrics["test/steps"] == metrics["steps"] == 2
    assert metrics["test/parts_total"] == pytest.approx(float(factors["P"].double().sum()), rel=1e-12)
    assert factors["labels"] == metrics["labels"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert list(metrics)[-3:] == ["test/parts_total", "test/steps", "labels"]  # after the run's own keys


def test_the_ablation_plot_draws_each_layer_and_writes_the_results_file(tmp_path):
    sweep_dir = tmp_path / "multirun" / "ablation_layers" / "2026-01-01_00-00-00"
    for job, (layer, parts) in enumerate([("main.5", 8), ("main.5", 16), ("main.8", 8), ("main.8", 16)]):
        record(sweep_dir / str(job), "completed", [f"gen.layer={layer}", f"rank.parts={parts}"])
        save_json(
            {
                "layer": layer,
                "parts": parts,
                "val_rel_error": 0.5,
                "roir/mouth": 2.0,
                "labels": ["nose", "hair", "nose_2"],
            },
            sweep_dir / str(job) / "metrics.json",
        )
    record(sweep_dir / "4", "failed", ["gen.layer=main.11"], "out of memory")
    summarize(sweep_dir)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "ablation_plot.py"),
            str(sweep_dir),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "ablation_layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "ablation_layers.csv").read_text() == (sweep_dir / "summary.csv").read_text()
    text = (tmp_path / "out" / "ablation_layers.md").read_text()
    assert "| roir/mouth | features | error |" in text and "| 2.0000 | nose x2 |" in text and "out of memory" in text


def test_sweep_group_is_the_sweep_directory_relative_to_the_working_directory(tmp_path):
    inside = OmegaConf.create({"sweep": {"dir": str(tmp_path / "multirun" / "a")}, "runtime": {"cwd": str(tmp_path)}})
    assert sweep_group(inside) == "multirun/a"
    outside = OmegaConf.create({"sweep": {"dir": "/elsewhere/b"}, "runtime": {"cwd": str(tmp_path)}})
    assert sweep_group(outside) == "/elsewhere/b"
    assert sweep_group() is None  # not in a multirun


def test_wandb_config_keys_are_the_dotted_paths_of_the_config():
    config = {
        "gen": {"name": "dcgan_faces"},
        "model": {"solver": {"_target_": "torch.optim.Adam"}},
        "seed": 0,
        "none": {},
    }
    assert flatten(config) == {
        "gen.name": "dcgan_faces",
        "model.solver._target_": "torch.optim.Adam",
        "seed": 0,
        "none": {},
    }


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of an offline W&B run's ``.wandb`` file (a LevelDB-style log: 32 KiB blocks of chunks, each
    with a 7-byte header: checksum, length, type; a record is a full chunk or a first, middle ... last one)."""
    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    position, chunks = 7, []
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        if kind == 0:
            break
        chunks.append(data[position + header : position + header + length])
        position += header + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            found = wandb_internal_pb2.Record()
            found.ParseFromString(b"".join(chunks))
            chunks = []
            yield found


def wandb_run(directory: Path) -> dict:
    """What an offline W&B run under ``directory`` recorded: group, config, summary, artifacts, files."""
    (path,) = directory.glob("wandb/offline-run-*/run-*.wandb")
    found = {"group": None, "config": {}, "summary": {}, "artifacts": {}, "files": set()}
    for item in wandb_records(path):
        kind = item.WhichOneof("record_type")
        if kind == "run":
            found["group"] = item.run.run_group
        elif kind == "config":
            found["config"] |= {u.key: json.loads(u.value_json) for u in item.config.update}
        elif kind == "summary":
            found["summary"] |= {u.key: json.loads(u.value_json) for u in item.summary.update if u.key}
        elif kind == "artifact":
            found["artifacts"][item.artifact.type] = {c.path for c in item.artifact.manifest.contents}
        elif kind == "files":
            found["files"] |= {f.path for f in item.files.files}
    return found


def test_an_ablation_sweep_measures_roir_and_logs_each_job_to_one_wandb_group(tmp_path):
    sweep_dir = tmp_path / "multirun" / "ablation_ranks"
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": "offline", "NETRC": str(tmp_path / "none")}
    budget = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"]
    budget += ["data.batch_size=4", "data.val_samples=8", "data.init_samples=16", "callbacks.artifacts.num_images=2"]
    roir = ["regions=[mouth]", "calibration=6", "test_samples=4", "choose.screen=2", "choose.finalists=2"]
    result = run_script(
        "train.py",
        "-m",
        "experiment=ablation_ranks",
        *budget,
        *(f"callbacks.roir_final.{o}" for o in roir),
        "rank.parts=2,3,0",  # job 2 fails: its empty cells go into the W&B table of the summary too
        "rank.appearances=4",
        "logger=wandb",
        f"hydra.sweep.dir={sweep_dir}",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    table = rows(sweep_dir)
    assert [(r["status"], r["parts"], r["solver"], r["roir/mouth"] != "") for r in table] == [
        ("completed", "2", "stats", True),
        ("completed", "3", "stats", True),
        ("failed", "", "", False),
    ]
    for job in table[:2]:
        assert float(job["roir/mouth"]) > 0
        job_dir = sweep_dir / job["job"]
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert metrics["roir/mouth"] == float(job["roir/mouth"])
        assert [r["region"] for r in csv.DictReader((job_dir / "roir.csv").open())] == ["mouth"]
        run = wandb_run(job_dir)
        assert run["group"] == "multirun/ablation_ranks"
        assert run["config"]["gen.name"] == "dcgan_faces" and run["config"]["rank.parts"] == int(job["parts"])
        assert run["config"]["model.solver._target_"] == "panda.method.solvers.StatisticsSolver"
        assert {"val_rel_error", "fit_seconds", "roir/mouth"} <= set(run["summary"])
        assert run["summary"]["roir/mouth"] == metrics["roir/mouth"]
        assert any(f.startswith("media/images/images/parts_") for f in run["files"])
        assert any(f.startswith("media/table/roir_") for f in run["files"])  # PandA's ROIR table
    summary = wandb_run(sweep_dir)
    assert summary["group"] == "multirun/ablation_ranks"
    assert summary["artifacts"]["sweep-summary"] == {"summary.csv", "summary.md"}
    assert any(f.startswith("media/table/summary_") for f in summary["files"])


def test_a_longer_budget_continues_the_same_sweep(failed_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(failed_sweep[0], sweep_dir)
    result = sweep(sweep_dir, "rank.parts=4,0,8", "trainer.max_steps=6")
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]  # job 1 (rank.parts=0) still fails
    table = rows(sweep_dir)
    expected = [("0", "completed", "6"), ("1", "failed", ""), ("2", "completed", "6")]
    assert [(r["job"], r["status"], r["steps"]) for r in table] == expected
    assert "another sweep" not in table[1]["error"]
