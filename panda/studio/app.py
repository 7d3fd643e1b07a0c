"""The studio's page: Gradio components wired to :class:`panda.studio.core.Studio`, one :class:`Session` per tab.

Every callback is a :class:`Studio` method on the tab's ``gr.State`` and returns the components it changes;
bad input (a :class:`panda.base.errors.PandaError`) becomes a warning and a line in the page's message box,
nothing else changes, and the app keeps serving. The browser keeps a plain copy of the session
(:meth:`Studio.snapshot`, in ``gr.BrowserState``) from which a reloaded page restores it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from panda.base.errors import ConfigError, PandaError
from panda.studio.core import Session, Settings, Studio
from panda.uses.factors import Factors

log = logging.getLogger(__name__)
KEEP_SECONDS = 300  # how long the studio keeps the PNG file of a picture it showed (Gradio's cache keeps a copy)
PREVIEW_SECONDS = 0.25  # the previews' sheet is redrawn at most this often while they come (and at the end)

IMAGE_CSS = """
.studio-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.pixelated img { image-rendering: pixelated; }
.pixelated .grid-container { grid-template-columns: repeat(auto-fill, minmax(80px, 1fr)) !important; }
#row .grid-container { grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)) !important; }
#view { position: sticky; top: 0; align-self: flex-start; z-index: 10; background: var(--background-fill-primary); }
#part-legend .wrap { gap: 3px; }
#part-legend label { padding: 1px 6px; font-size: 12px; min-height: 0; }
#removal-hint, #save-result, #preview-progress { font-size: 13px; }
#previews .image-container { height: 420px !important; overflow-y: auto; }
#previews .image-container button, #previews .image-frame { height: auto !important; }
#previews img { width: 100% !important; height: auto !important; object-fit: fill !important; }
"""


def page_css(colours: Sequence[str]) -> str:
    """Images enlarged with crisp pixels, the legend compact, each choice framed in its part's colour (in the
    legend's order), the images kept in view while the controls scroll."""
    legend = (
        f"#part-legend label:nth-of-type({n + 1}) {{ border-left: 10px solid {c}; }}" for n, c in enumerate(colours)
    )
    return IMAGE_CSS + "\n".join(legend)


def guarded(fn: Callable[..., Any], message: gr.components.Component) -> Callable[..., Any]:
    """``fn`` (returning ``{component: value}``), with bad input shown as a warning and nothing else changed; for a
    generator, each of its yields."""

    def warn(error: PandaError) -> dict:
        gr.Warning(str(error))
        return {message: str(error)}

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)  # keeps the signature: Gradio passes gr.SelectData by its annotation
        def stream(*args: Any) -> Iterator[dict]:
            try:
                yield from fn(*args)
            except PandaError as error:
                yield warn(error)

        return stream

    @functools.wraps(fn)
    def call(*args: Any) -> dict:
        try:
            return fn(*args)
        except PandaError as error:
            return warn(error)

    return call


def build(studio: Studio, exports: Path, written: list[Path], pictures: Path) -> gr.Blocks:
    """The page of ``studio``; exported files go to fresh folders under ``exports``, and are appended to
    ``written``; the images shown are PNG files in ``pictures``.

    Gradio would write the PNG of an image array to its cache in place each time it is shown, so a browser reading
    the same picture meanwhile (shown again, or in another tab) got a truncated file. A file is copied into the cache
    atomically, once per content: the studio writes each picture atomically, named by its content, and keeps it
    for :data:`KEEP_SECONDS` (the cache keeps its copy).
    """
    factors, settings = studio.factors, studio.settings
    pruned = [time.monotonic()]

    def png(image: np.ndarray) -> str:
        data = io.BytesIO()
        Image.fromarray(image).save(data, format="PNG", compress_level=1)  # fast: pictures are small
        path = pictures / f"{hashlib.sha256(data.getvalue()).hexdigest()}.png"
        if time.monotonic() - pruned[0] > KEEP_SECONDS:
            pruned[0] = time.monotonic()
            for old in pictures.iterdir():
                with contextlib.suppress(FileNotFoundError):  # (another callback may prune at the same time)
                    if time.time() - old.stat().st_mtime > KEEP_SECONDS:
                        old.unlink()
        try:
            os.utime(path)  # shown again: kept KEEP_SECONDS more
        except FileNotFoundError:  # whole or not at all, as atomic_write, without its fsync: a picture need not last
            with tempfile.NamedTemporaryFile(dir=pictures, suffix=".tmp", delete=False) as handle:
                handle.write(data.getvalue())
            os.replace(handle.name, path)
        return str(path)

    def pngs(items: list[tuple[np.ndarray, str]]) -> list[tuple[str, str]]:
        return [(png(image), caption) for image, caption in items]

    low, high, step = settings.strength
    legend = studio.legend()

    title = f"panda studio: {factors.name}"
    image = {"interactive": False, "height": settings.display, "buttons": ["download"], "format": "png"}
    thumbnails = {"allow_preview": False, "format": "png", "elem_classes": "pixelated", "object_fit": "contain"}
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session, stack, order = gr.State(Session()), gr.State(()), gr.State(())
        saved = gr.BrowserState(None)  # the session's snapshot: a reload restores it
        preview_key = gr.Textbox(visible=False)  # the sample, part and stack the previews show: changes start them
        gr.Markdown(
            f"## {title}, layer `{factors.layer}`, {factors.parts} parts, {factors.appearances} appearances\n"
            "Click a part on the left image (or in the part list), pick what an appearance does to it in the previews "
            "(or an appearance by index) and move the strength: the edited image shows the stack and the current edit."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, elem_id="view"):
                with gr.Row():
                    images = {"parts": "parts (click one)", "original": "original", "edited": "edited"}
                    parts, original, edited = (
                        gr.Image(label=label, elem_id=key, elem_classes="studio-image", **image)
                        for key, label in images.items()
                    )
                with gr.Row():
                    tint = gr.Checkbox(True, label="tint the parts", elem_id="tint", scale=1)
                    message = gr.Textbox(label="messages", interactive=False, elem_id="message", scale=4)
                with gr.Row():
                    sample = gr.Textbox(settings.sample, label="sample (a number, or random)", elem_id="sample")
                    load_button = gr.Button("load sample")
                part = gr.Radio([(name, k) for k, name, _ in legend], value=0, label="part", elem_id="part-legend")
            with gr.Column(scale=2):
                with gr.Row():
                    appearance = gr.Number(0, label="appearance", precision=0, elem_id="appearance", scale=1)
                    strength = gr.Slider(low, high, value=0.0, step=step, label="strength", elem_id="strength", scale=3)
                with gr.Row():
                    add_button = gr.Button("add to stack", variant="primary")
                    undo_button = gr.Button("undo")
                    clear_button = gr.Button("clear all")
                remove_button = gr.Button("remove part (preview)")
                hint = gr.Markdown(elem_id="removal-hint")

                @gr.render(inputs=stack)
                def show_stack(entries: tuple) -> None:
                    gr.Markdown(f"#### edit stack ({len(entries)})")
                    for index, edit in enumerate(entries):
                        with gr.Row(elem_classes="stack-entry"):
                            text = f"{index}. part {studio.name(edit.part)}, appearance {edit.appearance}"
                            gr.Markdown(f"{text}, strength {edit.alpha:g}")
                            button = gr.Button("remove", size="sm", elem_classes="stack-remove", scale=0)
                            wire(button.click, change(studio.drop, index), [session, tint], full)

                with gr.Tabs():
                    with gr.Tab("previews", elem_id="previews-tab"):
                        progress = gr.Markdown(elem_id="preview-progress")
                        previews = gr.Image(
                            show_label=False,
                            buttons=[],
                            interactive=False,
                            format="png",
                            elem_id="previews",
                            elem_classes="pixelated",
                        )
                    with gr.Tab(f"{settings.row} samples", elem_id="row-tab"):
                        row_button = gr.Button(f"show the edits on {settings.row} samples (before | after)")
                        row = gr.Gallery(label="samples", height="auto", elem_id="row", **thumbnails)
                    with gr.Tab("appearances", elem_id="gallery-tab"):
                        gallery = gr.Gallery(
                            label="appearances on this sample (red: where each one is; click one to pick it)",
                            height=300,
                            elem_id="gallery",
                            **thumbnails,
                        )
                    with gr.Tab("parts", elem_id="part-gallery-tab"):
                        part_gallery = gr.Gallery(
                            label="parts on this sample (click one to pick it)",
                            height=300,
                            elem_id="part-gallery",
                            **thumbnails,
                        )
                    with gr.Tab("refine", elem_id="refine-tab"):
                        refine_button = gr.Button("refine parts for this sample")
                        refine_text = gr.Markdown()
                        with gr.Row():
                            global_parts = gr.Image(label="global parts", elem_classes="studio-image", **image)
                            refined_parts = gr.Image(label="refined parts", elem_classes="studio-image", **image)
                with gr.Row():
                    name = gr.Textbox(label="edit name", elem_id="edit-name", scale=3)
                    overwrite = gr.Checkbox(label="overwrite", scale=1)
                with gr.Row():
                    save_button = gr.Button("save to the edit zoo")
                    export_button = gr.Button("export PNG and before/after GIF")
                save_result = gr.Markdown(elem_id="save-result")
                files = gr.File(label="downloads", file_count="multiple", height=90, elem_id="downloads")

        # what every change of the current edit or the stack shows
        full = [session, saved, preview_key, part, appearance, strength, stack, parts, edited, hint, message]

        def wire(trigger: Callable, fn: Callable[..., Any], inputs: list, outputs: list, **options: Any) -> None:
            """``trigger`` calls ``fn``; the callbacks that change a session run one at a time (in one queue), so
            that each starts from the session the one before left (two quick clicks would otherwise both start
            from the same session, and the later result would undo the earlier)."""
            if session in outputs:
                options |= {"concurrency_id": "session", "concurrency_limit": 1}
            trigger(guarded(fn, message), inputs, [*outputs, message], **options)

        def shown(state: Session, tint_on: bool, before: Session | None = None, note: str = "") -> dict:
            """What of ``full`` differs for ``state`` from ``before`` (None: everything)."""
            views = {session: state, saved: studio.snapshot(state), message: note}
            views |= {part: state.part, appearance: state.appearance, strength: state.strength}
            views[preview_key] = repr((state.sample.index, state.part, state.stack))
            new = before is None or state.sample is not before.sample
            if new or state.stack != before.stack:
                views[stack] = state.stack
            if new or state.edits != before.edits:
                views[edited] = png(studio.live(state))
            if new or state.part != before.part:
                views |= {parts: png(studio.parts(state, tint=tint_on)), hint: studio.removal_hint(state)}
            return views

        def sample_views(state: Session, tint_on: bool, note: str = "") -> dict:
            """Everything of a newly loaded sample."""
            views = {sample: str(state.sample.index), original: png(studio.original(state)), row: []}
            views |= {gallery: pngs(studio.gallery(state)), part_gallery: pngs(studio.part_gallery(state))}
            return shown(state, tint_on, note=note) | views

        def start(state: Session, stored: Any, tint_on: bool, text: str) -> dict:
            """A new or reloaded page: the session the browser kept, else the configured sample."""
            if stored is None:
                return sample_views(studio.load(state, text), tint_on)
            try:
                return sample_views(studio.restore(stored), tint_on)
            except ConfigError as error:
                return sample_views(studio.load(state, text), tint_on, str(error))

        def load(state: Session, tint_on: bool, text: str) -> dict:
            return sample_views(studio.load(state, text), tint_on)

        def change(method: Callable[..., Session], *args: Any) -> Callable[..., dict]:
            """A callback showing ``method(state, *args, *values)``; ``values``: its inputs after the session."""

            def call(state: Session, tint_on: bool, *values: Any) -> dict:
                return shown(method(state, *args, *values), tint_on, state)

            return call

        def pick_part(state: Session, tint_on: bool, evt: gr.SelectData) -> dict:
            return shown(studio.part_at(state, *evt.index), tint_on, state)

        def pick_part_in_gallery(state: Session, tint_on: bool, evt: gr.SelectData) -> dict:
            return shown(studio.choose_part(state, evt.index), tint_on, state)

        def pick_preview(state: Session, tint_on: bool, shown_edits: tuple, evt: gr.SelectData) -> dict:
            return shown(studio.choose_edit(state, studio.preview_at(state, shown_edits, *evt.index)), tint_on, state)

        def pick_appearance(state: Session, evt: gr.SelectData) -> dict:
            state = studio.choose_appearance(state, evt.index)
            return {session: state, saved: studio.snapshot(state), appearance: state.appearance, edited: live(state)}

        def live(state: Session) -> Any:
            return png(studio.live(state)) if state.strength else gr.skip()

        def quick(method: Callable[[Session, Any], Session]) -> Callable[[Session, Any], dict]:
            """The appearance box and the slider: only the image changes (nothing when the session does not)."""

            def call(state: Session, value: Any) -> dict:
                new = method(state, value)
                if new == state:  # the second change event of the slider's reset, a strength set by a button
                    return {edited: gr.skip()}  # (an empty dict would be one value)
                return {session: new, saved: studio.snapshot(new), edited: png(studio.live(new)), message: ""}

            return call

        def remove(state: Session, tint_on: bool) -> dict:
            new = studio.remove_part(state)
            note = (
                f"removal preview: appearance {new.appearance} at strength {new.strength:g} on part "
                f"{studio.name(new.part)}; 'add to stack' keeps it, 'undo' takes it back"
            )
            return shown(new, tint_on, state, note)

        def show_previews(state: Session) -> Iterator[dict]:
            """The previews as they come, redrawn at most every PREVIEW_SECONDS, and their progress."""
            total, drawn = 2 * factors.appearances, 0.0
            subject = f"part {studio.name(state.part)}"
            yield {progress: f"painting each appearance on {subject}: 0 / {total}", previews: None, order: ()}
            for done in studio.previews(state):
                last = len(done) == total
                text = f"painting each appearance on {subject}: {len(done)} / {total}"
                if last:
                    best = ", ".join(f"a{p.edit.appearance} {p.edit.alpha:+g} ({p.change:.0f})" for p in done[:5])
                    text = (
                        f"{total} previews of {subject}: each appearance at +-{settings.preview_strength:g} over the "
                        "stack, those that change the part most first (the number: how much, in pixel levels); "
                        f"click one to make it the current edit. Most: {best}"
                    )
                views = {progress: text}
                if last or time.monotonic() - drawn > PREVIEW_SECONDS:
                    drawn = time.monotonic()
                    views |= {previews: png(studio.sheet(state, done)), order: tuple(p.edit for p in done)}
                yield views

        def show_row(state: Session) -> dict:
            return {row: pngs(studio.row(state)), message: ""}

        def refine(state: Session) -> dict:
            before, after, error_before, error_after = studio.refine(state)
            text = f"error of this sample: {error_before:.4g} with the global parts, {error_after:.4g} refined"
            return {global_parts: png(before), refined_parts: png(after), refine_text: text, message: ""}

        def save(state: Session, text: str, replace_named: bool) -> dict:
            path = studio.save(state, text, replace_named)
            text = text.strip()
            command = f"python evaluate.py task=edit run={settings.run_dir} eval.name={text} eval.zoo_dir={path.parent}"
            return {save_result: f"saved '{text}' to `{path}`; apply it with `{command}`", message: ""}

        def export(state: Session) -> dict:
            paths = studio.export(state, exports)
            written.extend(paths)
            return {files: [str(path) for path in paths], message: ""}

        def tinted(state: Session, tint_on: bool) -> dict:
            return {parts: png(studio.parts(state, tint=tint_on))}

        views = [*full, sample, original, gallery, part_gallery, row]
        wire(demo.load, start, [session, saved, tint, sample], views)
        wire(load_button.click, load, [session, tint, sample], views)
        wire(sample.submit, load, [session, tint, sample], views)
        wire(parts.select, pick_part, [session, tint], full)
        wire(part.input, change(studio.choose_part), [session, tint, part], full)
        wire(part_gallery.select, pick_part_in_gallery, [session, tint], full)
        wire(previews.select, pick_preview, [session, tint, order], full)
        wire(gallery.select, pick_appearance, [session], [session, saved, appearance, edited])
        # unprocessed: Gradio would round 3.5 to 4 silently, and refuse a typed strength outside the slider with a
        # traceback; the studio's checks say what is wrong. The slider's .change, not .input: its reset sends no input
        unchecked = {"preprocess": False, "trigger_mode": "always_last", "show_progress": "hidden"}
        quick_outputs = [session, saved, edited]
        wire(appearance.input, quick(studio.choose_appearance), [session, appearance], quick_outputs, **unchecked)
        wire(strength.change, quick(studio.set_strength), [session, strength], quick_outputs, **unchecked)
        wire(add_button.click, change(studio.add), [session, tint], full)
        wire(undo_button.click, change(studio.undo), [session, tint], full)
        wire(clear_button.click, change(studio.clear), [session, tint], full)
        wire(remove_button.click, remove, [session, tint], full)
        wire(tint.input, tinted, [session, tint], [parts])
        streaming = {"trigger_mode": "always_last", "show_progress": "hidden"}
        wire(preview_key.change, show_previews, [session], [progress, previews, order], **streaming)
        wire(row_button.click, show_row, [session], [row])
        wire(refine_button.click, refine, [session], [global_parts, refined_parts, refine_text])
        wire(save_button.click, save, [session, name, overwrite], [save_result])
        wire(export_button.click, export, [session], [files])
    return demo


def serve(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Serve the studio of ``factors`` as ``cfg.eval`` says until Ctrl-C; exports go under ``out``."""
    settings = Settings.from_config(cfg.eval, cfg.run)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # process-wide: this process only serves the studio
    studio = Studio(factors, settings, cfg.seed)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="panda-studio-") as pictures:
        demo = build(studio, out / "exports", written, Path(pictures))
        url, share_url = _launch(demo, studio, out)
        demo.block_thread()
    files = {str(path.relative_to(out)): path for path in written}
    return {"url": url, "share_url": share_url, "zoo_dir": str(settings.zoo_dir), "files": files}


def _launch(demo: gr.Blocks, studio: Studio, out: Path) -> tuple[str, str | None]:
    """Serve ``demo`` in the background (files under ``out`` may be downloaded): its local URL and public link."""
    settings = studio.settings
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to the app
    try:
        _, url, share_url = demo.launch(
            server_name=settings.host,
            server_port=settings.port,
            share=settings.share,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=[str(out)],
            css=page_css([colour for _, _, colour in studio.legend()]),
        )
    except OSError as error:
        raise ConfigError(
            f"cannot serve on {settings.host}:{settings.port} ({error}); give another eval.port"
        ) from None
    log.info("studio running at %s (Ctrl-C stops it)", url)
    if share_url:
        log.info("public link: %s", share_url)
    return url, share_url
