"""panda from Python: learn PandA factors of any generator with the training of ``train.py``, then look at them, edit,
localise, refine and save them (``docs/api.md``)::

    import panda

    factors = panda.fit("dcgan_faces", "experiment=fast")  # train.py's configs and overrides
    factors.show()  # the parts
    factors.edit(part=3, appearance=5, alpha=10.0)  # before / after, inline in a notebook
    factors.save("runs/faces")  # the run directory train.py writes
    factors = panda.load("runs/faces")

Every method's defaults are those of ``evaluate.py``'s task of the same name (``conf/task/<name>.yaml``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from panda.base.config import check_overrides, compose, instantiate
from panda.base.errors import ConfigError, Interrupted
from panda.base.files import LOCK_FILE, METRICS_FILE
from panda.generators.base import FeatureGenerator
from panda.tasks.common import sample_features
from panda.tasks.localize import localized
from panda.tasks.refine import refined_overlays, refined_parts
from panda.tasks.remove import removal
from panda.training.fit import train
from panda.uses import editing
from panda.uses import factors as uses
from panda.uses.visualize import (
    Picture,
    images_picture,
    mask_overlay,
    parts_picture,
    to_uint8,
    upsampled_parts,
)

SHOWN_APPEARANCES = 8  # Localized.show() without a choice: the first this many appearances


def fit(
    generator: str | FeatureGenerator,
    *overrides: str,
    layer: str | None = None,
    run_dir: str | Path | None = None,
) -> Factors:
    """Learn PandA factors of ``generator`` as ``python train.py gen=<generator> <overrides>`` does: the same configs,
    Lightning training and callbacks, into the run directory ``run_dir`` (default: a new temporary one; a directory
    with checkpoints resumes, as with ``train.py``).

    Args:
        generator: a generator config's name (``dcgan_faces``, or one of yours in ``$PANDA_CONFIG_PATH``), or a
            :class:`FeatureGenerator` object (:meth:`FeatureGenerator.from_module`).
        overrides: ``train.py``'s command-line overrides, e.g. ``"experiment=fast"``, ``"rank.parts=16"``.
        layer: the layer to factorise (a module path); required for a generator object, else ``gen.layer``.
    """
    if not all(isinstance(override, str) for override in overrides):
        raise ConfigError(f"overrides {overrides!r} must be strings as on train.py's command line, e.g. 'rank.parts=8'")
    started = time.time()
    if isinstance(generator, str):
        overrides = (f"gen={generator}", *([f"gen.layer={layer}"] if layer is not None else []), *overrides)
    elif not isinstance(generator, FeatureGenerator):
        raise ConfigError(f"fit takes a generator config's name or a FeatureGenerator, not {type(generator).__name__}")
    check_overrides(overrides, "train")
    net = generator if isinstance(generator, FeatureGenerator) else None
    if net is not None:
        given = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]
        if any(key == "gen" or key.startswith("gen.") for key in given):
            raise ConfigError(f"the generator {net.name} is an object: give its layer as layer=, not gen.*")
        if layer is None:
            raise ConfigError(f"fit {net.name} at which layer? Pass layer= one of {', '.join(net.layer_shapes())}")
    cfg = compose("train", overrides)
    directory = Path(run_dir or tempfile.mkdtemp(prefix="panda-run-")).expanduser().resolve()
    cfg.paths.output_dir = str(directory)
    if net is None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as train() does before it builds the generator
        net = instantiate(cfg.gen.net)
    else:
        cfg.gen = {"name": net.name, "layer": layer, "net": None}  # no config rebuilds an object: panda.load takes it
    try:
        train(cfg, started, generator=net)
    except Interrupted as stop:  # its message names train.py's command
        raise Interrupted(
            f"training stopped at a signal; fit again with run_dir='{directory}' to resume from its checkpoints",
            stop.exit_code,
        ) from None
    return load(directory, generator=net)


def load(run: str | Path, generator: FeatureGenerator | None = None, trusted_modules: Sequence[str] = ()) -> Factors:
    """The factors of a run directory (of ``train.py`` or :func:`fit`), with their generator: ``generator`` as it is
    (the object the factors were learnt on), else rebuilt from its config as ``evaluate.py`` does, which runs code
    outside panda only under the module prefixes of ``trusted_modules`` (``["my_gan"]``)."""
    opened = uses.open_run(run, trusted_modules=trusted_modules, net=generator)
    path = Path(run)
    run_dir = path if path.is_dir() else path.parent
    return Factors(**{f.name: getattr(opened, f.name) for f in fields(opened)}, run_dir=run_dir)


@dataclass(repr=False)
class Factors(uses.Factors):
    """PandA factors with their generator and run directory: ``A`` ``[C, R_C]`` (appearances), ``P`` ``[S, R_S]``
    (parts), and the uses of ``evaluate.py`` as methods. ``samples`` and ``seed`` number the samples shown, as
    ``evaluate.py``'s do."""

    run_dir: Path | None = None

    def __repr__(self) -> str:
        error = self.error
        return (
            f"Factors(generator={self.name!r}, layer={self.layer!r}, features={self.feature_shape}, "
            f"parts={self.parts}, appearances={self.appearances}, "
            f"error={'?' if error is None else f'{error:.4f}'}, run_dir='{self.run_dir}')"
        )

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (empty if it has none)."""
        path = None if self.run_dir is None else self.run_dir / METRICS_FILE
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}

    @property
    def error(self) -> float | None:
        """The final validation relative reconstruction error of training (``metrics.json``'s ``val_rel_error``)."""
        return self.metrics.get("val_rel_error")

    def show(self) -> Picture:
        """Every part as a mask, with its label when the parts are named."""
        return parts_picture(self.P, self.hw, self.labels)

    def part_mask(self, part: int | str, size: int) -> Tensor:
        """Where part ``part`` (an index or its label) is, at images of ``size x size``: its map upsampled, above
        half of its maximum ``[size, size]`` (bool)."""
        return upsampled_parts(self.P, self.hw, size)[self.check_index(part, "part")] > 0.5

    def edit(self, part: int | str, appearance: int, alpha: float, **options: Any) -> Edited:
        """The samples before and after painting appearance ``appearance`` with strength ``alpha`` onto part ``part``
        (an index, or its label). Options: ``samples``, ``seed``."""
        cfg = _task_config("edit", options, ())
        edit = editing.parse_edits([{"part": part, "appearance": appearance, "alpha": alpha}])
        return _edited(self, cfg, edit)

    def remove(self, part: int | str, **options: Any) -> Edited:
        """The samples before and after painting part ``part`` over with the appearance of its surroundings (or
        ``background``), as ``evaluate.py task=remove``. Options: ``background``, ``alpha``, ``statistics``,
        ``batch_size``, ``samples``, ``seed``."""
        cfg = _task_config("remove", options, ("background", "alpha", "statistics", "batch_size"))
        cfg.eval.part = part
        edit, _ = removal(cfg, self)
        return _edited(self, cfg, [edit])

    def localize(self, **options: Any) -> Localized:
        """Where each appearance is on the samples, as ``evaluate.py task=localize``. Options: ``statistics``,
        ``batch_size``, ``samples``, ``seed``."""
        cfg = _task_config("localize", options, ("statistics", "batch_size"))
        return Localized(*localized(cfg, self))

    def refine(self, **options: Any) -> Refined:
        """Parts refined for each sample, as ``evaluate.py task=refine``. Options: ``steps``, ``lr``, ``samples``,
        ``seed``."""
        cfg = _task_config("refine", options, ("steps", "lr"))
        samples, images, parts, errors = refined_parts(cfg, self)
        tiles, titles = refined_overlays(self, images, parts, samples)
        return Refined(samples, images, parts, errors, images_picture(tiles, len(samples), titles))

    def save(self, path: str | Path) -> Path:
        """Copy the run directory (``factors.pt``, ``metrics.json``, the pictures, checkpoints and logs, as
        ``train.py`` writes them) to ``path``, a new or empty directory; returns it."""
        if self.run_dir is None:
            raise ConfigError("these factors have no run directory to save: fit or load them with panda")
        target = Path(path).expanduser().resolve()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"{target} exists and is not an empty directory: save into a new one")
        staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copytree(self.run_dir, staging, ignore=shutil.ignore_patterns(LOCK_FILE))
            os.replace(staging, target)  # the whole directory, or none of it
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


@dataclass(repr=False)
class Edited:
    """The ``samples`` ``before`` and ``after`` an edit: images ``[B, 3, H, W]`` in ``[-1, 1]``."""

    samples: list[int]
    before: Tensor
    after: Tensor

    def change(self) -> Tensor:
        """How much the edit changed each pixel: ``|after - before|`` averaged over the samples and channels
        ``[H, W]``."""
        return (self.after - self.before).abs().mean(dim=(0, 1))

    def show(self) -> Picture:
        """The samples (top row) and the edited samples (bottom row)."""
        titles = [f"sample {i}" for i in self.samples] + ["edited"] * len(self.samples)
        return images_picture(np.concatenate([to_uint8(self.before), to_uint8(self.after)]), len(self.samples), titles)

    def _repr_png_(self) -> bytes:
        return self.show()._repr_png_()


@dataclass(repr=False)
class Localized:
    """Where each appearance is on the ``samples``: their ``images`` ``[B, 3, H, W]``, the ``masks``
    ``[B, R_C, H, W]`` (bool) and the ``thresholds`` ``[R_C]`` of the maps (the dataset mean of each)."""

    samples: list[int]
    images: Tensor
    masks: Tensor
    thresholds: Tensor

    def show(self, appearances: int | Sequence[int] | None = None) -> Picture:
        """The samples with the mask of each of ``appearances`` (default: the first 8) tinted, a row each."""
        chosen = range(min(SHOWN_APPEARANCES, self.masks.shape[1])) if appearances is None else appearances
        chosen = [chosen] if isinstance(chosen, int) else list(chosen)
        rows = np.concatenate([mask_overlay(self.images, self.masks[:, j]) for j in chosen])
        titles = [f"appearance {j}" for j in chosen for _ in self.samples]
        return images_picture(rows, len(self.samples), titles)

    def _repr_png_(self) -> bytes:
        return self.show()._repr_png_()


@dataclass(repr=False)
class Refined:
    """Parts refined for each of the ``samples``: their ``images`` ``[B, 3, H, W]``, ``parts`` ``P_i``
    ``[B, S, R_S]`` and ``errors`` ``[steps + 1, B]`` (each sample's before every step and after the last)."""

    samples: list[int]
    images: Tensor
    parts: Tensor
    errors: Tensor
    picture: Picture

    def show(self) -> Picture:
        """The samples with the global parts (top row) and with their refined parts (bottom row)."""
        return self.picture

    def _repr_png_(self) -> bytes:
        return self.picture._repr_png_()


def _edited(factors: Factors, cfg: DictConfig, edits: list[editing.Edit]) -> Edited:
    """The numbered samples of ``cfg`` before and after ``edits``."""
    samples, features, state = sample_features(cfg, factors)
    offset = editing.edit_offset(factors, edits)
    before, after = editing.edited_images(factors, features, state, offset, scales=(0.0, 1.0))
    return Edited(samples, before, after)


@functools.cache
def _evaluate_config(task: str) -> DictConfig:
    """``evaluate.py``'s config of ``task=<task>``, composed once (a notebook may edit hundreds of times)."""
    return compose("evaluate", [f"task={task}"])


def _task_config(task: str, options: dict[str, Any], keys: Sequence[str]) -> DictConfig:
    """``evaluate.py``'s config of ``task=<task>`` with ``options``: ``samples``, ``seed`` or one of ``keys`` of its
    ``eval`` node."""
    cfg = copy.deepcopy(_evaluate_config(task))
    for key, value in options.items():
        if key not in ("samples", "seed", *keys):
            raise ConfigError(f"unknown option {key}= of {task}; its options: {', '.join(('samples', 'seed', *keys))}")
        node = cfg if key in ("samples", "seed") else cfg.eval
        try:
            node[key] = list(value) if isinstance(value, range | tuple) else value
        except OmegaConfBaseException:
            raise ConfigError(f"{task}'s option {key}={value!r} is not a number, string or list of them") from None
    return cfg
