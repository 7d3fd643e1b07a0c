"""Pictures a person looks at: part masks, parts over images, the error curve; each a :class:`Picture` (a matplotlib
figure that a notebook shows inline) or its file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor

from panda.base.files import atomic_write
from panda.method.factorization import normalized_parts

DPI = 110  # of every picture
TILE = 176  # pixels: the side an image of a grid is brought near to (see _display)
GAP, TITLE, LEGEND_ROW, FRAME = 10, 20, 24, 3  # pixels between tiles, of a title, of a legend row, of a frame


class Picture(Figure):
    """A matplotlib figure that Jupyter shows inline as PNG, whatever matplotlib's backend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, dpi=DPI, format="png")
        return buffer.getvalue()


def to_uint8(images: Tensor) -> np.ndarray:
    """Images ``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B, H, W, 3]`` uint8."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def part_colours(count: int) -> np.ndarray:
    """``count`` distinct RGB colours in ``[0, 1]``, ``[count, 3]``."""
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return np.array([cmap(k % cmap.N)[:3] for k in range(count)])


def upsampled_parts(P: Tensor, feature_hw: tuple[int, int], size: int) -> Tensor:
    """Parts ``[S, R_S]`` as min-max normalised maps ``[R_S, size, size]`` (bilinear)."""
    maps = normalized_parts(P.detach().float().cpu(), *feature_hw)
    return F.interpolate(maps[None], size=(size, size), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def overlay(images: Tensor, P: Tensor, feature_hw: tuple[int, int], strength: float = 0.6) -> np.ndarray:
    """Each pixel tinted by the colour of its strongest part: ``[B, H, W, 3]`` uint8."""
    pixels = to_uint8(images).astype(np.float64) / 255
    maps = upsampled_parts(P, feature_hw, pixels.shape[1]).numpy()
    colours = part_colours(maps.shape[0])[maps.argmax(0)]
    alpha = strength * maps.max(0)[..., None]
    blended = (1 - alpha) * pixels + alpha * colours
    return (blended.clip(0, 1) * 255).round().astype(np.uint8)


def part_names(count: int, labels: Sequence[str] | None, scores: Sequence[float] | None = None) -> list[str]:
    """``part k``, or ``k: label score`` for parts named by :mod:`panda.uses.face_regions`."""
    if labels is None:
        return [f"part {k}" for k in range(count)]
    if scores is None:
        return [f"{k}: {label}" for k, label in enumerate(labels)]
    return [f"{k}: {label} {score:.2f}" for k, (label, score) in enumerate(zip(labels, scores, strict=True))]


def parts_figure(
    P: Tensor,
    feature_hw: tuple[int, int],
    path: str | Path,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
) -> Path:
    """Every part as a greyscale mask (:func:`parts_picture`) in the file ``path``."""
    return _save(parts_picture(P, feature_hw, labels, scores), path)


def parts_picture(
    P: Tensor, feature_hw: tuple[int, int], labels: Sequence[str] | None = None, scores: Sequence[float] | None = None
) -> Picture:
    """Every part as a greyscale mask (one tile per part, framed in its overlay colour, titled with its
    label and score when named)."""
    maps = normalized_parts(P.detach().float().cpu(), *feature_hw).numpy()
    count = maps.shape[0]
    colours = part_colours(count)
    tiles = _display(np.repeat((maps[..., None] * 255).round().astype(np.uint8), 3, axis=-1))
    for tile, colour in zip(tiles, colours, strict=True):
        rgb = (colour * 255).round().astype(np.uint8)
        tile[:FRAME], tile[-FRAME:], tile[:, :FRAME], tile[:, -FRAME:] = rgb, rgb, rgb, rgb
    return grid_picture(tiles, 8, part_names(count, labels, scores), colours)


def image_grid(
    images: np.ndarray,
    path: str | Path,
    columns: int = 8,
    titles: Sequence[str] | None = None,
    legend: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Path:
    """A grid of ``[B, H, W, 3]`` uint8 images, with a ``legend`` of (name, RGB colour) below it when given."""
    return _save(images_picture(images, columns, titles, legend), path)


def images_picture(
    images: np.ndarray,
    columns: int = 8,
    titles: Sequence[str] | None = None,
    legend: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Picture:
    """:func:`image_grid` as a :class:`Picture`."""
    return grid_picture(_display(images), columns, titles, legend=legend)


def overlay_figure(
    images: Tensor, P: Tensor, feature_hw: tuple[int, int], path: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Sample images (top rows) above the same images with their parts overlaid; a legend of the parts'
    colours and labels below when they are named."""
    count = images.shape[0]
    both = np.concatenate([to_uint8(images), overlay(images, P, feature_hw)])
    legend = None
    if labels is not None:
        legend = list(zip(part_names(len(labels), labels), part_colours(len(labels)), strict=True))
    return image_grid(both, path, columns=min(count, 8), legend=legend)


def mask_overlay(
    images: Tensor, masks: Tensor, colour: Sequence[float] = (1.0, 0.1, 0.1), strength: float = 0.55
) -> np.ndarray:
    """Images ``[B, 3, H, W]`` with the pixels of boolean ``masks`` ``[B, H, W]`` tinted: ``[B, H, W, 3]`` uint8."""
    pixels = to_uint8(images).astype(np.float64) / 255
    alpha = strength * masks.cpu().numpy()[..., None]
    blended = (1 - alpha) * pixels + alpha * np.asarray(colour)
    return (blended.clip(0, 1) * 255).round().astype(np.uint8)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, scale: int = 2, duration_ms: int = 250) -> Path:
    """An endlessly looping GIF of ``[H, W, 3]`` uint8 frames, each enlarged ``scale`` times (nearest)."""
    pictures = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return atomic_write(path, buffer.getvalue())


def error_curve(steps: Sequence[int], errors: Sequence[float], path: str | Path) -> Path:
    """Validation relative reconstruction error against training step."""
    fig = Picture(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(steps, errors, marker="o", markersize=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("relative reconstruction error")
    ax.set_title("sum ||Z - A A^T Z P P^T||^2 / sum ||Z||^2 (validation)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _display(images: np.ndarray) -> np.ndarray:
    """``[B, H, W, 3]`` uint8 images at their size in a grid: their longer side enlarged by the whole factor
    that brings it nearest to :data:`TILE` pixels (pixels stay sharp), or, above twice that, shrunk to it
    (Lanczos)."""
    height, width = images.shape[1:3]
    factor = round(TILE / max(height, width))
    if factor >= 1:
        return images.repeat(factor, axis=1).repeat(factor, axis=2)
    scale = TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS)) for image in images])


def grid_picture(
    tiles: np.ndarray,
    columns: int,
    titles: Sequence[str] | None = None,
    colours: np.ndarray | None = None,
    legend: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Picture:
    """``tiles`` ``[B, h, w, 3]`` uint8 shown at one image pixel per screen pixel in rows of ``columns``, each
    under its title (in ``colours[k]`` when given), with a ``legend`` of (name, RGB colour) below.

    One image in one axes: a grid of axes, one per tile, is much slower to draw.
    """
    count, height, width = tiles.shape[:3]
    cols = min(count, columns)
    rows = -(-count // cols)
    band = TITLE if titles else 0
    cell_h, cell_w = height + band + GAP, width + GAP
    canvas = np.full((rows * cell_h + GAP, cols * cell_w + GAP, 3), 255, dtype=np.uint8)
    corners = [(GAP + (k // cols) * cell_h + band, GAP + (k % cols) * cell_w) for k in range(count)]
    for tile, (y, x) in zip(tiles, corners, strict=True):
        canvas[y : y + height, x : x + width] = tile
    legend_h = LEGEND_ROW * -(-len(legend) // cols) if legend else 0
    total_h = canvas.shape[0] + legend_h
    fig = Picture(figsize=(canvas.shape[1] / DPI, total_h / DPI), dpi=DPI)
    ax = fig.add_axes((0, legend_h / total_h, 1, canvas.shape[0] / total_h))
    ax.imshow(canvas, interpolation="none")
    ax.axis("off")
    for k, (y, x) in enumerate(corners if titles else []):
        colour = "black" if colours is None else colours[k]
        ax.text(x + width / 2, y - 4, titles[k], ha="center", va="bottom", fontsize=8, color=colour)
    if legend:
        handles = [Patch(color=colour, label=name) for name, colour in legend]
        box = fig.legend(handles=handles, loc="lower center", ncol=cols, fontsize=8, frameon=False)
        needed = box.get_window_extent(FigureCanvasAgg(fig).get_renderer()).width + 2 * GAP
        if needed > fig.bbox.width:  # a legend wider than the images: widen the figure (the images stay centred)
            fig.set_size_inches(needed / DPI, fig.get_figheight())
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format=Path(path).suffix.lstrip(".") or "png")
    return atomic_write(path, buffer.getvalue())
