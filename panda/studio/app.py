"""The studio's page: Gradio components wired to :class:`panda.studio.core.Studio`, one :class:`Session` per tab.

Every callback is a :class:`Studio` method on the tab's ``gr.State``; bad input (a
:class:`panda.base.errors.PandaError`) becomes a warning and a line in the page's message box, the
outputs stay as they were, and the app keeps serving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from omegaconf import DictConfig

from panda.base.errors import ConfigError, PandaError
from panda.studio.core import Session, Settings, Studio, part_labels
from panda.uses.factors import Factors

log = logging.getLogger(__name__)


def guarded(fn: Callable[..., tuple], outputs: int) -> Callable[..., tuple]:
    """``fn`` (whose last output is the message line), with bad input shown as a warning and nothing else changed."""

    @functools.wraps(fn)  # keeps the signature: Gradio passes gr.SelectData by its annotation
    def call(*args: Any) -> tuple:
        try:
            return fn(*args)
        except PandaError as error:
            gr.Warning(str(error))
            return (*(gr.skip() for _ in range(outputs - 1)), str(error))

    return call


IMAGE_CSS = """
.studio-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#gallery img { image-rendering: pixelated; }
"""


def page_css(colours: Sequence[str]) -> str:
    """Images enlarged with crisp pixels, and each choice of the part legend framed in its part's colour."""
    legend = (
        f"#part-legend label:nth-of-type({k + 1}) {{ border-left: 14px solid {c}; }}" for k, c in enumerate(colours)
    )
    return IMAGE_CSS + "\n".join(legend)


def build(studio: Studio, exports: Path, written: list[Path]) -> gr.Blocks:
    """The page of ``studio``; exported files go to fresh folders under ``exports``, and are appended to
    ``written``."""
    factors, settings = studio.factors, studio.settings
    low, high, step = settings.strength
    legend = studio.legend()

    def wire(trigger: Callable, fn: Callable[..., tuple], inputs: list, outputs: list, **options: Any) -> None:
        trigger(guarded(fn, len(outputs) + 1), inputs, [*outputs, message], **options)

    def load(state: Session, text: str) -> tuple:
        state = studio.load(state, text)
        views = studio.parts(state), studio.original(state), studio.live(state), studio.gallery(state)
        return state, str(state.sample.index), *views, ""

    def pick_part(state: Session, evt: gr.SelectData) -> tuple:
        state = studio.part_at(state, *evt.index)
        return state, state.part, studio.live(state), ""

    def pick_appearance(state: Session, evt: gr.SelectData) -> tuple:
        state = studio.choose_appearance(state, evt.index)
        return state, state.appearance, studio.live(state), ""

    def change(method: Callable[[Session, Any], Session]) -> Callable[[Session, Any], tuple]:
        def call(state: Session, value: Any) -> tuple:
            new = method(state, value)
            if new == state:  # e.g. the second change event of the slider's reset: nothing to redraw
                return gr.skip(), gr.skip(), ""
            return new, studio.live(new), ""

        return call

    def add(state: Session) -> tuple:
        state = studio.add(state)
        return state, state.stack, state.strength, studio.live(state), ""

    def drop(index: int, state: Session) -> tuple:
        state = studio.drop(state, index)
        return state, state.stack, studio.live(state), ""

    def remove(state: Session) -> tuple:
        state = studio.remove_part(state)
        return state, state.appearance, state.strength, studio.live(state), ""

    def refine(state: Session) -> tuple:
        before, after, error_before, error_after = studio.refine(state)
        text = f"error of this sample: {error_before:.4g} with the global parts, {error_after:.4g} refined"
        return before, after, text, ""

    def save(state: Session, name: str, overwrite: bool) -> tuple:
        path = studio.save(state, name, overwrite)
        name = name.strip()
        command = f"python evaluate.py task=edit run={settings.run_dir} eval.name={name} eval.zoo_dir={path.parent}"
        return name, f"saved '{name}' to {path}; apply it with: {command}"

    def export(state: Session) -> tuple:
        paths = studio.export(state, exports)
        written.extend(paths)
        return [str(path) for path in paths], ""

    title = f"panda studio: {factors.name}"
    image = {"interactive": False, "height": settings.display, "buttons": ["download"]}
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        session, stack = gr.State(Session()), gr.State(())
        gr.Markdown(
            f"## {title}, layer `{factors.layer}`, {factors.parts} parts, {factors.appearances} appearances\n"
            "Click a part on the left image (or in the legend), pick an appearance in the gallery (or by index) and "
            "move the strength: the edited image shows the stack and the current edit."
        )
        with gr.Row():
            sample = gr.Textbox(settings.sample, label="sample (a number, or random)", elem_id="sample", scale=2)
            load_button = gr.Button("load sample", scale=1)
            message = gr.Textbox(label="messages", interactive=False, elem_id="message", scale=5)
        with gr.Row():
            images = {"parts": "parts (click one)", "original": "original", "edited": "edited"}
            parts, original, edited = (
                gr.Image(label=label, format="png", elem_id=key, elem_classes="studio-image", **image)
                for key, label in images.items()
            )
        with gr.Row():
            with gr.Column(scale=3):
                part = gr.Radio(
                    [(name, k) for k, (name, _) in enumerate(legend)], value=0, label="part", elem_id="part-legend"
                )
                with gr.Row():
                    appearance = gr.Number(0, label="appearance", precision=0, elem_id="appearance", scale=1)
                    strength = gr.Slider(low, high, value=0.0, step=step, label="strength", elem_id="strength", scale=4)
                with gr.Row():
                    add_button = gr.Button("add to stack", variant="primary")
                    remove_button = gr.Button("remove part (paint the appearance around it)")
            with gr.Column(scale=2):

                @gr.render(inputs=stack)
                def show_stack(entries: tuple) -> None:
                    gr.Markdown(f"#### edit stack ({len(entries)})")
                    for index, edit in enumerate(entries):
                        with gr.Row(elem_classes="stack-entry"):
                            text = f"{index}. part {legend[edit.part][0]}, appearance {edit.appearance}"
                            gr.Markdown(f"{text}, strength {edit.alpha:g}")
                            button = gr.Button("remove", size="sm", elem_classes="stack-remove", scale=0)
                            wire(button.click, functools.partial(drop, index), [session], [session, stack, edited])

        gallery = gr.Gallery(
            label="appearances on this sample (red: where each one is; click one to pick it)",
            columns=8,
            height=260,
            allow_preview=False,
            format="png",
            elem_id="gallery",
        )
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    name = gr.Textbox(label="edit name", elem_id="edit-name")
                    overwrite = gr.Checkbox(label="overwrite")
                with gr.Row():
                    save_button = gr.Button("save to the edit zoo")
                    export_button = gr.Button("export PNG and before/after GIF")
            files = gr.File(label="downloads", file_count="multiple", height=120, elem_id="downloads")
        with gr.Row():
            global_parts = gr.Image(label="global parts", format="png", elem_classes="studio-image", **image)
            refined_parts = gr.Image(label="refined parts", format="png", elem_classes="studio-image", **image)
            with gr.Column():
                refine_button = gr.Button("refine parts for this sample")
                refine_text = gr.Markdown()

        shown = [parts, original, edited, gallery]
        wire(demo.load, load, [session, sample], [session, sample, *shown])
        wire(load_button.click, load, [session, sample], [session, sample, *shown])
        wire(sample.submit, load, [session, sample], [session, sample, *shown])
        wire(parts.select, pick_part, [session], [session, part, edited])
        wire(gallery.select, pick_appearance, [session], [session, appearance, edited])
        wire(part.input, change(studio.choose_part), [session, part], [session, edited])
        unchecked = {"preprocess": False}  # Gradio would round 3.5 to 4 silently: choose_appearance refuses it
        wire(appearance.input, change(studio.choose_appearance), [session, appearance], [session, edited], **unchecked)
        # .change, not .input: the slider's reset button sends no input event; unprocessed, so that a typed
        # strength outside the slider is refused with a message by set_strength, not by Gradio with a traceback
        live = {"trigger_mode": "always_last", "show_progress": "hidden", "preprocess": False}
        wire(strength.change, change(studio.set_strength), [session, strength], [session, edited], **live)
        wire(add_button.click, add, [session], [session, stack, strength, edited])
        wire(remove_button.click, remove, [session], [session, appearance, strength, edited])
        wire(refine_button.click, refine, [session], [global_parts, refined_parts, refine_text])
        wire(save_button.click, save, [session, name, overwrite], [name])
        wire(export_button.click, export, [session], [files])
    return demo


def serve(cfg: DictConfig, factors: Factors, out: Path) -> dict[str, Any]:
    """Serve the studio of ``factors`` as ``cfg.eval`` says until Ctrl-C; exports go under ``out``."""
    settings = Settings.from_config(cfg.eval, cfg.run)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)  # process-wide: this process only serves the studio
    studio = Studio(factors, settings, part_labels(cfg.run, factors.parts), cfg.seed)
    written: list[Path] = []
    demo = build(studio, out / "exports", written)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to the app
    try:
        _, url, share_url = demo.launch(
            server_name=settings.host,
            server_port=settings.port,
            share=settings.share,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=[str(out)],
            css=page_css([colour for _, colour in studio.legend()]),
        )
    except OSError as error:
        raise ConfigError(
            f"cannot serve on {settings.host}:{settings.port} ({error}); give another eval.port"
        ) from None
    log.info("studio running at %s (Ctrl-C stops it)", url)
    if share_url:
        log.info("public link: %s", share_url)
    demo.block_thread()
    files = {str(path.relative_to(out)): path for path in written}
    return {"url": url, "share_url": share_url, "zoo_dir": str(settings.zoo_dir), "files": files}
