"""End to end: ``evaluate.py`` on a factors file written by the test (real DCGAN, made-up factors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_evaluate, run_script


def test_edit_writes_grids_and_a_gif_over_the_strengths(run_dir: Path, tmp_path: Path) -> None:
    done = run_evaluate(tmp_path, "task=edit", f"run={run_dir}", "eval.scales=[0,1,2]")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "evaluate.json").read_text())
    assert result["edits"] == [{"part": 0, "appearance": 1, "alpha": 10.0}]
    with Image.open(tmp_path / "edit.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (2 * 64 * 2, 64 * 2)  # 2 samples side by side, enlarged 2x
    assert (tmp_path / "edit_before_after.png").stat().st_size > 0
    assert (tmp_path / "edit_strip.png").stat().st_size > 0


def test_remove_finds_the_background_around_the_part(run_dir: Path, tmp_path: Path) -> None:
    done = run_evaluate(tmp_path / "rm", "task=remove", f"run={run_dir}", "eval.statistics=12", "eval.part=3")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "rm" / "evaluate.json").read_text())
    assert result["background"] == max(range(16), key=lambda j: result["surroundings_coverage"][j])
    assert (tmp_path / "rm" / "remove_before_after.png").is_file()


def test_localize_writes_one_mask_figure_per_appearance(run_dir: Path, tmp_path: Path) -> None:
    done = run_evaluate(tmp_path / "loc", "task=localize", f"run={run_dir}", "eval.statistics=12")
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "loc" / "evaluate.json").read_text())["thresholds"]) == 16
    assert len(list((tmp_path / "loc").glob("localize_appearance*.png"))) == 16


def test_refine_lowers_each_samples_error(run_dir: Path, tmp_path: Path) -> None:
    done = run_evaluate(tmp_path, "task=refine", f"run={run_dir}", "eval.steps=10")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "evaluate.json").read_text())
    assert all(a < b for a, b in zip(result["error_after"], result["error_before"], strict=True))
    assert (tmp_path / "refine_parts_sample1.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task=edit", "eval.edits=[{part:8,appearance:0,alpha:1}]"],
            "part index 8 is out of range: this run has R_S=8",
        ),
        (["task=remove", "eval.background=16"], "appearance index 16 is out of range: this run has R_C=16"),
        (["task=edit", "layer=main.5"], "learnt for layer 'main.8', but layer 'main.5' is configured"),
        (["task=edit", "generator=stylegan2"], "learnt for generator 'dcgan_faces', but generator 'stylegan2'"),
        (["task=edit", "eval.name=smile"], "no edit named 'smile'"),
    ],
)
def test_bad_input_is_one_clear_line(run_dir: Path, tmp_path: Path, overrides: list[str], message: str) -> None:
    done = run_evaluate(tmp_path, f"run={run_dir}", *overrides)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert message in output and "Traceback" not in output


def test_missing_run_directory_is_reported(tmp_path: Path) -> None:
    done = run_evaluate(tmp_path, "task=localize", f"run={tmp_path / 'nowhere'}")
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "nowhere does not exist" in output and "Traceback" not in output


def test_results_go_to_a_folder_of_their_own_per_task(run_dir: Path, tmp_path: Path) -> None:
    overrides = ["task=localize", f"run={run_dir}", "samples=[0]", "eval.statistics=4"]
    done = run_script("evaluate.py", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (result,) = (tmp_path / "outputs").glob("*/*/*/*/evaluate.json")  # outputs/evaluate/<task>/<date>/<time>
    assert result.relative_to(tmp_path).parts[:3] == ("outputs", "evaluate", "localize")


def test_a_failed_command_leaves_no_directory(tmp_path: Path) -> None:
    done = run_script("evaluate.py", "task=edit", f"run={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert done.returncode == 2 and "nowhere does not exist" in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []
