"""Logger factories that degrade gracefully instead of failing a run."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A :class:`WandbLogger`, offline when asked or when no W&B credentials are found.

    ``offline=None`` decides by the environment: ``WANDB_MODE=offline``, or no ``WANDB_API_KEY``
    and no W&B entry in ``~/.netrc``, gives an offline run to upload later with ``wandb sync``.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in {"offline", "dryrun"} or not _has_wandb_credentials()
        if offline:
            log.warning("W&B: no credentials found, logging offline; upload later with `wandb sync <run dir>/wandb`")
    return WandbLogger(offline=offline, **kwargs)
