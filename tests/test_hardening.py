"""Bad input stops a run with one line: divergence, empty budgets, non-finite strengths, unknown keys."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from panda.base.errors import ConfigError, DivergenceError
from panda.tasks.registry import evaluate
from panda.training.callbacks import StopOnDivergence
from panda.training.fit import train
from tests.conftest import ROOT, TINY, configured, panda_model, run_script


def test_divergence_stops_training_and_writes_no_non_finite_factors(tmp_path):
    with pytest.raises(DivergenceError) as error:
        train(configured(tmp_path, "model.solver.lr=1e9", "trainer.max_steps=20"))
    message = str(error.value)
    assert "training diverged at step" in message and "NaN or infinite" in message and "\n" not in message
    assert not (tmp_path / "factors.pt").exists() and not (tmp_path / "metrics.json").exists()
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):  # those of the steps before, all finite
        state = torch.load(path, weights_only=True)["state_dict"]
        assert torch.isfinite(state["A"]).all() and torch.isfinite(state["P"]).all(), path.name
    assert not (tmp_path / "checkpoints" / "interrupted.ckpt").exists()


def test_divergence_is_one_line_and_a_non_zero_exit(tmp_path):
    result = run_script("train.py", *TINY, f"hydra.run.dir={tmp_path}", "model.solver.lr=1e9")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "training diverged at step" in output and "Traceback" not in output
    assert not (tmp_path / "factors.pt").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=0", "trainer.max_steps=0 must be an integer >= 1"),
        ("trainer.max_steps=-1", "trainer.max_steps=-1 must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0 must be an integer >= 1"),
        ("data.val_samples=-4", "data.val_samples=-4 must be an integer >= 1"),
        ("data.init_samples=0", "data.init_samples=0 must be an integer >= 1"),
    ],
)
def test_an_empty_budget_is_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        train(configured(tmp_path / "run", override))
    assert not (tmp_path / "run").exists() or [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]


def evaluated(run: Path, out: Path, *overrides: str) -> dict:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run={run}", f"output_dir={out}", "samples=[0]", *overrides])
    return evaluate(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.edits=[{part:0,appearance:1,alpha:nan}]"], "an edit's alpha=nan must be a finite number"),
        (["eval.edits=[{part:0,appearance:1,alpha:inf}]"], "an edit's alpha=inf must be a finite number"),
        (["eval.edits=[{part:0,appearance:1,alpha:abc}]"], "an edit's alpha='abc' must be a finite number"),
        (["eval.scales=[0,nan]"], "eval.scales[1]=nan must be a finite number"),
        (["eval.scales=[0,-inf]"], "eval.scales[1]=-inf must be a finite number"),
        (["eval.atlas=true", "eval.atlas_alpha=nan"], "eval.atlas_alpha=nan must be a finite number"),
        (["task=remove", "eval.alpha=inf", "eval.background=0"], "eval.alpha=inf must be a finite number"),
        (["task=remove", "eval.alpha=abc", "eval.background=0"], "eval.alpha='abc' must be a finite number"),
        (["task=remove", "eval.statistics=0"], "eval.statistics=0 must be an integer >= 1"),
        (["task=localize", "eval.statistics=0"], "eval.statistics=0 must be an integer >= 1"),
        (["task=localize", "eval.batch_size=0"], "eval.batch_size=0 must be an integer >= 1"),
    ],
)
def test_non_finite_or_empty_evaluation_settings_are_refused(run_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        evaluated(run_dir, tmp_path, *overrides)
    assert message in str(error.value)
    assert not list(tmp_path.glob("*.png"))


def test_parts_collapsed_to_zero_stop_training_with_one_line():
    """Adam at too high a rate can project every part to zero: the factors then reconstruct nothing (error 1)."""
    model = panda_model((8, 4, 4), 2, 3)
    with torch.no_grad():
        model.P.zero_()
    with pytest.raises(DivergenceError, match=r"^training collapsed at step 7: every part became zero \(P = 0\)"):
        StopOnDivergence().on_train_batch_end(SimpleNamespace(global_step=7), model, torch.tensor(1.0), None, 0)


def test_training_without_its_record_is_refused_before_it_starts(tmp_path):
    with pytest.raises(ConfigError, match=r"^callbacks\.record is off: training needs it"):
        train(configured(tmp_path, "~callbacks.record"))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "factors.pt").exists()
