"""PandA: non-negative parts and appearances of a pretrained GAN's feature maps.

The Python API (``docs/api.md``): :func:`fit`, :func:`load`, :class:`Factors`, :class:`FeatureGenerator` (with
``FeatureGenerator.from_module`` for any ``torch.nn.Module``) and :func:`load_generator`. They are imported when
first used, so that the commands start without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "fit": "panda.api",
    "load": "panda.api",
    "Factors": "panda.api",
    "FeatureGenerator": "panda.generators",
    "load_generator": "panda.generators",
}
__all__ = ["Factors", "FeatureGenerator", "fit", "load", "load_generator"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'panda' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
