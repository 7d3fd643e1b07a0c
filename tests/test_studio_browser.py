"""End to end: ``evaluate.py task=studio`` on a free local port, driven by headless Chromium.

Playwright drives the system's ``chromium`` (Debian's package; nothing downloads a browser). The app
and the browser are stopped in the fixtures' teardown, also when a test fails. Set
``STUDIO_SCREENSHOT=docs/images/studio.png`` to keep the page's screenshot.
"""

from __future__ import annotations

import io
import json
import os
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
    command += [f"eval.port={port}", "eval.statistics=24", "eval.batch_size=12", f"hydra.run.dir={directory / 'out'}"]
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
    page.goto(url)
    page.wait_for_selector("#edited img")
    return page


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

    page.locator("#part-legend").get_by_text("3: blob 3").click()
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
    other.wait_for_function(
        "document.querySelector('#message textarea, #message input').value.includes('is not a number')"
    )
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
    page.wait_for_function("document.querySelector('#message textarea, #message input').value.startsWith('saved')")
    assert (app.directory / "run" / "edits" / "dcgan_faces.yaml").is_file()
    screenshot = os.environ.get("STUDIO_SCREENSHOT")
    page.screenshot(path=screenshot or tmp_path / "studio.png", full_page=True)

    page.locator(".stack-remove").first.click()
    page.get_by_text("edit stack (0)").wait_for()
    assert elsewhere == []  # no fonts, scripts or analytics from the internet


def test_reset_returns_the_edited_image_to_the_original(app: App, browser: sync_api.Browser) -> None:
    page = open_tab(browser, app.url, [])
    source, original = picture(page, "#original")
    source = picture(page, "#edited")[0]
    move_strength(page, 10)
    edited = wait_for_new(page, "#edited", source)
    page.wait_for_function("document.querySelector('#strength input[type=number]').value === '5'")
    time.sleep(1)  # the last move's update
    source, edited = picture(page, "#edited")
    assert (edited != original).any()
    page.locator("#strength [data-testid=reset-button]").click()
    np.testing.assert_array_equal(wait_for_new(page, "#edited", source), original)
    assert page.locator("#strength input[type=number]").input_value() == "0"
    page.get_by_role("button", name="add to stack").click()  # nothing to add: the strength is 0
    page.wait_for_function("document.querySelector('#message textarea, #message input').value.includes('strength 0')")
    assert page.get_by_text("edit stack (0)").is_visible()


def message(page: sync_api.Page) -> str:
    return page.locator("#message textarea, #message input").first.input_value()


@pytest.mark.parametrize(
    ("box", "value", "expected"),
    [
        ("#strength input[type=number]", "25", "strength 25 is outside [-20, 20]"),
        ("#appearance input", "3.5", "appearance 3.5 is not a whole number"),
        ("#appearance input", "", "no appearance given"),
    ],
)
def test_a_bad_number_is_a_message(app: App, browser: sync_api.Browser, box: str, value: str, expected: str) -> None:
    page = open_tab(browser, app.url, [])
    source = picture(page, "#edited")[0]
    page.locator(box).fill(value)
    page.wait_for_function(
        "(text) => document.querySelector('#message textarea, #message input').value.includes(text)", arg=expected
    )
    assert picture(page, "#edited")[0] == source
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
