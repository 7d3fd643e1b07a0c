"""Time to factors as a user measures it: the stop at convergence (``callbacks=early_stop``) stops a converged
run, and only a converged one; start-up and the end of a command skip work that changes nothing."""

import gc
import json
import logging
import subprocess
import sys
import time

import psutil
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from panda.base.errors import ConfigError
from panda.cli.main import command
from panda.training.callbacks import Convergence
from panda.training.fit import train
from panda.uses import visualize
from tests.conftest import ROOT, TWO_STEPS


class Scripted(pl.LightningModule):
    """Reports ``errors[k]`` as ``val/rel_error`` at validation ``k`` (after step ``2 (k + 1)``)."""

    def __init__(self, errors: list[float]) -> None:
        super().__init__()
        self.errors = errors
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.w - batch).square().sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/rel_error", self.errors[self.trainer.global_step // 2 - 1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.ones(1000, 1), batch_size=None)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.ones(1, 1), batch_size=None)


def fit(errors: list[float], max_steps: int = 20, ckpt_dir=None, ckpt_path=None) -> tuple[pl.Trainer, Convergence]:
    """Training validated every 2 steps, with :class:`Convergence` at ``rel_tol=0.001, patience=2``
    (and checkpoints into ``ckpt_dir``, resuming from ``ckpt_path``)."""
    stop = Convergence("val/rel_error", rel_tol=0.001, patience=2)
    checkpoints = [pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True)] if ckpt_dir else []
    trainer = pl.Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=bool(ckpt_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[stop, *checkpoints],
    )
    trainer.fit(Scripted(errors), ckpt_path=ckpt_path)
    return trainer, stop


def test_a_converged_run_stops_at_the_validation_that_shows_it(caplog):
    # relative changes: -33%, -17%, +0.08%, -0.1%: the last two are within 0.1% at step 10
    with caplog.at_level(logging.INFO, logger="panda.training.callbacks"):
        trainer, stop = fit([0.9, 0.6, 0.5, 0.5004, 0.4999] + [0.4999] * 5)
    assert trainer.global_step == 10 and stop.converged
    assert "converged at step 10 of at most 20: val/rel_error = 0.4999" in caplog.text
    assert "+0.080%, -0.100%" in caplog.text


@pytest.mark.parametrize(
    "errors",
    [
        [0.9 * 0.99**k for k in range(10)],  # still improving by 1% a validation
        [0.5 * 1.01**k for k in range(10)],  # diverging by 1% a validation
        [0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.9, 0.9],  # never two flat validations in a row
    ],
)
def test_an_improving_or_diverging_run_goes_on_to_max_steps(errors, caplog):
    with caplog.at_level(logging.INFO, logger="panda.training.callbacks"):
        trainer, stop = fit(errors)
    assert trainer.global_step == 20 and not stop.converged
    assert "reached trainer.max_steps = 20 before converging" in caplog.text


def test_a_resumed_run_remembers_the_validations_before_the_checkpoint(tmp_path):
    errors = [0.9, 0.6, 0.5, 0.5004, 0.4999] + [0.4999] * 5  # converged at step 10, as above
    fit(errors, max_steps=6, ckpt_dir=tmp_path)
    trainer, stop = fit(errors, ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 10 and stop.converged  # not 12: the changes at steps 8 and 10 suffice


def test_bad_settings_are_rejected():
    with pytest.raises(ConfigError, match=r"callbacks.early_stop.rel_tol=0 must be > 0"):
        Convergence("val/rel_error", rel_tol=0, patience=1)
    with pytest.raises(ConfigError, match=r"callbacks.early_stop.patience=0 must be an integer >= 1"):
        Convergence("val/rel_error", rel_tol=0.001, patience=0)


def test_experiment_fast_stops_at_convergence_checked_after_every_round_of_the_solver():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=fast"])
    assert cfg.callbacks.early_stop._target_ == "panda.training.callbacks.Convergence"
    assert cfg.trainer.val_check_interval == cfg.model.solver.appearance_steps + cfg.model.solver.parts_steps
    assert cfg.data.precision == "auto"


def train_until(tmp_path, *overrides: str, started: float | None = None) -> dict:
    """``train(cfg, started)`` on the :data:`TWO_STEPS` samples with its own budget and callbacks (``overrides``)."""
    budget = [o for o in TWO_STEPS if not o.startswith(("callbacks=", "trainer.max_steps="))]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*budget, *overrides, f"paths.output_dir={tmp_path}"])
    return train(cfg, started)


def test_train_stops_at_convergence_and_its_last_validation_is_the_final_one(tmp_path, caplog, monkeypatch):
    validations = []
    monkeypatch.setattr(pl.Trainer, "validate", lambda *args, **kwargs: validations.append(1) or [{}])
    with caplog.at_level(logging.INFO, logger="panda.training.callbacks"):
        metrics = train_until(
            tmp_path,
            "callbacks=early_stop",
            "callbacks.early_stop.rel_tol=0.5",  # any change below 50% counts as converged: the second validation
            "trainer.max_steps=40",
            "trainer.val_check_interval=2",
        )
    assert metrics["steps"] == 4 and "converged at step 4 of at most 40" in caplog.text
    assert validations == []  # fit validated the final factors at step 4: not validated again
    assert json.loads((tmp_path / "metrics.json").read_text())["val_rel_error"] == metrics["val_rel_error"]
    assert 0 < metrics["first_step_seconds"] < time.time() - psutil.Process().create_time()


def test_the_command_line_front_does_not_import_torch():
    """train.py's front (Hydra, the override checks) runs before torch and Lightning are imported."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, panda.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_the_pictures_are_rendered_once_after_training_with_the_part_names(tmp_path, monkeypatch):
    rendered = []
    parts_figure = visualize.parts_figure
    monkeypatch.setattr(visualize, "parts_figure", lambda *args: rendered.append(args[3]) or parts_figure(*args))
    train_until(tmp_path, "callbacks=default", "naming.after_training=true", "naming.samples=4")
    assert len(rendered) == 1 and len(rendered[0]) == 8  # once, with the 8 parts' labels
    assert all((tmp_path / name).is_file() for name in ("parts.png", "overlay.png", "error_curve.png"))


def test_a_command_leaves_its_objects_to_the_process_exit():
    """:func:`panda.cli.main.run` freezes the objects left (the interpreter's final collection would take seconds)."""
    assert gc.get_freeze_count() == 0
    try:
        assert command(lambda: 7) == 7
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_first_step_is_timed_from_the_command_start_and_never_from_before_the_process(tmp_path):
    """``train.py`` passes its first line's time: a shell that runs it in its own process (``exec``) started that
    process earlier. A start before the process (a submitit job's pickled ``train.py``) counts from the process."""
    given = time.time()
    assert 0 < train_until(tmp_path / "given", started=given)["first_step_seconds"] < time.time() - given
    since_process = time.time() - psutil.Process().create_time()
    early = train_until(tmp_path / "early", started=given - 10 * since_process)["first_step_seconds"]
    assert since_process < early < time.time() - psutil.Process().create_time()
