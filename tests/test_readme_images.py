"""``experiments/readme_images.py`` makes every picture README.md and docs/ show, with the commands docs show."""

import importlib.util
import re

from tests.conftest import ROOT

IMAGES = ROOT / "docs" / "images"


def load_script():
    spec = importlib.util.spec_from_file_location("readme_images", ROOT / "experiments" / "readme_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_image_shown_is_made_by_the_script_and_no_other_lies_in_docs_images():
    script = load_script()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = {name for page in pages for name in re.findall(r"images/([\w.-]+\.png)", page.read_text())}
    made = set(script.TRAINING) | set(script.EVALUATIONS) | set(script.FROM_TESTS)
    assert shown <= made
    assert made == {path.name for path in IMAGES.glob("*.png")}


def test_the_docs_show_the_command_behind_each_image():
    script = load_script()
    docs = re.sub(r" +", " ", (ROOT / "docs" / "editing.md").read_text())
    for image, (arguments, _) in script.EVALUATIONS.items():
        assert f"python evaluate.py {arguments}" in docs, image
        assert f"images/{image}" in docs, image
