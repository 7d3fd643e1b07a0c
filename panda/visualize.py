"""Pictures a person looks at: part masks, parts over images, the error curve."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor

from panda.factorization import normalized_parts
from panda.io import atomic_write


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
    """``part k``, or ``k: label score`` for parts named by :mod:`panda.naming`."""
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
    """Every part as a greyscale mask (one panel per part, in its overlay colour's frame, titled with its
    label and score when named)."""
    maps = normalized_parts(P.detach().float().cpu(), *feature_hw).numpy()
    count = maps.shape[0]
    cols = min(count, 8)
    rows = -(-count // cols)
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = part_colours(count)
    names = part_names(count, labels, scores)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= count:
            ax.axis("off")
            continue
        ax.imshow(maps[k], cmap="gray", vmin=0, vmax=1)
        ax.set_title(names[k], fontsize=9, color=colours[k])
        for spine in ax.spines.values():
            spine.set_color(colours[k])
            spine.set_linewidth(3)
    fig.tight_layout()
    return _save(fig, path)


def image_grid(
    images: np.ndarray,
    path: str | Path,
    columns: int = 8,
    titles: Sequence[str] | None = None,
    legend: Sequence[tuple[str, np.ndarray]] | None = None,
) -> Path:
    """A grid of ``[B, H, W, 3]`` uint8 images, with a ``legend`` of (name, RGB colour) below it when given."""
    count = images.shape[0]
    cols = min(count, columns)
    rows = -(-count // cols)
    legend_rows = -(-len(legend) // cols) if legend else 0
    fig = Figure(figsize=(1.6 * cols, (1.8 if titles else 1.6) * rows + 0.3 * legend_rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(images[i])
            if titles:
                ax.set_title(titles[i], fontsize=8)
    if legend:
        handles = [Patch(color=colour, label=name) for name, colour in legend]
        fig.legend(handles=handles, loc="lower center", ncol=cols, fontsize=8, frameon=False)
        fig.tight_layout(pad=0.3, rect=(0, 0.3 * legend_rows / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout(pad=0.3)
    return _save(fig, path)


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
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(steps, errors, marker="o", markersize=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("relative reconstruction error")
    ax.set_title("sum ||Z - A A^T Z P P^T||^2 / sum ||Z||^2 (validation)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    return atomic_write(path, buffer.getvalue())
