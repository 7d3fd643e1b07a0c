"""Sheets to find a zoo's named edits again on a retrained run whose parts are the same maps but whose appearances
differ (the default's steps or solver changed).

With ``R_C = C`` the appearances are only defined up to a rotation of nearly equal ones, so a retrained run's
appearance ``j`` is another vector than the old run's. For each named edit of the zoo (its parts kept), this writes
``<out>/<name>.png``: the originals of six samples, the old edit on the old run, then the new run's candidates,
each at the strength whose pixel change has the old edit's norm: the five whose pixel change is most like the old
edit's (cosine over the samples) and the five appearances nearest the old one (cosine of the vectors). A person
picks the one that does what the edit's name says and writes it into the zoo::

    python experiments/port_zoo.py --old OLD_RUN --new NEW_RUN [--zoo conf/edits/dcgan_faces.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from PIL import Image, ImageDraw

from panda.uses.editing import Edit, edit_offset, edited_images, parse_edits
from panda.uses.factors import Factors, open_run
from panda.uses.visualize import to_uint8

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, SHOWN, LABEL = 6, 5, 190  # samples per row, candidates of each ranking, label width in pixels


def edited(factors: Factors, edits: list[Edit], latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The originals and the edited images ``[N, 3, H, W]`` of ``latents``."""
    with torch.inference_mode():
        features, state = factors.features_and_state(latents)
        frames = edited_images(factors, features, state, edit_offset(factors, edits), (0.0, 1.0))
    return frames[0], frames[1]


def candidates(
    old: Factors, new: Factors, edits: list[Edit], latents: torch.Tensor, target: torch.Tensor
) -> list[tuple[str, list[Edit]]]:
    """The new run's candidate edits for ``edits`` (one appearance each), labelled, in the sheet's order;
    ``target``: the pixel change the old edit makes to the images of ``latents``, flattened."""
    unit = {}
    for appearance in range(new.appearances):
        original, changed = edited(new, [Edit(e.part, appearance, 1.0) for e in edits], latents)
        unit[appearance] = (changed - original).flatten()
    pixel = {j: float(torch.nn.functional.cosine_similarity(d, target, dim=0)) for j, d in unit.items()}
    vectors = new.A / new.A.norm(dim=0)
    vector = (old.A[:, edits[0].appearance] / old.A[:, edits[0].appearance].norm()) @ vectors
    by_pixel = sorted(pixel, key=lambda j: -abs(pixel[j]))[:SHOWN]
    by_vector = [j for j in vector.abs().argsort(descending=True).tolist() if j not in by_pixel][:SHOWN]
    rows = []
    for j in by_pixel + by_vector:
        sign = torch.sign(torch.tensor(pixel[j] if j in by_pixel else float(vector[j]))).item()
        alpha = round(sign * float(target.norm() / unit[j].norm()), 2)
        label = f"{j} x {alpha}: pixel {pixel[j]:+.2f}, vector {float(vector[j]):+.2f}"
        rows.append((label, [Edit(e.part, j, alpha) for e in edits]))
    return rows


def sheet(rows: list[tuple[str, torch.Tensor]], path: Path) -> Path:
    """Rows of images, each under its label on the left, upscaled 2x."""
    side = 2 * rows[0][1].shape[-1]
    page = Image.new("RGB", (LABEL + SAMPLES * side, len(rows) * side), "white")
    draw = ImageDraw.Draw(page)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * side + side // 2), label, fill="black")
        for c, image in enumerate(to_uint8(images)):
            page.paste(Image.fromarray(image).resize((side, side), Image.NEAREST), (LABEL + c * side, r * side))
    page.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the run the zoo was found on")
    parser.add_argument("--new", type=Path, required=True, help="the retrained run")
    parser.add_argument("--zoo", type=Path, default=ROOT / "conf" / "edits" / "dcgan_faces.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "port_zoo")
    args = parser.parse_args()
    old, new = open_run(args.old), open_run(args.new)
    latents = new.latents(0, range(SAMPLES))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, items in yaml.safe_load(args.zoo.read_text())["edits"].items():
        edits = parse_edits(items)
        original, before = edited(old, edits, latents)
        rows = [("original", original), (f"old: {edits[0].appearance} x {edits[0].alpha}", before)]
        found = candidates(old, new, edits, latents, (before - original).flatten())
        rows += [(label, edited(new, candidate, latents)[1]) for label, candidate in found]
        print(sheet(rows, args.out / f"{name}.png"), flush=True)


if __name__ == "__main__":
    main()
