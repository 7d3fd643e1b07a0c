"""The studio's editing logic as pure functions of a per-session :class:`Session` (no web framework).

A :class:`Studio` holds what every session shares and never changes: the run, the checked
:class:`Settings`, the appearances' localisation thresholds and masks (from ``statistics``
samples, as ``task=localize`` and ``task=remove`` find them; removal paints the appearance around a part).
A :class:`Session` is one browser tab's state: every method takes one and returns a new one (or
pictures of it), so tabs never see each other's edits. A sample's features are computed once, when
it is loaded; every edit after that only runs the generator after the layer.
"""

from __future__ import annotations

import io
import math
import random
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from panda.base.errors import ConfigError
from panda.base.files import atomic_write
from panda.generators.base import ResumeState
from panda.method.factorization import flatten_features
from panda.uses import editing, localization
from panda.uses.editing import Edit
from panda.uses.factors import Factors
from panda.uses.refinement import refine_parts
from panda.uses.visualize import mask_overlay, part_colours, save_gif, to_uint8, upsampled_parts

HISTORY = 100  # earlier states of the current edit and the stack that undo can go back to
SHEET_COLUMNS, CAPTION, GAP = 8, 12, 2  # the previews' sheet: tiles a row; pixels of a caption, between tiles

MAX_SAMPLE = 2**31 - 1
EDIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
OVERRIDES = OverridesParser.create()  # how Hydra reads the printed eval.name=NAME
ZOO_MARK = "# Edit zoo written by panda's studio"


def parse_sample(value: object) -> int:
    """A sample number ``0..MAX_SAMPLE`` from user input; ``"random"`` draws one."""
    text = str(value).strip()
    if text.lower() == "random":
        return random.SystemRandom().randrange(MAX_SAMPLE + 1)
    try:
        index = int(text)
    except ValueError:
        raise ConfigError(f"sample {text!r} is not a number: give a number 0..{MAX_SAMPLE} or 'random'") from None
    if not 0 <= index <= MAX_SAMPLE:
        raise ConfigError(f"sample {index} is out of range: give a number 0..{MAX_SAMPLE} or 'random'")
    return index


@dataclass(frozen=True)
class Settings:
    """The studio's options (``conf/task/studio.yaml``), each checked here once."""

    host: str
    port: int
    share: bool
    sample: str
    statistics: int
    batch_size: int
    threads: int | None
    strength: tuple[float, float, float]  # slider minimum, maximum, step
    remove_alpha: float
    preview_strength: float
    preview_batch: int
    row: int
    refine_steps: int
    refine_lr: float
    gif_scales: tuple[float, ...]
    display: int
    thumbnail: int
    run_dir: Path
    zoo_dir: Path

    @classmethod
    def from_config(cls, options: Mapping[str, Any], run: str | Path) -> Settings:
        """Settings from ``cfg.eval`` of ``task=studio`` for the run at ``run`` (a directory or its ``factors.pt``)."""
        run_dir = Path(run).resolve()
        run_dir = run_dir if run_dir.suffix != ".pt" else run_dir.parent
        zoo_dir = Path(options["zoo_dir"]).resolve() if options["zoo_dir"] else run_dir / "edits"
        low, high, step = (float(options["strength"][key]) for key in ("min", "max", "step"))
        settings = cls(
            host=str(options["host"]),
            port=int(options["port"]),
            share=bool(options["share"]),
            sample=str(options["sample"]),
            statistics=int(options["statistics"]),
            batch_size=int(options["batch_size"]),
            threads=None if options["threads"] is None else int(options["threads"]),
            strength=(low, high, step),
            remove_alpha=float(options["remove_alpha"]),
            preview_strength=float(options["preview"]["strength"]),
            preview_batch=int(options["preview"]["batch_size"]),
            row=int(options["row"]),
            refine_steps=int(options["refine"]["steps"]),
            refine_lr=float(options["refine"]["lr"]),
            gif_scales=tuple(float(t) for t in options["gif_scales"]),
            display=int(options["display"]),
            thumbnail=int(options["thumbnail"]),
            run_dir=run_dir,
            zoo_dir=zoo_dir,
        )
        parse_sample(settings.sample)
        problems = [
            (not 1 <= settings.port <= 65535, f"eval.port={settings.port} must be in 1..65535"),
            (settings.statistics < 1 or settings.batch_size < 1, "eval.statistics and eval.batch_size must be >= 1"),
            (settings.threads is not None and settings.threads < 1, "eval.threads must be >= 1 (or null)"),
            (not (math.isfinite(low) and math.isfinite(high) and low < high), "eval.strength needs min < max, finite"),
            (not step > 0, f"eval.strength.step={step} must be > 0"),
            (not low <= settings.remove_alpha <= high, "eval.remove_alpha must lie in [strength.min, strength.max]"),
            (
                not (0 < settings.preview_strength <= min(-low, high)),
                "eval.preview.strength must be > 0, and it and its negative must lie in [strength.min, strength.max]",
            ),
            (settings.preview_batch < 1 or settings.row < 1, "eval.preview.batch_size and eval.row must be >= 1"),
            (settings.refine_steps < 1, f"eval.refine.steps={settings.refine_steps} must be >= 1"),
            (not settings.gif_scales, "eval.gif_scales must list at least one strength multiple"),
            (min(settings.display, settings.thumbnail) < 16, "eval.display and eval.thumbnail must be >= 16 pixels"),
            (
                zoo_dir == editing.ZOO_DIR.resolve(),
                "eval.zoo_dir is the project's conf/edits, which the studio never writes: give another directory",
            ),
        ]
        for failed, message in problems:
            if failed:
                raise ConfigError(message)
        return settings


@dataclass(frozen=True, eq=False)
class Sample:
    """A loaded sample, computed once and shared by every edit of it (compared by identity)."""

    index: int
    latents: Tensor  # [1, ...]
    features: Tensor  # [1, C, H, W] at the run's layer, on the generator's device
    state: ResumeState  # what resuming from the features reads (StyleGAN's ws and skip image)
    image: np.ndarray  # [H, W, 3] uint8, unedited
    maps: Tensor  # [1, R_C, H, W] localisation maps A^T Z of the appearances


@dataclass(frozen=True)
class Session:
    """One browser tab's state: its sample, the current edit (part, appearance, strength), the stack, and the
    earlier states that undo goes back to (each without sample and history, the latest last)."""

    sample: Sample | None = None
    part: int = 0
    appearance: int = 0
    strength: float = 0.0
    stack: tuple[Edit, ...] = ()
    history: tuple[Session, ...] = ()

    @property
    def edits(self) -> list[Edit]:
        """What is shown: the stack, then the current edit unless its strength is 0."""
        current = [Edit(self.part, self.appearance, self.strength)] if self.strength else []
        return [*self.stack, *current]


@dataclass(frozen=True)
class Preview:
    """An appearance painted on a part at a fixed strength over the stack, and how much it changes the part: the
    root mean square change of the pixels (0-255) weighted by the part's map."""

    edit: Edit
    change: float
    image: np.ndarray  # [H, W, 3] uint8 at the thumbnail size


class Studio:
    """The shared, read-only side of the editor; its methods are the page's callbacks."""

    def __init__(self, factors: Factors, settings: Settings, seed: int) -> None:
        self.factors, self.settings, self.seed = factors, settings, seed
        # every session shares the generator, whose split forward passes hook its modules: one pass at a time
        self.generator_lock = threading.Lock()
        maps = localization.dataset_maps(factors, seed, settings.statistics, settings.batch_size)
        self.thresholds = localization.thresholds(maps)
        self.masks = localization.binarize(maps, self.thresholds)  # [N, R_C, H, W]: removal's backgrounds
        # the parts at the display size [R_S, D, D] (what a click on the parts image reads) and their tint: once
        self.maps = upsampled_parts(factors.P, factors.hw, settings.display)
        self.tint = _tint(self.maps)
        # what a state saved in a browser must belong to (restore refuses others)
        self.identity = f"{factors.name} {factors.layer} {factors.parts}x{factors.appearances} {settings.run_dir}"

    def name(self, part: int) -> str:
        """``k: label`` for a named part, ``k`` for a run without labels."""
        return f"{part}: {self.factors.labels[part]}" if self.factors.labels else str(part)

    def legend(self) -> list[tuple[int, str, str]]:
        """``(part, name, hex colour)`` of every part in the colours of the overlay, the parts of one name (eyes,
        eyes_2, ...) together, names in alphabetical order; by number for a run without labels."""
        colours = (part_colours(self.factors.parts) * 255).round().astype(int)
        labels = self.factors.labels

        def group(k: int) -> tuple[str, int]:
            return (re.sub(r"_\d+$", "", labels[k]) if labels else "", k)

        order = sorted(range(self.factors.parts), key=group)
        return [(k, self.name(k), "#{:02x}{:02x}{:02x}".format(*colours[k])) for k in order]

    # ----- changing the session ---------------------------------------------------------------
    def load(self, session: Session, sample: object) -> Session:
        """``session`` showing ``sample`` (a number or ``"random"``); its features are computed here, once."""
        index = parse_sample(sample)
        latents = self.factors.latents(self.seed, [index])
        with self.generator_lock:
            features, state = self.factors.features_and_state(latents)
            image = to_uint8(self.factors.images(features, state))[0]
        maps = localization.appearance_maps(self.factors, features)
        return replace(session, sample=Sample(index, latents, features, state, image, maps))

    def choose_part(self, session: Session, part: object) -> Session:
        return replace(session, part=self._index(part, "part"))

    def part_at(self, session: Session, x: object, y: object) -> Session:
        """Choose the part strongest at pixel ``(x, y)`` of the :meth:`parts` image (``display`` pixels wide)."""
        size = self.settings.display
        if not all(isinstance(v, int) and 0 <= v < size for v in (x, y)):
            raise ConfigError(f"pixel ({x}, {y}) is outside the {size} x {size} image")
        return replace(session, part=int(self.maps[:, y, x].argmax()))

    def choose_appearance(self, session: Session, appearance: object) -> Session:
        return replace(session, appearance=self._index(appearance, "appearance"))

    def _index(self, value: object, kind: str) -> int:
        """A part or appearance index from the page, checked (number boxes send whole numbers as floats)."""
        last = (self.factors.parts if kind == "part" else self.factors.appearances) - 1
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"no {kind} given: type an index 0..{last}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{kind} {value:g} is not a whole number: give an index 0..{last}")
            value = int(value)
        return self.factors.check_index(value, kind)

    def set_strength(self, session: Session, value: object) -> Session:
        low, high, _ = self.settings.strength
        try:
            alpha = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"strength {value!r} is not a number") from None
        if not (math.isfinite(alpha) and low <= alpha <= high):
            raise ConfigError(f"strength {value!r} is outside [{low:g}, {high:g}]")
        return replace(session, strength=alpha)

    def choose_edit(self, session: Session, edit: Edit) -> Session:
        """Make ``edit`` (a preview's) the current edit; undo goes back."""
        state = self.set_strength(
            self.choose_appearance(self.choose_part(session, edit.part), edit.appearance), edit.alpha
        )
        return _remember(session, state)

    def add(self, session: Session) -> Session:
        """Push the current edit onto the stack; the strength goes back to 0 (undo goes back)."""
        if not session.strength:
            raise ConfigError("the current edit has strength 0: move the strength slider first")
        current = Edit(session.part, session.appearance, session.strength)
        return _remember(session, replace(session, stack=(*session.stack, current), strength=0.0))

    def drop(self, session: Session, index: object) -> Session:
        """Remove entry ``index`` of the stack (undo goes back)."""
        if not (isinstance(index, int) and 0 <= index < len(session.stack)):
            raise ConfigError(f"there is no edit {index!r} in a stack of {len(session.stack)}")
        return _remember(session, replace(session, stack=session.stack[:index] + session.stack[index + 1 :]))

    def clear(self, session: Session) -> Session:
        """No edit at all: an empty stack and strength 0 (undo goes back)."""
        if not session.edits:
            raise ConfigError("nothing to clear: there is no edit")
        return _remember(session, replace(session, stack=(), strength=0.0))

    def undo(self, session: Session) -> Session:
        """The current edit and the stack as they were before the last choice of a preview or removal, addition to
        the stack, removal from it, or clearing."""
        if not session.history:
            raise ConfigError("nothing to undo")
        return replace(session.history[-1], sample=session.sample, history=session.history[:-1])

    def removal(self, part: int) -> tuple[Edit, float]:
        """Context-aware removal of ``part`` (as task=remove): the appearance covering most of its surroundings over
        the ``statistics`` samples, at ``remove_alpha``, and the share of the surroundings it covers."""
        background, covered = localization.background_appearance(self.factors, self.masks, part)
        (edit,) = editing.removal(part, background, self.settings.remove_alpha)
        return edit, float(covered[background])

    def remove_part(self, session: Session) -> Session:
        """The removal of the chosen part as the current edit: shown, not yet on the stack (undo goes back)."""
        return self.choose_edit(session, self.removal(session.part)[0])

    def snapshot(self, session: Session) -> dict[str, Any] | None:
        """What a browser keeps of ``session`` to :meth:`restore` it after a reload (plain JSON), or None unloaded."""
        if session.sample is None:
            return None
        stack = [[e.part, e.appearance, e.alpha] for e in session.stack]
        current = {"part": session.part, "appearance": session.appearance, "strength": session.strength}
        return {"studio": self.identity, "sample": session.sample.index, **current, "stack": stack}

    def restore(self, saved: object) -> Session:
        """A new session as :meth:`snapshot` saved it, its sample loaded again; a :class:`ConfigError` if ``saved``
        does not belong to this studio or does not fit its run."""
        if not isinstance(saved, dict) or saved.get("studio") != self.identity:
            raise ConfigError("the state saved in this browser belongs to another studio: starting afresh")
        try:
            stack = tuple(
                Edit(self._index(k, "part"), self._index(j, "appearance"), _finite(a)) for k, j, a in saved["stack"]
            )
            state = self.choose_appearance(self.choose_part(Session(stack=stack), saved["part"]), saved["appearance"])
            return self.load(self.set_strength(state, saved["strength"]), saved["sample"])
        except (ConfigError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"the state saved in this browser does not fit this run ({error}): starting afresh"
            ) from None

    # ----- pictures of the session ------------------------------------------------------------
    def edited(self, session: Session, scales: Sequence[float] = (1.0,)) -> np.ndarray:
        """The sample under ``t`` times its edits for each ``t`` in ``scales``: ``[T, H, W, 3]`` uint8."""
        sample = _loaded(session)
        if not session.edits:
            return np.stack([sample.image] * len(scales))
        offset = editing.edit_offset(self.factors, session.edits)
        with self.generator_lock:
            frames = editing.edited_images(self.factors, sample.features, sample.state, offset, scales)
        return to_uint8(frames[:, 0])

    def live(self, session: Session) -> np.ndarray:
        """The edited image as shown (:func:`_shown`): what every slider move computes."""
        return _shown(self.edited(session)[0], self.settings.display)

    def original(self, session: Session) -> np.ndarray:
        return _shown(_loaded(session).image, self.settings.display)

    def parts(self, session: Session, P: Tensor | None = None, tint: bool = True) -> np.ndarray:
        """The sample at the display size, tinted by its strongest part unless not ``tint``, with the chosen part
        outlined (white outside, black inside its map's half-maximum); ``P``: these parts instead of the run's.

        Enlarged here rather than by the page, so that the page reports clicks on it in its own pixels.
        """
        maps = self.maps if P is None else upsampled_parts(P, self.factors.hw, self.settings.display)
        image = _shown(_loaded(session).image, self.settings.display, enlarge=True)
        if tint:
            alpha, colours = self.tint if P is None else _tint(maps)
            image = ((1 - alpha) * image / 255 + alpha * colours).clip(0, 1) * 255
        image = image.round().astype(np.uint8)
        inside = maps[session.part].numpy() > 0.5
        image[_grow(inside) & ~inside] = 255
        image[inside & ~_shrink(inside)] = 0
        return image

    def part_gallery(self, session: Session) -> list[tuple[np.ndarray, str]]:
        """Where each part is on this sample (its map above half its maximum, in red), captioned with its name."""
        image = _as_tensor(_shown(_loaded(session).image, self.settings.thumbnail))
        inside = upsampled_parts(self.factors.P, self.factors.hw, image.shape[-1]) > 0.5
        return [(mask_overlay(image, inside[None, k])[0], self.name(k)) for k in range(self.factors.parts)]

    def removal_hint(self, session: Session) -> str:
        """What **remove part** does to the chosen part (Markdown)."""
        edit, covered = self.removal(session.part)
        return (
            f"**remove part** paints appearance {edit.appearance} over part {self.name(session.part)} at strength "
            f"{edit.alpha:g}: the appearance that covers most of the part's surroundings ({covered:.0%} of them, over "
            f"{self.settings.statistics} samples). It becomes the current edit, shown but not on the stack: add it, "
            "or undo. Where the surroundings are dark or mixed it can paint the part black or make it glow."
        )

    def gallery(self, session: Session) -> list[tuple[np.ndarray, str]]:
        """Where each appearance is on this sample: its localisation mask (as ``task=localize``) in red."""
        sample = _loaded(session)
        image = _as_tensor(_shown(sample.image, self.settings.thumbnail))
        size = image.shape[-1]
        masks = localization.concept_masks(sample.maps, self.thresholds, size)[0]
        return [(mask_overlay(image, masks[None, j])[0], f"appearance {j}") for j in range(self.factors.appearances)]

    def previews(self, session: Session) -> Iterator[list[Preview]]:
        """What each appearance does to the chosen part: painted at plus and minus ``preview_strength`` over the
        stack, ``preview_batch`` edits per pass of the generator; yields the previews so far after each pass, those
        that change the part most first."""
        sample, alpha = _loaded(session), self.settings.preview_strength
        base = replace(session, strength=0.0, history=())
        before = self.edited(base)[0].astype(np.float64)
        features = sample.features
        if base.edits:
            features = features + editing.edit_offset(self.factors, base.edits).to(features)
        weights = upsampled_parts(self.factors.P[:, [session.part]], self.factors.hw, before.shape[0])[0]
        weights = weights.double().numpy()[..., None] / (3 * weights.sum().item())
        A, part_map = self.factors.A, self.factors.part_maps()[session.part]
        edits = [Edit(session.part, j, sign * alpha) for j in range(self.factors.appearances) for sign in (1, -1)]
        done: list[Preview] = []
        for start in range(0, len(edits), self.settings.preview_batch):
            batch = edits[start : start + self.settings.preview_batch]
            alphas = torch.tensor([edit.alpha for edit in batch])  # alpha a_j p_k^T of each, as edit_offset
            offsets = ((A[:, [edit.appearance for edit in batch]] * alphas).T[..., None, None] * part_map).to(features)
            state = _repeated(sample.state, len(batch))
            with self.generator_lock:
                images = to_uint8(self.factors.images(features + offsets, state))
            change = np.sqrt((np.square(images - before) * weights).sum(axis=(1, 2, 3)))
            thumbnail = self.settings.thumbnail
            done += [Preview(e, float(c), _shown(i, thumbnail)) for e, c, i in zip(batch, change, images, strict=True)]
            done.sort(key=lambda p: (-p.change, p.edit.appearance, -p.edit.alpha))
            yield list(done)

    def sheet(self, session: Session, previews: Sequence[Preview]) -> np.ndarray:
        """The previews as one picture, :data:`SHEET_COLUMNS` tiles a row, each captioned ``a<appearance>
        <strength>: <change>``, with room for every preview of the part (blank until it comes)."""
        tile = self._tile(session)
        width, height = tile + GAP, tile + CAPTION + GAP
        rows = -(-2 * self.factors.appearances // SHEET_COLUMNS)
        sheet = Image.new("RGB", (SHEET_COLUMNS * width, rows * height), (255, 255, 255))
        draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=CAPTION - 1)
        for n, preview in enumerate(previews):
            left, top = n % SHEET_COLUMNS * width, n // SHEET_COLUMNS * height
            sheet.paste(Image.fromarray(preview.image), (left, top))
            edit = preview.edit
            draw.text(
                (left + 1, top + tile), f"a{edit.appearance} {edit.alpha:+g}: {preview.change:.0f}", (0, 0, 0), font
            )
        return np.asarray(sheet)

    def preview_at(self, session: Session, previews: Sequence[Edit], x: object, y: object) -> Edit:
        """The edit of the preview at pixel ``(x, y)`` of the :meth:`sheet` of ``previews``."""
        width, height = self._tile(session) + GAP, self._tile(session) + CAPTION + GAP
        if isinstance(x, int) and isinstance(y, int) and 0 <= x < SHEET_COLUMNS * width and y >= 0:
            index = y // height * SHEET_COLUMNS + x // width
            if index < len(previews):
                return previews[index]
        raise ConfigError(f"there is no preview at ({x}, {y}): click one of the pictures")

    def _tile(self, session: Session) -> int:
        """The side of a preview's picture (square, as the generators' images)."""
        return min(self.settings.thumbnail, _loaded(session).image.shape[0])

    def row(self, session: Session) -> list[tuple[np.ndarray, str]]:
        """The shown edits on ``row`` samples from the current one on: each sample before | after, captioned."""
        first = _loaded(session).index
        indices = [(first + i) % (MAX_SAMPLE + 1) for i in range(self.settings.row)]
        latents = self.factors.latents(self.seed, indices)
        with self.generator_lock:
            features, state = self.factors.features_and_state(latents)
            offset = (
                editing.edit_offset(self.factors, session.edits) if session.edits else torch.zeros(features[0].shape)
            )
            before, after = (to_uint8(f) for f in editing.edited_images(self.factors, features, state, offset, (0, 1)))
        size = self.settings.thumbnail
        pairs = [np.concatenate([_shown(b, size), _shown(a, size)], axis=1) for b, a in zip(before, after, strict=True)]
        return [(pair, f"sample {index}") for pair, index in zip(pairs, indices, strict=True)]

    def refine(self, session: Session) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Sample-specific parts (``task=refine``): the global and refined overlays, the error before and after."""
        Z = flatten_features(_loaded(session).features.float().cpu())
        settings = self.settings
        refined, errors = refine_parts(Z, self.factors.A, self.factors.P, settings.refine_steps, settings.refine_lr)
        return self.parts(session), self.parts(session, refined[0]), float(errors[0, 0]), float(errors[-1, 0])

    # ----- files ------------------------------------------------------------------------------
    def save(self, session: Session, name: object, overwrite: bool) -> Path:
        """Write what is shown as the named edit ``name`` of the zoo ``<zoo_dir>/<generator>.yaml``.

        ``python evaluate.py task=edit run=RUN eval.name=NAME eval.zoo_dir=ZOO_DIR`` applies it.
        """
        name = str(name).strip()
        if not EDIT_NAME.fullmatch(name) or not isinstance(OVERRIDES.parse_override(f"eval.name={name}").value(), str):
            raise ConfigError(
                f"edit name {name!r} must be letters, digits, '_' or '-', and not a number, true, false or null "
                "(it is given as eval.name=...)"
            )
        if not session.edits:
            raise ConfigError("nothing to save: move the strength slider or add edits to the stack first")
        run_dir, zoo_dir = self.settings.run_dir, self.settings.zoo_dir
        if zoo_dir.is_relative_to(run_dir) and not run_dir.is_dir():
            raise ConfigError(f"the run directory {run_dir} has disappeared, so its edit zoo cannot be written")
        path = zoo_dir / f"{self.factors.name}.yaml"
        ranks = {"parts": self.factors.parts, "appearances": self.factors.appearances}
        found = {"layer": self.factors.layer, "ranks": ranks}
        zoo = {**found, "edits": {}}
        if path.is_file():
            if not path.read_text().startswith(ZOO_MARK):
                raise ConfigError(f"{path} was not written by the studio, which would lose its comments: not changed")
            zoo = editing.load_zoo(self.factors.name, zoo_dir)
            del zoo["path"]
            if {key: zoo.get(key) for key in found} != found:
                raise ConfigError(f"{path} holds edits of factors with another layer or ranks than this run's")
            if name in zoo["edits"] and not overwrite:
                raise ConfigError(f"{path} already has an edit named '{name}': tick 'overwrite' to replace it")
        zoo["edits"][name] = [{"part": e.part, "appearance": e.appearance, "alpha": e.alpha} for e in session.edits]
        factors = self.factors
        header = f"{ZOO_MARK} for {factors.name} at {factors.layer}; apply: evaluate.py task=edit eval.name=NAME\n"
        try:
            return atomic_write(path, (header + yaml.safe_dump(zoo, sort_keys=False, default_flow_style=None)).encode())
        except OSError as error:
            raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None

    def export(self, session: Session, directory: Path) -> list[Path]:
        """The edited image as a PNG and a before/after GIF over ``gif_scales`` times the edits, both enlarged
        (nearest) to at least ``display`` pixels, written to a fresh folder under ``directory`` (one per export:
        sessions never share files)."""
        sample = _loaded(session)
        if not session.edits:
            raise ConfigError("nothing to export: move the strength slider or add edits to the stack first")
        edited, *frames = self.edited(session, (1.0, *self.settings.gif_scales))
        scale = -(-self.settings.display // sample.image.shape[0])  # enlarged (nearest) to at least eval.display
        buffer = io.BytesIO()
        Image.fromarray(edited).resize((edited.shape[1] * scale, edited.shape[0] * scale), Image.NEAREST).save(
            buffer, format="PNG"
        )
        pairs = [np.concatenate([sample.image, frame], axis=1) for frame in frames]
        try:
            directory.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(dir=directory))
            png = atomic_write(folder / f"sample{sample.index}_edited.png", buffer.getvalue())
            return [png, save_gif(pairs, folder / f"sample{sample.index}_before_after.gif", scale=scale)]
        except OSError as error:
            raise ConfigError(f"cannot write the export under {directory}: {error.strerror or error}") from None


def _loaded(session: Session) -> Sample:
    if session.sample is None:
        raise ConfigError("no sample is loaded: choose a sample first")
    return session.sample


def _remember(session: Session, new: Session) -> Session:
    """``new``, with ``session`` (without sample and history) as the latest state undo goes back to."""
    earlier = replace(session, sample=None, history=())
    return replace(new, history=(*session.history, earlier)[-HISTORY:])


def _finite(value: object) -> float:
    alpha = float(value)  # a TypeError or ValueError for what is not a number
    if not math.isfinite(alpha):
        raise ValueError(f"strength {alpha} is not finite")
    return alpha


def _tint(maps: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's tint in :func:`panda.uses.visualize.overlay`'s colours, of part maps ``[R_S, D, D]``: its
    opacity ``[D, D, 1]`` (0.6 times its strongest part's map) and that part's colour ``[D, D, 3]``."""
    strongest, which = maps.max(0)
    return 0.6 * strongest.double().numpy()[..., None], part_colours(len(maps))[which.numpy()]


def _repeated(state: ResumeState, count: int) -> ResumeState:
    """The resume state of one sample for ``count`` edits of it (a batch of ``count`` copies)."""
    values = {k: None if v is None else v.expand(count, *v.shape[1:]).contiguous() for k, v in state.values.items()}
    return ResumeState(state.layer, values)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool grown by one pixel (8 neighbours)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


def _shrink(mask: np.ndarray) -> np.ndarray:
    return ~_grow(~mask)


def _shown(image: np.ndarray, size: int, enlarge: bool = False) -> np.ndarray:
    """``[H, W, 3]`` uint8 as sent to the page: shrunk (area average) to ``size x size`` when larger; smaller
    images are sent as they are (fewer bytes to encode) for the page to enlarge, or enlarged here (nearest)."""
    if image.shape[0] == size or (image.shape[0] < size and not enlarge):
        return image
    method = Image.BOX if image.shape[0] > size else Image.NEAREST
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def _as_tensor(image: np.ndarray) -> Tensor:
    """``[H, W, 3]`` uint8 as a ``[1, 3, H, W]`` image in ``[-1, 1]`` (the inverse of ``to_uint8``)."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1
