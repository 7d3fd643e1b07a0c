"""Train as ``train.py`` would with Lightning's DDP on 2 CPU processes, checking after every step that ``A`` and
``P`` are the same on both: ``python tests/ddp_ranks.py OUT [train.py overrides ...]`` (run by
``tests/test_ddp.py``). Rank 0 saves ``{"A", "P", "checked"}`` (``checked``: the steps compared) to ``OUT``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from panda.base.config import instantiate

ROOT = Path(__file__).resolve().parents[1]


class SameOnEveryRank(pl.Callback):
    """Fails the run when ``A`` or ``P`` differ between the processes after a step; counts the steps compared."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        for name in ("A", "P"):
            gathered = trainer.strategy.all_gather(getattr(pl_module, name).detach())
            if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
                raise AssertionError(f"{name} differs between the processes after step {trainer.global_step}")
        self.checked += 1


def main(out: Path, overrides: list[str]) -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={out.parent}"])
    pl.seed_everything(cfg.seed)
    generator = instantiate(cfg.gen.net)
    shape = generator.check_layer(cfg.gen.layer)
    model = instantiate(cfg.model, feature_shape=shape, parts=cfg.rank.parts, appearances=cfg.rank.appearances)
    data = instantiate(cfg.data, generator=generator, layer=cfg.gen.layer)
    check = SameOnEveryRank()
    trainer = instantiate(cfg.trainer, callbacks=[check], logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=data)
    if trainer.is_global_zero:
        torch.save({"A": model.exported_appearances(), "P": model.P.detach(), "checked": check.checked}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
