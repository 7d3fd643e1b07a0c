"""Bad input is one line naming the problem (a ConfigError: exit code 2 on the command line), never a traceback or
a silently wrong result: edit strengths, edit zoo files, task settings, seeds and sample indices, factors files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from panda.base.errors import ConfigError
from panda.base.factors_file import load_factors
from panda.method.data import batch_generator
from panda.tasks.registry import evaluate
from panda.uses import editing
from panda.uses.factors import Factors, open_run
from tests.conftest import DCGAN_GEN, LAYER, ROOT, SHAPE, TINY, made_up_factors, run_evaluate, run_script, write_run


@pytest.mark.parametrize("alpha", [1e38, 1e39, -1e39])
def test_strengths_that_overflow_are_refused(run: Factors, alpha: float) -> None:
    features, state = run.features_and_state(run.latents(0, [0]))
    with pytest.raises(ConfigError, match=r"overflows? float32|not finite") as error:
        offset = editing.edit_offset(run, [editing.Edit(0, 1, alpha)])
        editing.edited_images(run, features, state, offset, scales=(0.0, 1.0, 1e3))
    assert "\n" not in str(error.value)


def test_an_overflowing_strength_is_one_line_from_the_command_line(run_dir: Path, tmp_path: Path) -> None:
    edits = "eval.edits=[{part:0,appearance:1,alpha:1e39}]"
    done = run_evaluate(tmp_path / "out", "task=edit", f"run={run_dir}", edits)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "overflow float32 features" in output and "Traceback" not in output
    assert not list((tmp_path / "out").glob("*.png"))


RANKS = "layer: main.8\nranks: {parts: 8, appearances: 16}\n"
ZOOS = {
    "malformed": "layer: main.8\nedits: {a: [\n",
    "python tag": "layer: main.8\nedits: !!python/object/apply:os.getcwd []\n",
    "ranks list": "layer: main.8\nranks: [8, 16]\nedits: {a: [{part: 0, appearance: 1, alpha: 1.0}]}\n",
    "edit not a list": RANKS + "edits: {a: 5}\n",
    "part a list": RANKS + "edits: {a: [{part: [0], appearance: 1, alpha: 1}]}\n",
    "appearance a name": RANKS + "edits: {a: [{part: 0, appearance: x, alpha: 1}]}\n",
}


@pytest.mark.parametrize("kind", ZOOS)
def test_a_bad_edit_zoo_is_one_line(run: Factors, tmp_path: Path, kind: str) -> None:
    (tmp_path / "dcgan_faces.yaml").write_text(ZOOS[kind])
    with pytest.raises(ConfigError) as error:
        editing.named_edit(run, "a", tmp_path)
    assert "\n" not in str(error.value)


def compose_evaluate(out: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[*overrides, f"output_dir={out}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=refine", "eval.steps=-1"], "eval.steps=-1 must be an integer >= 1"),
        (["task=refine", "eval.steps=abc"], "eval.steps='abc' must be an integer >= 1"),
        (["task=refine", "eval.lr=nan"], "eval.lr=nan must be a finite number"),
        (["task=refine", "eval.lr=0"], "eval.lr=0.0 must be > 0"),
        (["task=edit", "seed=abc"], "seed='abc' must be an integer"),
        (["task=edit", "samples=[-1]"], "samples=[-1] must be a non-empty list of sample indices >= 0"),
        (["task=edit", "samples=[0.5]"], "must be a non-empty list of sample indices >= 0"),
    ],
)
def test_bad_task_settings_are_one_line(run_dir: Path, tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = compose_evaluate(tmp_path, f"run={run_dir}", *overrides)
    with pytest.raises(ConfigError) as error:
        evaluate(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_any_integer_seeds_a_batch() -> None:
    small, huge = batch_generator(0, 3, 5), batch_generator(10**30, 3, 99999999999999999999)
    assert small.initial_seed() == 3 * 1_000_000_007 + 5  # every number torch took before is the same
    assert 0 <= huge.initial_seed() < 1 << 64
    negative = torch.Generator().manual_seed(-7 * 1_000_003 * 1_000_000_007)
    assert batch_generator(-7, 0, 0).initial_seed() == negative.initial_seed()


def test_a_huge_sample_index_is_a_sample(run_dir: Path, tmp_path: Path) -> None:
    result = evaluate(compose_evaluate(tmp_path, f"run={run_dir}", "task=edit", "samples=[99999999999999999999]"))
    assert result["samples"] == [99999999999999999999]


def factors_file(path: Path, A: torch.Tensor, P: torch.Tensor) -> Path:
    record = {"A": A, "P": P, "generator": "dcgan_faces", "layer": LAYER, "feature_shape": list(SHAPE)}
    record["config"] = yaml.safe_dump({"gen": DCGAN_GEN})
    torch.save(record, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda A, P: (A, -P), "P must be non-negative"),
        (lambda A, P: (A, P * 0), "P must be non-negative with at least one non-zero entry"),
        (lambda A, P: (A * 1e30, P), "A's entries reach 3"),
        (lambda A, P: (A.to_sparse(), P), "A is a torch.sparse_coo tensor, not a dense one"),
    ],
)
def test_factors_that_panda_cannot_have_learnt_are_refused(tmp_path: Path, change, message: str) -> None:
    path = factors_file(tmp_path / "factors.pt", *change(*made_up_factors()))
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        load_factors(path)


def test_a_missing_value_in_a_stored_config_is_one_line(tmp_path: Path) -> None:
    gen = {**DCGAN_GEN, "net": {**DCGAN_GEN["net"], "weights": "???"}}
    with pytest.raises(ConfigError, match=r"gen.net.weights is missing \('\?\?\?'\)"):
        open_run(write_run(tmp_path, gen=gen))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "error: seed='abc' must be an integer"),
        ("~rank.parts", "error: the config has no value for rank.parts, which this command needs"),
    ],
)
def test_a_bad_training_config_is_one_line(tmp_path: Path, override: str, message: str) -> None:
    done = run_script("train.py", *TINY, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and message in output and "Traceback" not in output
    assert not (tmp_path / "run").exists()
