"""Latency of the studio as its user sees it: from an action in the browser to the new picture on the page.

For each case, ``evaluate.py task=studio`` serves a run with made-up factors (orthonormal random appearances,
uniform random parts: what the factors learnt does not change the time) at the generator's default layer, and
the system's ``chromium`` (headless, through Playwright) drives the page. The page itself times each action
(``performance.now()``), from the key press or the click to the new image decoded:

- **slider**: one step of the strength slider (the keyboard's arrow) -> the edited image;
- **part click**: a click on the parts image that chooses another part (the strength is not 0) -> the edited image;
- **preview gallery**: the same click -> every preview of the part in the gallery (``2 R_C`` of them: each
  appearance at plus and minus ``eval.preview.strength``), the pictures in view decoded.

The cases: the DCGAN faces at the default ranks (48 parts, 128 appearances), with 1 and 2 torch threads, and
StyleGAN2 with random weights at 256 px (``gen.random_init=true``; 8 parts, 16 appearances: a smoke of the page
on a second generator, a run without part labels)::

    python experiments/studio_latency.py                   # writes experiments/results/studio_latency.md
    python experiments/studio_latency.py --cases dcgan-1 --slider 10 --clicks 3 --out /tmp/latency.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from playwright.sync_api import Page, sync_playwright

from panda.base.factors_file import CHECKSUM, checksum
from panda.base.files import atomic_write, save_torch
from panda.generators import load_generator
from panda.method.factorization import orthonormalize
from panda.uses.visualize import upsampled_parts

ROOT = Path(__file__).resolve().parents[1]
READING = "\n## Reading\n"  # the hand-written part of the results file, kept when the table is rewritten
DISPLAY = 256  # eval.display: the parts image's pixels, in which a click is reported

# In the page: the time of every key press and click, and of every new edited image once decoded.
TIMING = """
window.marks = []; window.shown = [];
for (const type of ['keydown', 'pointerdown']) {
  document.addEventListener(type, () => marks.push(performance.now()), true);
}
let last = null;
new MutationObserver(async () => {
  const img = document.querySelector('#edited img');
  if (!img || img.src === last) return;
  last = img.src;
  try { await img.decode(); } catch (error) {}
  shown.push(performance.now());
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
"""
# In the page: the previews of ``part`` are all in, and their pictures in view decoded.
GALLERY_DONE = """(part) => {
  const text = document.querySelector('#preview-progress')?.innerText ?? '';
  const imgs = [...document.querySelectorAll('#previews img')].filter(i => i.getBoundingClientRect().top < innerHeight);
  return text.includes(`previews of part ${part}:`) && imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth);
}"""


@dataclass(frozen=True)
class Case:
    generator: str
    layer: str  # the generator's default layer
    random_init: bool
    net: dict  # options of the generator's net (conf/gen/<generator>.yaml)
    parts: int
    appearances: int
    threads: int
    statistics: int  # eval.statistics: samples behind the thresholds, computed at start-up


def stylegan2_arch(resolution: int) -> dict:
    """StyleGAN2 FFHQ's architecture (``conf/gen/stylegan2_ffhq.yaml``) at ``resolution`` px."""
    arch = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "gen" / "stylegan2_ffhq.yaml").net.arch)
    return {"arch": {**arch, "img_resolution": resolution}}


STYLEGAN2 = Case("stylegan2_ffhq", "synthesis.b16.conv1", True, stylegan2_arch(256), 8, 16, 2, 20)
CASES = {
    "dcgan-1": ("DCGAN faces, 64 px", Case("dcgan_faces", "main.8", False, {}, 48, 128, 1, 100)),
    "dcgan-2": ("DCGAN faces, 64 px", Case("dcgan_faces", "main.8", False, {}, 48, 128, 2, 100)),
    "stylegan2-256": ("StyleGAN2 (random weights), 256 px", STYLEGAN2),
}


def made_up_run(case: Case, directory: Path) -> tuple[Path, torch.Tensor, tuple[int, int]]:
    """A run directory of ``case``'s generator with made-up factors at its layer (no labels), ``P`` and ``(H, W)``."""
    net = load_generator(case.generator, random_init=case.random_init, **case.net)
    shape = net.check_layer(case.layer)
    generator = torch.Generator().manual_seed(0)
    A = orthonormalize(torch.randn(shape[0], case.appearances, generator=generator))
    P = torch.rand(shape[1] * shape[2], case.parts, generator=generator)
    record = {"A": A, "P": P, "generator": case.generator, "layer": case.layer, "feature_shape": list(shape)}
    record |= {"ranks": {"parts": case.parts, "appearances": case.appearances}}
    gen = {"name": case.generator, "random_init": case.random_init, "net": case.net}
    record["config"] = yaml.safe_dump({"gen": gen})
    directory.mkdir(parents=True)
    save_torch({**record, CHECKSUM: checksum(record)}, directory / "factors.pt")
    return directory, P, shape[1:]


def serve(run: Path, case: Case, out: Path) -> tuple[subprocess.Popen, str]:
    """The studio on ``run`` in a process of its own, and its URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(ROOT / "evaluate.py"), "task=studio", f"run={run}", f"eval.port={port}"]
    command += [f"eval.threads={case.threads}", f"eval.statistics={case.statistics}", f"hydra.run.dir={out}"]
    log = (out.parent / "studio.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 900
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the studio did not start: {(out.parent / 'studio.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return process, url
        except OSError:
            time.sleep(0.5)


def timed(page: Page, action: Callable[[], None], timeout_ms: float) -> float:
    """Seconds from ``action``'s key press or click to the next edited image decoded, in the page's clock."""
    count = page.evaluate("shown.length")
    action()
    page.wait_for_function(f"shown.length > {count}", timeout=timeout_ms, polling="raf")
    return page.evaluate("(shown.at(-1) - marks.at(-1)) / 1000")


def two_parts(P: torch.Tensor, hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Two pixels ``(x, y, part)`` of the parts image whose strongest parts differ from each other and from part 0
    (the page's first), so that each click of them in turn chooses another part."""
    strongest = upsampled_parts(P, hw, DISPLAY).argmax(0)
    pixels: list[tuple[int, int, int]] = []
    for y, x in torch.nonzero(strongest != 0).tolist():
        if all(int(strongest[y, x]) != part for _, _, part in pixels):
            pixels.append((x, y, int(strongest[y, x])))
    return pixels[:2]


def measure(label: str, case: Case, slider: int, clicks: int, chromium: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as folder:
        run, P, hw = made_up_run(case, Path(folder) / "run")
        pixels = two_parts(P, hw)
        load = os.getloadavg()[0]
        start = time.monotonic()
        process, url = serve(run, case, Path(folder) / "out")
        started = time.monotonic() - start
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.set_default_timeout(900_000)
                page.add_init_script(TIMING)
                start = time.monotonic()
                page.goto(url)
                page.locator("#previews").scroll_into_view_if_needed()  # the images stay in view beside it
                page.wait_for_function(GALLERY_DONE, arg="0", polling="raf")
                opened = time.monotonic() - start
                timeout = 300_000
                page.locator("#strength input[type=range]").focus()
                steps = [timed(page, lambda: page.keyboard.press("ArrowRight"), timeout) for _ in range(slider)]
                box = page.locator("#parts img").bounding_box()  # the square picture drawn centred in it
                scale = min(box["width"], box["height"]) / DISPLAY
                left, top = (box["width"] - scale * DISPLAY) / 2, (box["height"] - scale * DISPLAY) / 2
                part_clicks, galleries = [], []
                for i in range(clicks):
                    x, y, part = pixels[i % 2]

                    def click(x: int = x, y: int = y) -> None:
                        where = {"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale}
                        page.locator("#parts img").click(position=where)

                    part_clicks.append(timed(page, click, timeout))
                    page.wait_for_function(GALLERY_DONE, arg=str(part), polling="raf")
                    galleries.append(page.evaluate("(performance.now() - marks.at(-1)) / 1000"))
                browser.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    ms = 1000
    row: dict[str, float | str] = {"case": label, "R_S x R_C": f"{case.parts} x {case.appearances}"}
    row |= {"threads": str(case.threads), "load": load}
    for name, times in (("slider", steps), ("part click", part_clicks), ("preview gallery", galleries)):
        row[f"{name} p50 ms"] = float(np.percentile(times, 50)) * ms
        row[f"{name} p95 ms"] = float(np.percentile(times, 95)) * ms
    row |= {"page open to previews s": opened, "start-up s": started}
    return row


def table(rows: list[dict[str, float | str]]) -> str:
    def cell(value: float | str) -> str:
        return value if isinstance(value, str) else f"{value:.3g}" if value < 100 else f"{value:.0f}"

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join([*lines, *("| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--slider", type=int, default=30, help="timed slider steps per case (StyleGAN2: a third)")
    parser.add_argument("--clicks", type=int, default=10, help="timed part clicks per case (StyleGAN2: a third)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "studio_latency.md")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    rows = []
    for key in args.cases:
        label, case = CASES[key]
        fewer = 3 if case.generator != "dcgan_faces" else 1  # a StyleGAN2 update takes about a second on a CPU
        rows.append(measure(label, case, max(2, args.slider // fewer), max(2, args.clicks // fewer), chromium))
        print(table(rows[-1:]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    text = (
        "# Studio: latency in the browser\n\n"
        "`python experiments/studio_latency.py` (see its docstring): the time from a key press or click in headless "
        "Chromium to the new picture decoded on the page, timed by the page; made-up factors at each generator's "
        "default layer.\n\n"
        f"{table(rows)}\n\n"
        "slider: one step of the strength slider -> the edited image; part click: a click on the parts image that "
        "chooses another part -> the edited image; preview gallery: the same click -> every preview of the part "
        "(2 R_C) in the gallery; page open to previews: from opening the page to the first gallery; start-up: "
        "from the command to the page served (the localisation statistics included). threads: `eval.threads`; "
        f"load: the machine's 1-minute load average when the row started; {machine}.\n"
    )
    previous = args.out.read_text().partition(READING)[2] if args.out.is_file() else ""  # the hand-written reading
    atomic_write(args.out, (text + (f"{READING}{previous}" if previous else "")).encode())
    print(text)


if __name__ == "__main__":
    main()
