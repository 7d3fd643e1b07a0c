"""Write tiny checkpoints in the official file formats (NVIDIA's persistence pickles)."""

from __future__ import annotations

import collections
import pickle
import sys
import types
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn


class EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict``."""


def _reconstruct_persistent_obj(meta: dict) -> None:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj``; never called here."""


class _Persistent:
    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self) -> tuple:
        return _reconstruct_persistent_obj, (self.meta,)


@contextmanager
def _official_names():
    """Make the stand-ins importable under NVIDIA's module names while pickling."""
    names = {"torch_utils": None, "torch_utils.persistence": _reconstruct_persistent_obj, "dnnlib": None}
    names["dnnlib.util"] = EasyDict
    saved = {name: sys.modules.get(name) for name in names}
    for name, obj in names.items():
        module = types.ModuleType(name)
        if obj is not None:
            obj.__module__ = name
            setattr(module, obj.__name__, obj)
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module


def _record(
    module: nn.Module,
    init_kwargs: dict[str, Any] | None = None,
    attributes: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> _Persistent:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),  # None buffers too (StyleGAN3's identity filters)
        "_modules": collections.OrderedDict((n, _record(c, None, attributes)) for n, c in module.named_children()),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
        **(attributes(module) if attributes else {}),
    }
    meta = {"type": "class", "version": 4, "module_src": "# source", "class_name": type(module).__name__}
    return _Persistent({**meta, "state": state})


def write_stylegan_pickle(
    path: Path,
    net: nn.Module,
    init_kwargs: dict[str, Any],
    attributes: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> Path:
    """Write ``net`` as the ``G``/``G_ema`` of an official StyleGAN2-ADA/StyleGAN3 training snapshot.

    ``attributes(module)`` adds plain attributes to a module's pickled ``__dict__`` (StyleGAN3 keeps
    numpy arrays and scalars there).
    """
    kwargs = {k: EasyDict(v) if isinstance(v, dict) else v for k, v in init_kwargs.items()}
    with _official_names():
        records = {key: _record(net, kwargs, attributes) for key in ("G", "G_ema")}
        data = {**records, "training_set_kwargs": EasyDict(res=32)}
        path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def stylegan3_attributes(module: nn.Module) -> dict[str, Any]:
    """Numpy attributes as NVIDIA's StyleGAN3 modules keep them in their ``__dict__`` (values only illustrative)."""
    import numpy as np

    name = type(module).__name__
    if name == "FullyConnectedLayer":
        return {"activation": "linear", "weight_gain": np.float64(module.weight_gain), "bias_gain": 1}
    if name == "SynthesisInput":
        return {"size": np.broadcast_to(np.asarray(module.size), [2]), "sampling_rate": np.float64(16.0)}
    if name == "SynthesisLayer":
        return {"in_size": np.broadcast_to(np.asarray(36), [2]), "in_cutoff": np.float64(2.0), "up_factor": module.up}
    return {}
