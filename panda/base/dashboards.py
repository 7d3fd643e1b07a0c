"""W&B without a logger: whether to log offline, and a results table with its images in a run of its own
(``evaluate.py task=roir eval.wandb=true``; docs/dashboards.md)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc")).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline(offline: bool | None = None) -> bool:
    """Whether W&B should log offline: as asked, else when ``WANDB_MODE=offline`` or no
    ``WANDB_API_KEY`` and no W&B entry in ``~/.netrc`` (upload later with ``wandb sync``)."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in {"offline", "dryrun"} or not _has_wandb_credentials()
        if offline:
            log.warning("W&B: no credentials found, logging offline; upload later with `wandb sync <run dir>/wandb`")
    return offline


def log_results_to_wandb(
    directory: Path, project: str, name: str, config: dict[str, Any], rows: list[dict[str, Any]], images: list[Path]
) -> None:
    """One W&B run (offline without credentials) holding a results table and image files."""
    import wandb

    mode = "offline" if wandb_offline() else "online"
    with wandb.init(project=project, name=name, dir=str(directory), config=config, mode=mode) as run:
        columns = list(rows[0]) if rows else []
        run.log(
            {
                "results": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows]),
                **{f"images/{path.stem}": wandb.Image(str(path)) for path in images},
            }
        )
