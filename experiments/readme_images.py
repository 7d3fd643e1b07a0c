"""Regenerate every image of README.md and docs/ with the commands shown next to it.

Trains the default run once (``python train.py hydra.run.dir=runs/faces`` in the docs; here into
``outputs/readme_images/faces``), runs each ``evaluate.py`` command the docs show beside an image (with
``run=`` pointing at that run and ``hydra.run.dir`` at ``outputs/readme_images/<image>``), copies the
files into ``docs/images/`` and prints the numbers the docs quote.

    python experiments/readme_images.py                                  # trains first (~2 min on 2 cores)
    python experiments/readme_images.py --run outputs/readme_images/faces   # reuse a default run
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
WORK = ROOT / "outputs" / "readme_images"
RUN = "runs/faces"  # the run directory the docs' commands name

# docs/images/<image> <- <file> written by `python train.py`
TRAINING = {
    "default_parts.png": "parts.png",
    "default_overlay.png": "overlay.png",
    "default_error_curve.png": "error_curve.png",
}
# docs/images/<image> made by a test rather than by this script: the studio's page, screenshot by its browser test
# (`STUDIO_SCREENSHOT=docs/images/studio.png python -m pytest tests/test_studio_browser.py`)
FROM_TESTS = {"studio.png": "tests/test_studio_browser.py"}
# docs/images/<image> <- (`python evaluate.py <arguments>` exactly as the docs show it, <file> it writes)
EVALUATIONS = {
    "edit_blue_eyes_strip.png": (f"task=edit run={RUN} eval.name=blue_eyes samples=[0,1,2,3]", "edit_strip.png"),
    # the zoo's semantic edits, found by the ROIR benchmark's search (docs/roir.md)
    "edit_eyes_open_strip.png": (f"task=edit run={RUN} eval.name=eyes_open samples=[0,1,2,3]", "edit_strip.png"),
    "edit_open_mouth_strip.png": (f"task=edit run={RUN} eval.name=open_mouth samples=[0,1,2,3]", "edit_strip.png"),
    "remove_eyebrows.png": (f"task=remove run={RUN} eval.part=eyebrows samples=[0,1,2,3]", "remove_before_after.png"),
    # the appearance the removal above paints over the eyebrows (its `background`)
    "localize_background.png": (
        f"task=localize run={RUN} eval.statistics=500 samples=[0,1,2,3]",
        "localize_appearance{background}.png",
    ),
    "refine_overlays.png": (f"task=refine run={RUN} eval.steps=200 samples=[0,1,2,3]", "refine_overlays.png"),
}


def python(script: str, *arguments: str) -> None:
    """``python <script> <arguments>`` from the project root; stops on failure."""
    command = [sys.executable, str(ROOT / script), *arguments]
    print("$", shlex.join(["python", script, *arguments]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished default training run to reuse instead of training")
    args = parser.parse_args()
    run = args.run
    if run is None:
        run = WORK / "faces"
        shutil.rmtree(run, ignore_errors=True)  # a fresh run, not a resumed one
        python("train.py", f"hydra.run.dir={run}")
    for image, produced in TRAINING.items():
        shutil.copyfile(run / produced, IMAGES / image)
    results = {}
    for image, (arguments, produced) in EVALUATIONS.items():
        out = WORK / Path(image).stem
        shutil.rmtree(out, ignore_errors=True)
        python("evaluate.py", *shlex.split(arguments.replace(f"run={RUN}", f"run={run}")), f"hydra.run.dir={out}")
        background = results.get("remove_eyebrows.png", {}).get("background")
        shutil.copyfile(out / produced.format(background=background), IMAGES / image)
        results[image] = json.loads((out / "evaluate.json").read_text())

    metrics = json.loads((run / "metrics.json").read_text())
    removal = results["remove_eyebrows.png"]
    coverage = sorted(enumerate(removal["surroundings_coverage"]), key=lambda c: -c[1])
    refined = results["refine_overlays.png"]
    print(f"default run: validation relative error {metrics['val_rel_error']:.4f} after {metrics['steps']} steps")
    print(
        f"removal: background {removal['background']}, coverage of the surroundings (appearance, share) {coverage[:3]}"
    )
    pairs = zip(refined["error_before"], refined["error_after"], strict=True)
    print("refinement errors before -> after:", ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in pairs))
    print(f"images written to {IMAGES}")


if __name__ == "__main__":
    main()
