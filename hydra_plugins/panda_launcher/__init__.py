"""Hydra's submitit launchers (``hydra/launcher=slurm`` or ``local``), changed so that a sweep finishes.

The plugin's launchers stop at the first job that SLURM cancelled, timed out or failed, and Hydra then
writes no summary. These submit the same job array, wait for every job and record each job that did not
return (:func:`panda.cli.sweep.record`: ``cancelled``, ``timed out`` or ``failed`` with SLURM's state or the
job's last error line) in its directory, and refuse a submission SLURM rejects with SLURM's message
(exit code 2). Hydra finds launchers only in the ``hydra_plugins`` package, hence this module.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


class _TolerantLauncher(BaseSubmititLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from panda.cli.sweep import record

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("submitit '%s' sweep output dir: %s", self._EXECUTOR, sweep_dir)
        jobs_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            jobs_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = self._executor().map_array(self, *zip(*jobs_params, strict=True))
        except submitit.core.utils.FailedJobError as error:  # sbatch refused the request
            log.error("error: the cluster refused the sweep's jobs: %s", "; ".join(_lines(str(error))))
            sys.exit(2)
        except FileNotFoundError as error:
            log.error("error: %s not found: submit from a machine of a SLURM cluster", error.filename)
            sys.exit(2)
        returns = []
        for job, (overrides, _, idx, _, _) in zip(jobs, jobs_params, strict=True):
            outcome = _outcome(job)
            if isinstance(outcome, JobReturn):
                returns.append(outcome)
                continue
            status, error = outcome
            log.error("job #%d (%s %s) %s: %s", idx, self._EXECUTOR, job.job_id, status, error)
            job_dir, task_overrides = self._job_dir(overrides, idx)
            record(job_dir, status, task_overrides, error)
            returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED))
        return returns

    def _executor(self) -> Any:
        """The submitit executor with this launcher's parameters (as the plugin's ``launch`` builds it)."""
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def _job_dir(self, overrides: list[str], idx: int) -> tuple[Path, list[str]]:
        """The directory and the overrides of job ``idx``, as Hydra's ``sweep_job`` resolves them."""
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = idx
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)
        try:
            job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = previous
        return job_dir, list(config.hydra.overrides.task)


def _outcome(job: Any) -> JobReturn | tuple[str, str]:
    """The job's :class:`JobReturn` if its task returned, else its status and error line."""
    from submitit.core.utils import UncompletedJobError

    from panda.cli.sweep import CANCELLED, FAILED, TIMED_OUT

    job.wait()
    state = job.state
    name = state.upper()
    if job.paths.result_pickle.exists() or name in ("COMPLETED", "FINISHED"):
        try:
            returned = job.results()[0]
        except UncompletedJobError as error:  # raised outside the task (which records its own errors)
            message = _last_line(str(error))
            return (TIMED_OUT if "timed-out" in message else FAILED), message
        if returned.status == JobStatus.FAILED:  # raised before the task's panda.cli.sweep.sweep_job (an import error)
            return FAILED, f"{type(returned._return_value).__name__}: {returned._return_value}"
        return returned
    if name.startswith("CANCELLED") or name == "INTERRUPTED":
        return CANCELLED, state
    if name in ("TIMEOUT", "DEADLINE"):
        return TIMED_OUT, state
    return FAILED, state


def _lines(text: str) -> list[str]:
    """The lines of ``text`` that say something (not blank, not a ``----`` rule)."""
    return [line.strip() for line in text.splitlines() if line.strip().strip("-")]


def _last_line(text: str) -> str:
    return (_lines(text) or [text])[-1]


class SlurmLauncher(_TolerantLauncher):
    """Sweep jobs as a SLURM job array (``hydra/launcher=slurm``)."""

    _EXECUTOR = "slurm"


class LocalLauncher(_TolerantLauncher):
    """Sweep jobs as local processes run by submitit (``hydra/launcher=local``)."""

    _EXECUTOR = "local"
