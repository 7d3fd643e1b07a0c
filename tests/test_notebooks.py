"""The notebooks of docs/notebooks run headless through a real Jupyter kernel, each in a directory of its own, and
say what they should: a finite error below 1, an edit that changes its part's region most; they are committed
without outputs."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
# a last cell of the test's own: what the notebook computed, as one line of JSON
PROBE = 'import json; print(json.dumps({"error": factors.error, "inside": float(change[inside].mean()), ' \
        '"outside": float(change[~inside].mean())}))'  # fmt: skip


def execute(name: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """The notebook ``name`` with :data:`PROBE` appended, executed in ``directory`` (its working directory) by a
    Python kernel of this environment that imports this checkout's panda; ``panda-evaluate`` is the console
    script pip writes (an editable install of a clone may have none)."""
    scripts = directory / "bin"
    scripts.mkdir()
    script = scripts / "panda-evaluate"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom panda.cli.evaluate import main\nsys.exit(main())\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scripts}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("PANDA_CONFIG_PATH", raising=False)
    notebook = nbformat.read(ROOT / "docs" / "notebooks" / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
                   ).execute()  # fmt: skip
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list[str]:
    """The text of every output of ``kind`` (``stream``, or a MIME type such as ``image/png``)."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif kind in output.get("data", {}):
                found.append(output.data[kind])
    return found


def probed(notebook: nbformat.NotebookNode) -> dict[str, float]:
    return json.loads(notebook.cells[-1].outputs[-1].text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), path.name


def test_the_quickstart_fits_the_faces_edits_a_part_and_shows_where_an_appearance_is(tmp_path, monkeypatch):
    notebook = execute("quickstart.ipynb", tmp_path, monkeypatch)
    found = probed(notebook)
    assert math.isfinite(found["error"]) and found["error"] < 1
    assert found["inside"] > 5 * found["outside"]  # the eyebrows changed, hardly anything else
    assert len(outputs(notebook, "image/png")) == 3  # the parts, the localisation map, the edit: inline
    assert outputs(notebook, "application/vnd.jupyter.widget-view+json")  # training's notebook progress bars


def test_the_own_generator_notebook_wraps_fits_edits_saves_and_opens_its_run_with_evaluate(tmp_path, monkeypatch):
    notebook = execute("own_generator.ipynb", tmp_path, monkeypatch)
    found = probed(notebook)
    assert math.isfinite(found["error"]) and found["error"] < 1
    assert found["inside"] > 5 * found["outside"]
    assert (tmp_path / "runs" / "tiny_gan" / "factors.pt").is_file()
    result = json.loads((tmp_path / "runs" / "tiny_gan_edit" / "evaluate.json").read_text())
    assert (result["task"], result["generator"], result["samples"]) == ("edit", "tiny_gan", [0, 1, 2, 3])
    assert not any("error:" in text for text in outputs(notebook, "stream"))
