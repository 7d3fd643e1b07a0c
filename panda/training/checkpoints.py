"""Training checkpoints: read safely, checked against the run's config, and written on interruption.

A run directory belongs to one configuration. A run resumes from ``ckpt_path`` when given, else
from the newest (highest step) of ``checkpoints/last.ckpt`` and ``checkpoints/interrupted.ckpt``
of its own directory, and only when the composed config equals the one stored in that checkpoint
(and in the directory's ``factors.pt``) on every key outside :data:`MAY_DIFFER`. Checkpoints are
read with ``torch.load(weights_only=True)`` only (:class:`SafeCheckpointIO` makes Lightning do the
same), so a checkpoint file cannot run code.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins import TorchCheckpointIO

from panda.base.errors import ConfigError, PandaError
from panda.base.factors_file import FACTORS_FILE, load_factors
from panda.base.files import load_plain, save_torch

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"  # under the run directory, as conf/callbacks/default.yaml writes them
LAST = "last.ckpt"  # resumed from on a tie of steps
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")  # of a ModelCheckpoint state
CONFIG_KEY = "panda_config"  # the resolved training config, stored in every checkpoint
# Keys that may differ between a run and the run it resumes: where things are written, how often
# and how much is shown, saved or kept in memory, and how long training goes on. Everything else changes results.
MAY_DIFFER = (
    "ckpt_path",
    "paths",
    "logger",
    "callbacks",
    "trainer.default_root_dir",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.val_check_interval",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps",
    "data.val_cache_mb",
)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``torch.load(weights_only=True)``; a :class:`ConfigError` when it
    cannot be read (damaged, truncated) or would need more than tensors and plain data (it could run code)."""
    checkpoint = load_plain(path, "checkpoint")
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path} is not a Lightning training checkpoint (it holds a {type(checkpoint).__name__})")
    missing = [k for k in ("state_dict", "global_step", "optimizer_states", "loops") if k not in checkpoint]
    if missing:
        raise ConfigError(f"{path} is not a Lightning training checkpoint (it lacks {', '.join(missing)})")
    kinds = {"state_dict": dict, "optimizer_states": list, "loops": dict, "callbacks": dict, "lr_schedulers": list}
    wrong = [key for key, kind in kinds.items() if key in checkpoint and not isinstance(checkpoint[key], kind)]
    step = checkpoint["global_step"]
    if wrong or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        what = f"its {wrong[0]} is a {type(checkpoint[wrong[0]]).__name__}" if wrong else f"global_step {step!r}"
        raise ConfigError(f"{path} is not a usable Lightning training checkpoint ({what})")
    for name, state in checkpoint.get("callbacks", {}).items():
        if isinstance(name, str) and name.startswith("ModelCheckpoint") and isinstance(state, dict):
            _confine(state, Path(os.path.realpath(Path(path).parent)))
    return checkpoint


def _confine(state: dict[str, Any], directory: Path) -> None:
    """Drop the paths of a ``ModelCheckpoint`` state that lie outside ``directory`` (its checkpoint's own): Lightning
    restores them and deletes the files they name once they are superseded."""

    def inside(value: Any) -> bool:
        return isinstance(value, str) and Path(os.path.realpath(value)).parent == directory

    for key in PATH_KEYS:
        if key in state and not inside(state[key]):
            state[key] = ""
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {k: v for k, v in state["best_k_models"].items() if inside(k)}


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint input/output, except that loading goes through :func:`read_checkpoint`
    (``weights_only=True`` whatever the torch and Lightning versions) and saving is atomic (a full disk leaves the
    previous file whole, never a truncated one)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_torch(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class RunConfig(pl.Callback):
    """The run's resolved config: logged as every logger's hyperparameters when ``fit`` sets up, and stored in every
    checkpoint (as ``panda_config``), where resuming checks it (:func:`resume_checkpoint`).

    Args:
        config: the run's config, given by :func:`panda.training.fit.train`.
    """

    def __init__(self, config: DictConfig) -> None:
        self.config = OmegaConf.to_container(config, resolve=True)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            for logger in trainer.loggers:
                logger.log_hyperparams(self.config)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


class InterruptCheckpoint(pl.Callback):
    """Saves ``<dirpath>/<filename>.ckpt`` when training stops on an exception (Ctrl-C, SIGTERM, a crash).

    Nothing is saved when training had not taken a step since it started or resumed (a failed
    restore, an interruption during the initialisation), when the exception is bad input or
    divergence (a :class:`~panda.base.errors.PandaError`), or when the factors are not finite. The file
    is removed when a run ends normally. Unlike Lightning's ``OnExceptionCheckpoint`` it does not
    make a ``fit`` without ``ckpt_path`` resume: resuming is decided by :func:`resume_checkpoint`.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.start_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.start_step is None or trainer.global_step <= self.start_step or isinstance(exception, PandaError):
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            return
        trainer.save_checkpoint(self.path)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:  # Lightning calls it when fit ends without an exception
            self.path.unlink(missing_ok=True)


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key stored (now current)`` for every key outside :data:`MAY_DIFFER` whose values differ."""
    old, new = _flatten(stored), _flatten(current)
    keys = sorted(k for k in old.keys() | new.keys() if not may_differ(k))
    pairs = {k: (old.get(k, "<unset>"), new.get(k, "<unset>")) for k in keys}
    return [f"{k}={was} (now {now})" for k, (was, now) in pairs.items() if was != now]


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint this run resumes from and its contents, or ``None`` for a fresh start.

    Raises:
        ConfigError: the directory holds the checkpoint or factors of a run with other settings,
            or ``ckpt_path`` is missing, unreadable or from a run with other settings, or the checkpoint holds
            more steps than ``trainer.max_steps`` (finishing would rewrite its factors as fewer).
    """
    current = OmegaConf.to_container(cfg, resolve=True)
    found = _directory_checkpoint(output_dir)
    stored = {}
    if found is not None and CONFIG_KEY in found[1]:
        stored[found[0]] = found[1][CONFIG_KEY]
    factors = output_dir / FACTORS_FILE
    if factors.is_file() and isinstance(text := load_factors(factors).get("config"), str):
        stored[factors] = yaml.safe_load(text)
    for source, config in stored.items():
        differ = differences(config, current)
        if differ:
            raise ConfigError(
                f"{output_dir} belongs to a run with other settings (in {source.name}): {', '.join(differ)}; "
                "pass another hydra.run.dir, or the same settings to resume it"
            )
    resume = _given_checkpoint(Path(cfg.ckpt_path), current) if cfg.get("ckpt_path") else found
    if resume is not None and resume[1]["global_step"] > cfg.trainer.max_steps:
        step = resume[1]["global_step"]
        raise ConfigError(
            f"{resume[0]} holds factors trained for {step} steps, more than trainer.max_steps="
            f"{cfg.trainer.max_steps}: pass trainer.max_steps>={step} to keep them, or another hydra.run.dir"
        )
    return resume


def _given_checkpoint(path: Path, current: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``ckpt_path`` names and its contents, checked against the ``current`` config."""
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path} does not exist; pass a checkpoint file such as outputs/<run>/checkpoints/last.ckpt"
        )
    checkpoint = read_checkpoint(path)
    differ = differences(checkpoint[CONFIG_KEY], current) if CONFIG_KEY in checkpoint else []
    if differ:
        raise ConfigError(f"ckpt_path={path} was saved by a run with other settings: {', '.join(differ)}")
    return path, checkpoint


def check_checkpoint(path: Path, checkpoint: dict[str, Any], model: pl.LightningModule) -> None:
    """A :class:`ConfigError` naming what differs when ``checkpoint`` was not saved for ``model``'s shapes and
    hyperparameters (another generator, layer or rank)."""
    stored = checkpoint.get("hyper_parameters") or {}
    hparams = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(model.hparams).items()}
    differ = [
        f"{k}={_plain(stored.get(k, '<unset>'))} (now {v})" for k, v in hparams.items() if _plain(stored.get(k)) != v
    ]
    state, expected = checkpoint["state_dict"], model.state_dict()
    for name, tensor in expected.items():
        found = state.get(name)
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            shape = list(found.shape) if isinstance(found, torch.Tensor) else "none"
            differ.append(f"{name} of shape {shape} (now {list(tensor.shape)})")
    differ += [f"{name} (now none)" for name in state if name not in expected]
    if differ:
        raise ConfigError(f"checkpoint {path} was saved for other settings: {', '.join(differ)}")
    _check_states(path, checkpoint, model)


def _check_states(path: Path, checkpoint: dict[str, Any], model: pl.LightningModule) -> None:
    """A :class:`ConfigError` when the optimizer's or the loops' state of ``checkpoint`` would not load (a damaged or
    crafted checkpoint), before training starts."""
    states = checkpoint["optimizer_states"]
    try:
        if len(states) != 1:
            raise ValueError(f"{len(states)} optimizer states for one optimizer")
        copy.deepcopy(model.solver).load_state_dict(states[0])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as error:
        raise ConfigError(f"checkpoint {path} holds an optimizer state that does not load ({error})") from None
    junk = [name for name, loop in checkpoint["loops"].items() if not isinstance(loop, dict)]
    if junk:
        raise ConfigError(f"checkpoint {path} holds a loop state {junk[0]!r} that is not Lightning's")


def _directory_checkpoint(output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of the run directory (highest step) and its contents; an unreadable one (a
    disk that filled up while an older panda wrote it) is skipped with a warning, and when none is readable the
    run is refused rather than started over (which would rewrite the directory's results)."""
    newest, skipped = None, []
    paths = sorted((output_dir / CHECKPOINT_DIR).glob("*.ckpt"), key=lambda p: (p.name != LAST, p.name))
    for path in paths:
        try:
            checkpoint = read_checkpoint(path)
        except ConfigError as error:
            log.warning("%s; skipped", error)
            skipped.append(path.name)
            continue
        if newest is None or checkpoint["global_step"] > newest[1]["global_step"]:
            newest = (path, checkpoint)
    if skipped and newest is None:
        raise ConfigError(
            f"no checkpoint in {output_dir / CHECKPOINT_DIR} is readable ({', '.join(skipped)}): move them away to "
            "train anew there, or pass another hydra.run.dir"
        )
    return newest


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def may_differ(key: str) -> bool:
    """Whether the config key ``key`` may differ between a run and the run it resumes (:data:`MAY_DIFFER`)."""
    return any(_under(key, prefix) for prefix in MAY_DIFFER)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
