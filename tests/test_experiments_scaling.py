"""``experiments/scaling_methods.py`` runs end to end on its tiny setting; ``experiments/gpu.py`` refuses without a
CUDA GPU."""

import re

import pytest

from tests.conftest import run_script


def table(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the markdown table under the heading ``title``: first cell -> the other cells."""
    blocks = [block.strip() for block in text.split(f"\n{title}\n", 1)[1].split("\n\n")]
    lines = next(block for block in blocks if block.startswith("|")).splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in rows[2:]}


@pytest.mark.slow  # three measured child processes: about a minute on 2 idle cores
def test_scaling_script_measures_and_extrapolates_each_method_and_keeps_the_reading(tmp_path):
    report = tmp_path / "scaling_methods.md"
    report.write_text("# old tables\n\n## Reading\n\nWritten by hand.\n")
    done = run_script("experiments/scaling_methods.py", "--tiny", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "# old tables" not in text and text.endswith("## Reading\n\nWritten by hand.\n")

    seconds = table(text, "## Seconds to find the directions, N = 2")
    assert list(seconds) == ["ReSeFa"] and re.fullmatch(r"\d+\.\d s", seconds["ReSeFa"][0])  # fitted on 2: measured
    at_64 = table(text, "## Seconds at the benchmark's own sample counts")["ReSeFa"][0]
    assert re.fullmatch(r"≈ \d+(\.\d)? (s|min|h) \*", at_64)  # 64 calibration samples: extrapolated
    assert re.fullmatch(r"[\d,]+ MiB", table(text, "## Peak memory, N = 2")["ReSeFa"][0])
    fixed, per_sample, how = table(text, "## Costs per sample")["DCGAN faces 64 px"][1:]
    assert float(per_sample) > 0 and "fitted on 1 and 2 calibration samples" in how
    measured = float(seconds["ReSeFa"][0].removesuffix(" s"))
    assert abs(float(fixed) + 2 * float(per_sample) - measured) <= 0.05 * measured + 0.05  # the line meets its point

    ran = table(text, "## What ran")
    assert list(ran) == ["dcgan64: forwards", "dcgan64: resefa, 1 and 2 samples"]
    for wall, peak, load in ran.values():
        assert float(wall) > 0 and int(peak.replace(",", "")) > 100  # a child with torch and the generator
        assert re.fullmatch(r"\d+\.\d\d -> \d+\.\d\d", load)
    assert re.search(r"Load average \(1, 5, 15 min\): [\d.]+, [\d.]+, [\d.]+ at the start", text)
    assert (tmp_path / "scaling_methods.png").read_bytes().startswith(b"\x89PNG")


def test_gpu_script_refuses_in_one_line_without_a_cuda_gpu():
    done = run_script("experiments/gpu.py", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert "needs a CUDA GPU" in done.stderr and "python experiments/gpu.py" in done.stderr
