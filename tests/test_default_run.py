"""``python train.py`` as the README runs it: the default's factors match the committed measurement."""

import json
import re

import pytest
import yaml

from tests.conftest import ROOT, run_script

# the error curve of experiments/results/commands_cpu.md: "| step | val/rel_error | change |"
CURVE_ROW = re.compile(r"^\| (\d+) \| (0\.\d+) \|", re.MULTILINE)


def committed_error(step: int) -> float:
    """The default command's validation error at ``step`` in the committed benchmark of whole commands."""
    text = (ROOT / "experiments" / "results" / "commands_cpu.md").read_text()
    errors = {int(s): float(e) for s, e in CURVE_ROW.findall(text.partition("validation error every")[2])}
    return errors[step]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("default")
    result = run_script("train.py", f"hydra.run.dir={path}", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_the_default_run_reaches_the_committed_error_and_names_the_face_regions(default_run):
    metrics = json.loads((default_run / "metrics.json").read_text())
    steps = yaml.safe_load((ROOT / "conf" / "trainer" / "default.yaml").read_text())["max_steps"]
    assert metrics["steps"] == steps
    assert metrics["val_rel_error"] == pytest.approx(committed_error(steps), rel=0.01)
    assert {"eyes", "nose", "mouth"} <= set(metrics["labels"])
