"""End to end: ``evaluate.py task=studio`` on a free local port, driven by headless Chromium.

Playwright drives the system's ``chromium`` (Debian's package; nothing downloads a browser). The app
and the browser are stopped in the fixtures' teardown, also when a test fails. Set
``STUDIO_SCREENSHOT=docs/images/studio.png`` to keep the page's screenshot.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")
START_SECONDS = 300  # the app loads torch, Gradio and the generator, and computes the statistics
# every text the preview progress shows, kept in window.progress
PROGRESS = """
window.progress = [];
new MutationObserver(() => {
  const text = document.querySelector('#preview-progress')?.innerText;
  if (text && text !== window.progress.at(-1)) window.progress.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class App:
    """A studio served by ``evaluate.py task=studio``: its URL and its directory (``run``, the run it edits and
    saves into; ``out``, the task's output)."""

    url: str
    directory: Path
    process: subprocess.Popen

    def stop(self) -> int:
        """Stop it as Ctrl-C does (it then writes ``evaluate.json``); its exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@pytest.fixture(scope="module")
def app(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One studio on a copy of :func:`tests.conftest.run_dir`, shared by the module's tests; stopped afterwards."""
    directory = tmp_path_factory.mktemp("studio")
    shutil.copytree(run_dir, directory / "run")
    port = free_port()
    command = [sys.executable, str(ROOT / "evaluate.py"), "task=studio", f"run={directory / 'run'}"]
    command += [f"eval.port={port}", "eval.statistics=24", "eval.batch_size=12", "eval.preview.batch_size=8"]
    command += ["eval.row=3", f"hydra.run.dir={directory / 'out'}"]
    log = (directory / "app.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    app = App(f"http://127.0.0.1:{port}/", directory, process)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"the studio exited: {(directory / 'app.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the studio did not start"
            try:
                urllib.request.urlopen(app.url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        yield app
    finally:
        app.stop()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()
    assert not browser.is_connected()


def open_tab(browser: sync_api.Browser, url: str, elsewhere: list[str]) -> sync_api.Page:
    """A new tab showing ``url``; requests to other hosts than the app's go to ``elsewhere``."""
    page = browser.new_page(viewport={"width": 1300, "height": 1300})
    page.on(
        "request", lambda request: None if request.url.startswith((url, "data:")) else elsewhere.append(request.url)
    )
    page.set_default_timeout(120_000)
    page.add_init_script(PROGRESS)
    page.goto(url)
    page.wait_for_selector("#edited img")
    return page


def text_of(page: sync_api.Page, element: str) -> str:
    """What a text box shows."""
    return page.locator(f"{element} textarea, {element} input").first.input_value()


def wait_for_text(page: sync_api.Page, element: str, text: str) -> None:
    """Until ``element`` (a text box or other) shows ``text``."""
    page.wait_for_function(
        "([selector, text]) => { const e = document.querySelector(selector);"
        " return (e.querySelector('textarea, input')?.value ?? e.innerText).includes(text); }",
        arg=[element, text],
    )


def previews_done(page: sync_api.Page) -> list[str]:
    """The captions of the preview gallery once every preview is in."""
    wait_for_text(page, "#preview-progress", "previews of")
    return page.locator("#previews .caption-label").all_inner_texts()


def picture(page: sync_api.Page, element: str) -> tuple[str, np.ndarray]:
    """The address and the pixels of the image shown in ``element``."""
    source = page.locator(f"{element} img").first.get_attribute("src")
    with Image.open(io.BytesIO(page.request.get(source).body())) as image:
        return source, np.asarray(image.convert("RGB")).astype(int)


def wait_for_new(page: sync_api.Page, element: str, old: str) -> np.ndarray:
    """The pixels of ``element``'s image once it is no longer ``old``."""
    page.wait_for_function(
        "([selector, old]) => document.querySelector(selector)?.getAttribute('src') !== old",
        arg=[f"{element} img", old],
    )
    return picture(page, element)[1]


def move_strength(page: sync_api.Page, steps: int) -> None:
    """Move the strength slider by ``steps`` steps with the keyboard, as a user dragging it would."""
    page.locator("#strength input[type=range]").focus()
    for _ in range(steps):
        page.keyboard.press("ArrowRight")


def test_edit_a_part_in_the_browser_and_tabs_are_independent(
    app: App, browser: sync_api.Browser, tmp_path: Path
) -> None:
    elsewhere = []
    page = open_tab(browser, app.url, elsewhere)
    _, original = picture(page, "#original")
    assert page.locator("#part-legend").get_by_text("0: chin").is_visible()  # labels from factors.pt

    source = picture(page, "#parts")[0]
    page.locator("#part-legend").get_by_text("3: blob 3").click()
    wait_for_new(page, "#parts", source)  # part 3 outlined
    box = page.locator("#parts img").bounding_box()
    page.locator("#parts img").click(position={"x": box["width"] * 0.4, "y": box["height"] * 0.85})  # part 0
    page.wait_for_function("document.querySelector('#part-legend input[value=\"0\"]').checked")
    page.locator("#appearance input").fill("2")

    source = picture(page, "#edited")[0]
    move_strength(page, 8)
    first = wait_for_new(page, "#edited", source)  # updates while the slider moves
    source = picture(page, "#edited")[0]
    move_strength(page, 12)
    wait_for_new(page, "#edited", source)
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '10'")
    time.sleep(1)  # the last move's update
    edited = picture(page, "#edited")[1]
    change = np.abs(edited - original)
    assert change[40:].mean() > 10 and change[:24].mean() < 0.5  # inside part 0 (bottom half), hardly outside
    assert (first != original).any()

    page.get_by_role("button", name="add to stack").click()
    page.get_by_text("edit stack (1)").wait_for()

    other = open_tab(browser, app.url, elsewhere)
    other.get_by_text("edit stack (0)").wait_for()
    np.testing.assert_array_equal(picture(other, "#edited")[1], picture(other, "#original")[1])
    assert other.locator("#strength input[type=number]").input_value() == "0"

    other.locator("#sample textarea, #sample input").first.fill("not a seed")
    other.locator("#sample textarea, #sample input").first.press("Enter")
    wait_for_text(other, "#message", "is not a number")
    other.locator("#sample textarea, #sample input").first.fill("5")
    other.get_by_role("button", name="load sample").click()
    other.wait_for_function("document.querySelector('#message textarea, #message input').value === ''")

    assert page.get_by_text("edit stack (1)").is_visible()  # the other tab did not touch this one
    np.testing.assert_array_equal(picture(page, "#edited")[1], edited)
    page.get_by_role("tab", name="refine").click()
    page.get_by_role("button", name="refine parts for this sample").click()
    page.get_by_text("error of this sample").wait_for()
    page.get_by_role("button", name="export PNG and before/after GIF").click()
    page.locator("#downloads").get_by_text("sample0_before_after").wait_for()
    page.locator("#edit-name textarea, #edit-name input").first.fill("ginger")
    page.get_by_role("button", name="save to the edit zoo").click()
    wait_for_text(page, "#save-result", "saved 'ginger' to")  # next to the button
    assert (app.directory / "run" / "edits" / "dcgan_faces.yaml").is_file()
    page.get_by_role("tab", name="previews").click()
    previews_done(page)
    screenshot = os.environ.get("STUDIO_SCREENSHOT")
    page.screenshot(path=screenshot or tmp_path / "studio.png", full_page=True)

    page.locator(".stack-remove").first.click()
    page.get_by_text("edit stack (0)").wait_for()
    assert elsewhere == []  # no fonts, scripts or analytics from the internet


def test_reset_undo_and_clear_all(app: App, browser: sync_api.Browser) -> None:
    page = open_tab(browser, app.url, [])
    original = picture(page, "#original")[1]
    source = picture(page, "#edited")[0]
    move_strength(page, 10)
    wait_for_new(page, "#edited", source)
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '5'")
    time.sleep(1)  # the last move's update
    source, edited = picture(page, "#edited")
    assert (edited != original).any()
    page.locator("#strength [data-testid=reset-button]").click()  # the slider's reset: the image follows
    np.testing.assert_array_equal(wait_for_new(page, "#edited", source), original)
    assert text_of(page, "#strength") == "0"
    page.get_by_role("button", name="add to stack").click()  # nothing to add: the strength is 0
    wait_for_text(page, "#message", "strength 0")
    assert page.get_by_text("edit stack (0)").is_visible()

    move_strength(page, 6)
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '3'")
    page.get_by_role("button", name="add to stack").click()
    page.get_by_text("edit stack (1)").wait_for()
    source, stacked = picture(page, "#edited")
    assert (stacked != original).any()
    page.get_by_role("button", name="clear all").click()
    page.get_by_text("edit stack (0)").wait_for()
    np.testing.assert_array_equal(wait_for_new(page, "#edited", source), original)
    source = picture(page, "#edited")[0]
    page.get_by_role("button", name="undo").click()  # the stack is back
    page.get_by_text("edit stack (1)").wait_for()
    np.testing.assert_array_equal(wait_for_new(page, "#edited", source), stacked)
    page.get_by_role("button", name="undo").click()  # not added yet: the current edit again
    page.get_by_text("edit stack (0)").wait_for()
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '3'")
    np.testing.assert_array_equal(picture(page, "#edited")[1], stacked)
    page.get_by_role("button", name="undo").click()
    wait_for_text(page, "#message", "nothing to undo")
    page.close()


def test_a_bad_number_is_a_message(app: App, browser: sync_api.Browser) -> None:
    page = open_tab(browser, app.url, [])
    source = picture(page, "#edited")[0]
    for box, value, expected in [
        ("#appearance input", "3.5", "appearance 3.5 is not a whole number"),
        ("#appearance input", "", "no appearance given"),
        ("#strength input[type=number]", "25", "strength 25 is outside [-20, 20]"),  # the slider ends at 20
    ]:
        page.locator(box).fill(value)
        wait_for_text(page, "#message", expected)
        assert picture(page, "#edited")[0] == source  # (leaving the box, Gradio then sets the slider's end)
    page.close()


def test_previews_come_in_batches_sorted_and_a_click_makes_one_the_current_edit(
    app: App, browser: sync_api.Browser
) -> None:
    page = open_tab(browser, app.url, [])
    wait_for_text(page, "#preview-progress", "previews of part 0")  # 16 appearances at +-6: 32, 8 per pass
    shown = page.evaluate("window.progress")  # the counts as they came, then the sorted previews
    assert "painting each appearance on part 0: chin: 8 / 32" in shown and "32 previews of part 0" in shown[-1]
    best = re.findall(r"a(\d+) ([+-]6) \((\d+)\)", shown[-1].split("Most: ")[1])  # the five that change it most
    changes = [int(change) for *_, change in best]
    assert len(best) == 5 and changes == sorted(changes, reverse=True)
    sheet = picture(page, "#previews")[1]
    assert sheet.shape == (4 * 78, 8 * 66, 3)  # 32 pictures of 64 px, 8 a row, each captioned

    source = picture(page, "#edited")[0]
    box = page.locator("#previews img").bounding_box()
    scale = box["width"] / sheet.shape[1]
    page.locator("#previews img").click(position={"x": (66 + 32) * scale, "y": 32 * scale})  # the second
    appearance, alpha, _ = best[1]
    page.wait_for_function(f"document.querySelector('#strength input[type=number]').value === '{int(alpha)}'")
    assert text_of(page, "#appearance") == appearance
    assert (wait_for_new(page, "#edited", source) != picture(page, "#original")[1]).any()

    page.locator("#part-legend").get_by_text("3: blob 3").click()  # another part: its previews
    wait_for_text(page, "#preview-progress", "previews of part 3: blob 3")
    page.close()


def test_the_state_survives_a_reload_and_the_row_shows_the_stack(app: App, browser: sync_api.Browser) -> None:
    page = open_tab(browser, app.url, [])
    page.locator("#sample textarea, #sample input").first.fill("5")
    page.get_by_role("button", name="load sample").click()
    page.get_by_role("button", name="remove part (preview)").click()
    wait_for_text(page, "#message", "removal preview: appearance")
    page.get_by_role("button", name="add to stack").click()
    page.get_by_text("edit stack (1)").wait_for()
    move_strength(page, 16)
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '8'")
    time.sleep(1)  # the last move's update
    edited = picture(page, "#edited")[1]
    page.reload()
    page.get_by_text("edit stack (1)").wait_for()
    assert text_of(page, "#sample") == "5" and text_of(page, "#strength") == "8"
    np.testing.assert_array_equal(picture(page, "#edited")[1], edited)

    page.get_by_role("tab", name="3 samples").click()
    page.get_by_role("button", name="show the edits on 3 samples").click()
    page.locator("#row .thumbnail-item").nth(2).wait_for()
    assert page.locator("#row .caption-label").all_inner_texts() == ["sample 5", "sample 6", "sample 7"]
    for tile in page.locator("#row img").all():  # before | after: part 0 (the bottom half) changed
        with Image.open(io.BytesIO(page.request.get(tile.get_attribute("src")).body())) as image:
            pixels = np.asarray(image.convert("RGB")).astype(int)
        change = np.abs(pixels[:, 64:] - pixels[:, :64])
        assert change[40:].mean() > 10 and change[:24].mean() < 0.5
    page.close()


def test_exports_are_listed_in_evaluate_json_when_the_studio_stops(app: App, browser: sync_api.Browser) -> None:
    """The module's last test: it stops the studio."""
    page = open_tab(browser, app.url, [])
    move_strength(page, 4)
    page.get_by_role("button", name="export PNG and before/after GIF").click()
    page.locator("#downloads").get_by_text("_before_after").wait_for()
    page.close()
    assert app.stop() == 0
    files = json.loads((app.directory / "out" / "evaluate.json").read_text())["files"]
    assert {Path(path).name for path in files.values()} == {"sample0_before_after.gif", "sample0_edited.png"}
    assert all((app.directory / "out" / key).is_file() for key in files)
