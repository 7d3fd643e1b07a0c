"""Write tiny checkpoints in the official file formats (NVIDIA's persistence pickles)."""

from __future__ import annotations

import collections
import pickle
import sys
import types
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


def _record(module: nn.Module, init_kwargs: dict[str, Any] | None = None) -> _Persistent:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module.named_parameters(recurse=False)),
        "_buffers": collections.OrderedDict(module.named_buffers(recurse=False)),
        "_modules": collections.OrderedDict((n, _record(c)) for n, c in module.named_children()),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }
    meta = {"type": "class", "version": 4, "module_src": "# source", "class_name": type(module).__name__}
    return _Persistent({**meta, "state": state})


def write_stylegan_pickle(path: Path, net: nn.Module, init_kwargs: dict[str, Any]) -> Path:
    """Write ``net`` as the ``G``/``G_ema`` of an official StyleGAN2-ADA/StyleGAN3 training snapshot."""
    kwargs = {k: EasyDict(v) if isinstance(v, dict) else v for k, v in init_kwargs.items()}
    with _official_names():
        data = {"G": _record(net, kwargs), "G_ema": _record(net, kwargs), "training_set_kwargs": EasyDict(res=32)}
        path.write_bytes(pickle.dumps(data, protocol=4))
    return path
