"""The settings of the ROIR benchmark, checked once: :class:`ROIRSettings` from a config node (conf/roir/default.yaml,
pulled into ``eval`` by conf/task/roir.yaml and into the callbacks of conf/callbacks/roir*.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from panda.base.config import finite_number, positive_int
from panda.base.errors import ConfigError
from panda.base.resources import cache_dir
from panda.uses.landmarks import FEATURES, LandmarkDetector, check_features, check_min_face, check_regions


@dataclass(frozen=True)
class ChooseSettings:
    """How directions are chosen: the target change inside the ROI and the search's budget (``choose`` in
    conf/roir/default.yaml, which explains each). ``candidates`` is every method's budget alike; ``effect``: the
    change of a semantic edit's landmark measure every method is scaled to, in standard deviations of the measure
    over the calibration faces."""

    inside_change: float
    screen: int
    finalists: int
    iterations: int
    candidates: int
    effect: float
    max_change: float
    dilation: int
    chunk: int

    @classmethod
    def from_config(cls, node: Mapping[str, Any], key: str) -> ChooseSettings:
        """The settings of ``node``; a :class:`ConfigError` naming ``key.<field>`` for a bad value."""
        settings = _build(cls, node, key)
        counts = {"screen": settings.screen, "finalists": settings.finalists, "iterations": settings.iterations}
        counts |= {"candidates": settings.candidates, "chunk": settings.chunk}
        for name, value in counts.items():
            if value < 1:
                raise ConfigError(f"{key}.{name}={value} must be >= 1")
        if not settings.inside_change > 0 or not settings.effect > 0 or settings.dilation < 0:
            raise ConfigError(f"{key}.inside_change and {key}.effect must be > 0 and {key}.dilation >= 0")
        if not settings.max_change >= settings.inside_change:
            raise ConfigError(f"{key}.max_change={settings.max_change} must be >= {key}.inside_change")
        return settings

    def semantic_change(self, change: float) -> bool:
        """Whether a semantic edit may take this mean RMS change inside its region: at least a region edit's
        (``inside_change``: less moves the landmarks without editing the region) and at most ``max_change``."""
        return self.inside_change <= change <= self.max_change


@dataclass(frozen=True)
class ROIRSettings:
    """What the benchmark measures and how (conf/roir/default.yaml explains each setting).

    ``baselines``: each baseline's constructor options; ``grid``: the first test faces kept for the figures;
    ``features``: the semantic edits (:data:`panda.uses.landmarks.FEATURES`); ``full_search``: also choose among
    every candidate of each method (a second table); ``effect_faces``: the first measured faces whose landmarks
    are found again after each semantic edit (the effect achieved); ``tune``: per baseline, per
    option, the values tried on ``tune_samples`` samples of the ROIR validation stream (the lowest mean ROIR over the
    regions is used).
    """

    test_samples: int
    calibration: int
    batch_size: int
    regions: tuple[str, ...]
    features: tuple[str, ...]
    full_search: bool
    effect_faces: int
    methods: tuple[str, ...]
    upscale: int
    min_face: float
    landmark_cache: bool
    choose: ChooseSettings
    baselines: dict[str, dict[str, Any]]
    above: float
    grid: int
    tune: dict[str, dict[str, list[Any]]]
    tune_samples: int

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig, key: str) -> ROIRSettings:
        """The settings of ``node`` (found at config key ``key``: ``eval``, ``callbacks.roir_final``, ...);
        a :class:`ConfigError` naming the key of a bad value."""
        node = node if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
        plain: dict[str, Any] = OmegaConf.to_container(node, resolve=True)
        for name in ("test_samples", "batch_size", "grid", "upscale", "effect_faces", "tune_samples"):
            positive_int(f"{key}.{name}", plain.get(name))
        if positive_int(f"{key}.calibration", plain.get("calibration")) < 2:
            raise ConfigError(f"{key}.calibration={plain['calibration']} must be >= 2")
        plain["min_face"] = check_min_face(plain.get("min_face"), f"{key}.min_face")
        plain["above"] = finite_number(f"{key}.above", plain.get("above"))
        plain["choose"] = ChooseSettings.from_config(plain.get("choose") or {}, f"{key}.choose")
        plain["regions"] = tuple(check_regions([str(r) for r in plain.get("regions") or []]))
        plain["features"] = tuple(check_features([str(f) for f in plain.get("features") or []]))
        if not isinstance(plain.get("full_search"), bool):
            raise ConfigError(f"{key}.full_search={plain.get('full_search')!r} must be true or false")
        plain["methods"] = tuple(str(m) for m in plain.get("methods") or [])
        if not plain["methods"] or not plain["regions"]:
            raise ConfigError(f"{key}.methods and {key}.regions must each name at least one")
        plain["baselines"] = {name: dict(options or {}) for name, options in (plain.get("baselines") or {}).items()}
        plain["tune"] = {name: dict(knobs or {}) for name, knobs in (plain.get("tune") or {}).items()}
        for name, knobs in plain["tune"].items():
            if name not in plain["baselines"]:
                raise ConfigError(f"{key}.tune.{name}: not a baseline of {key}.baselines")
            for knob, values in knobs.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{key}.tune.{name}.{knob}={values!r} must be a non-empty list of values")
        return _build(cls, plain, key)

    @property
    def searched_regions(self) -> tuple[str, ...]:
        """The regions a direction is chosen in: ``regions``, then those of the ``features`` not among them."""
        return tuple(dict.fromkeys([*self.regions, *(FEATURES[feature].region for feature in self.features)]))

    def detector(self) -> LandmarkDetector:
        """dlib's detector at ``upscale``, skipping faces narrower than ``min_face``."""
        return LandmarkDetector(self.upscale, min_face=self.min_face)

    @property
    def cache(self) -> Path | None:
        """Where dlib's landmarks are kept (``landmark_cache``), or ``None``."""
        return cache_dir() / "landmarks" if self.landmark_cache else None


def _build(cls: type, node: Mapping[str, Any], key: str) -> Any:
    """``cls`` of the fields of ``node`` (the node's other keys are its config's own, such as the task's
    ``devices``); a :class:`ConfigError` naming ``key.<field>`` for a missing one."""
    missing = [name for name in cls.__dataclass_fields__ if name not in node]
    if missing:
        raise ConfigError("; ".join(f"missing {key}.{name}" for name in missing))
    return cls(**{name: node[name] for name in cls.__dataclass_fields__})
