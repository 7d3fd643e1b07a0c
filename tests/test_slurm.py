"""Sweeps on a real SLURM cluster: one node on this machine, started by ``scripts/slurm_local.sh``.

Skipped where SLURM, munge or MariaDB are not installed or the user is not root, unless
``PANDA_SLURM=required`` (as ``.ci/run`` sets it, after installing them), which turns the skip into a failure.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from panda.base.factors_file import load_factors
from panda.training.fit import train
from tests.conftest import ROOT, TINY, run_script

pytestmark = pytest.mark.slurm

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
CLUSTER_DIR = Path(os.environ.get("PANDA_SLURM_DIR", "/tmp/panda-slurm"))
TOOLS = ["slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd", "mysql_install_db"]
# jobs small enough for the local node (its CPUs are this machine's)
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE"}


def cluster_processes() -> set[int]:
    """Processes of the local cluster: its daemons by pid file, and anything naming its folder."""
    pids = {int(p.read_text()) for p in (CLUSTER_DIR / "run").glob("*.pid") if p.read_text().strip().isdigit()}
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    pids |= {int(line.split()[0]) for line in ps.splitlines() if str(CLUSTER_DIR) in line}
    return {pid for pid in pids if pid != os.getpid() and Path(f"/proc/{pid}").exists()}


@pytest.fixture(scope="session")
def slurm_env():
    """The environment of a client of the local cluster; starts it (and stops it at the end) unless it runs."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        reason = f"a local SLURM cluster needs root and {', '.join(missing) or 'its tools'}"
        if os.environ.get("PANDA_SLURM") == "required":
            pytest.fail(f"{reason} (PANDA_SLURM=required)")
        pytest.skip(reason)
    env = {**os.environ, "SLURM_CONF": str(CLUSTER_DIR / "slurm.conf")}
    started = subprocess.run([SCRIPT, "status"], env=env).returncode != 0
    try:
        if started:
            subprocess.run([SCRIPT, "start"], env=env, check=True, timeout=180)
        yield env
    finally:
        if started:
            daemons = cluster_processes()
            subprocess.run([SCRIPT, "stop"], env=env, timeout=180)
            assert daemons and not cluster_processes(), "processes of the local SLURM cluster are left"


def sweep(sweep_dir: Path, env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    return run_script("train.py", "-m", *TINY, *LAUNCHER, *overrides, f"hydra.sweep.dir={sweep_dir}", env=env)


def start_sweep(sweep_dir: Path, env: dict[str, str], *overrides: str) -> subprocess.Popen:
    """``train.py -m`` in the background; its output goes to ``sweep_dir.log``."""
    args = [sys.executable, str(ROOT / "train.py"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    with open(f"{sweep_dir}.log", "w") as log:
        return subprocess.Popen(args, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log)


def finish(process: subprocess.Popen, sweep_dir: Path) -> str:
    try:
        process.wait(timeout=600)
    finally:
        process.kill()
    return Path(f"{sweep_dir}.log").read_text()


def wait_until(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def slurm(env: dict[str, str], *command: str) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def states(env: dict[str, str], job: str) -> list[str]:
    """Every state of ``job`` in the accounting database (a requeued job has one per run)."""
    return slurm(env, "sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job).splitlines()


def final_state(env: dict[str, str], job: str) -> str:
    """The state ``job`` ended in (the accounting database learns it shortly after the job's result)."""
    return wait_until(lambda: (s := states(env, job)) and s[-1].split()[0] in ENDED and s[-1], f"job {job} to end", 60)


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of the sweep's jobs (submitit names its folders by them)."""
    return sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def test_sweep_runs_as_slurm_jobs(slurm_env, tmp_path):
    result = sweep(tmp_path, slurm_env, "rank.parts=4,8")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert [(r["job"], r["status"], r["parts"]) for r in rows(tmp_path)] == [
        ("0", "completed", "4"),
        ("1", "completed", "8"),
    ]
    ids = job_ids(tmp_path)
    assert len(ids) == 2 and all("_" in i for i in ids)  # one array, a task per job
    assert [final_state(slurm_env, job) for job in ids] == ["COMPLETED", "COMPLETED"]


def test_cancelled_job_is_reported_and_the_sweep_ends(slurm_env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(sweep_dir, slurm_env, *TINY, *LAUNCHER, "trainer.max_steps=4,100000")

    def second_job_running() -> str | None:
        queue = slurm(slurm_env, "squeue", "-h", "-o", "%i %T").split("\n")
        return next((line.split()[0] for line in queue if line.endswith(" RUNNING") and "_1 " in line), None)

    try:
        job = wait_until(second_job_running, "job 1 to run")
        slurm(slurm_env, "scancel", job)
    finally:
        output = finish(process, sweep_dir)
    assert process.returncode == 1, output[-3000:]
    assert "1 of 2 jobs did not complete: 1 (cancelled)" in output
    table = rows(sweep_dir)
    assert [(r["job"], r["status"]) for r in table] == [("0", "completed"), ("1", "cancelled")]
    assert table[1]["error"].startswith("CANCELLED")
    assert final_state(slurm_env, job).startswith("CANCELLED")


def test_requeued_job_resumes_from_its_checkpoint(slurm_env, tmp_path):
    # trains for 10 s (training time survives the requeue), checkpointing every 2 steps
    overrides = [*TINY, *LAUNCHER, "trainer.max_steps=1000000", "trainer.max_time=00:00:00:10"]
    sweep_dir = tmp_path / "sweep"
    process = start_sweep(sweep_dir, slurm_env, *overrides)
    try:
        wait_until((sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file, "the job's first checkpoint")
        (job,) = job_ids(sweep_dir)
        # what SLURM sends before the time limit (or a preemption): the job checkpoints and requeues itself
        slurm(slurm_env, "scancel", "--signal=USR2", job)
    finally:
        output = finish(process, sweep_dir)
    assert process.returncode == 0, output[-3000:]
    assert rows(sweep_dir)[0]["status"] == "completed"
    log = (sweep_dir / "0" / "train.log").read_text()
    assert "Requeued job" in log
    assert "Restored all states from the checkpoint at" in log
    assert states(slurm_env, job)[0] == "REQUEUED"
    assert final_state(slurm_env, job) == "COMPLETED"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ("hydra.launcher.cpus_per_task=100000", "More processors requested than permitted"),
        ("hydra.launcher.mem_gb=100000", "Memory specification can not be satisfied"),
    ],
)
def test_a_request_the_cluster_cannot_meet_is_refused_with_its_message(slurm_env, tmp_path, request_, message):
    result = sweep(tmp_path, slurm_env, "rank.parts=4,8", request_)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    (line,) = [line for line in output.splitlines() if "error: the cluster refused the sweep's jobs: sbatch: " in line]
    assert message in line
    assert "Traceback" not in output
    assert not (tmp_path / "summary.csv").exists()


def test_a_two_task_ddp_job_trains_the_factors_of_one_process(slurm_env, tmp_path):
    """``trainer=ddp`` as a SLURM job of 2 tasks (``tasks_per_node`` follows ``trainer.devices``): Lightning takes the
    ranks from SLURM, and the factors equal one process's with the global batch."""
    stats = [
        "model/solver=stats",
        "rank.appearances=16",
        "model.solver.parts_steps=2",
        "model.solver.appearance_steps=2",
    ]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=8"]
    result = sweep(tmp_path / "sweep", slurm_env, *stats, *ddp, "hydra.launcher.mem_gb=2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (row,) = rows(tmp_path / "sweep")
    assert row["status"] == "completed", row["error"]
    log = (tmp_path / "sweep" / "0" / "train.log").read_text()
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in log
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *stats, "data.batch_size=16", f"paths.output_dir={tmp_path / 'one'}"])
    one = train(cfg)
    two = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert two["samples"] == one["samples"] == 64
    assert two["val_rel_error"] == pytest.approx(one["val_rel_error"], rel=1e-4)
    mine, reference = (load_factors(path) for path in (tmp_path / "sweep" / "0", tmp_path / "one"))
    for key in ("A", "P"):  # the statistics' sums run in another order: float rounding, amplified by the solves
        difference = (mine[key] - reference[key]).abs().max() / reference[key].abs().max()
        assert difference < 1e-2, (key, float(difference))
