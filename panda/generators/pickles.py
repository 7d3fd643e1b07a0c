"""Read NVIDIA's StyleGAN2-ADA / StyleGAN3 ``.pkl`` files without NVIDIA's code.

Those pickles rebuild every network module through
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds the
``class_name``, the module's source and its ``state`` (the module's ``__dict__``:
``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...). :class:`RestrictedUnpickler`
maps that function (and ``dnnlib.util.EasyDict``) to inert stand-ins and refuses every global
outside a short allow-list, so loading a file never runs code from it.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from panda.base.errors import WeightsError


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict."""


@dataclass
class PersistentRecord:
    """Stand-in for a module rebuilt by NVIDIA's persistence hook: its class name and state."""

    class_name: str
    state: dict[str, Any]


@dataclass
class OfficialNetwork:
    """One network of an official pickle: class name, constructor arguments, flat state dict."""

    class_name: str
    init_args: tuple
    init_kwargs: dict[str, Any]
    state_dict: dict[str, Tensor]


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentRecord:
    if meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise WeightsError("malformed persistent object in pickle (expected type 'class' with a state dict)")
    return PersistentRecord(str(meta["class_name"]), dict(meta["state"]))


def _load_from_bytes(data: bytes) -> Any:
    """Safe replacement for ``torch.storage._load_from_bytes`` (tensor storages)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_from_type_v2(func: Any, new_type: type, args: tuple, state: Any) -> Tensor:
    """Safe replacement for ``torch._tensor._rebuild_from_type_v2``: only tensors and parameters."""
    if func not in (torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter):
        raise WeightsError("pickle rebuilds a tensor through a disallowed function")
    tensor = func(*args)
    return tensor if new_type in (Tensor, torch.nn.Parameter) else tensor.as_subclass(Tensor)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("torch", name): getattr(torch, name) for name in ("float16", "float32", "float64", "bfloat16", "int64")},
}
# StyleGAN3 modules keep small numpy arrays and scalars as attributes.
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray"}


def _numpy_global(name: str) -> Any:
    import numpy

    multiarray = (getattr(numpy, "_core", None) or numpy.core).multiarray
    table = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    return {**table, "ndarray": numpy.ndarray, "dtype": numpy.dtype}.get(name)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals an official StyleGAN pickle needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        found = _numpy_global(name) if module in _NUMPY_MODULES else None
        if found is None:
            raise WeightsError(f"refusing to load pickle: it references '{module}.{name}', which is not allowed")
        return found


def _flatten(record: PersistentRecord, prefix: str, out: dict[str, Tensor]) -> None:
    state = record.state
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if value is not None:
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            _flatten(child, f"{prefix}{name}.", out)
        elif child is not None:
            raise WeightsError(f"unexpected non-persistent submodule '{prefix}{name}' in pickle")


def _plain(value: Any) -> Any:
    """Nested EasyDicts as plain dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_network(file: str | Path | BinaryIO, key: str = "G_ema") -> OfficialNetwork:
    """The network stored under ``key`` in an official StyleGAN2-ADA / StyleGAN3 pickle."""
    try:
        if isinstance(file, (str, Path)):
            with open(file, "rb") as handle:
                data = RestrictedUnpickler(handle).load()
        else:
            data = RestrictedUnpickler(file).load()
    except WeightsError as error:
        raise WeightsError(f"{file}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as error:
        raise WeightsError(f"{file} is not a readable StyleGAN pickle ({error.__class__.__name__}: {error})") from None
    record = data.get(key) if isinstance(data, dict) else None
    if not isinstance(record, PersistentRecord):
        raise WeightsError(f"{file} holds no network '{key}'; it is not an official StyleGAN2-ADA/StyleGAN3 pickle")
    state_dict: dict[str, Tensor] = {}
    _flatten(record, "", state_dict)
    state = record.state
    args = tuple(_plain(a) for a in state.get("_init_args") or ())
    return OfficialNetwork(record.class_name, args, _plain(state.get("_init_kwargs") or {}), state_dict)
