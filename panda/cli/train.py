"""Learn PandA parts and appearances: ``panda-train [gen=...] [rank.parts=...] [-m ...]`` (or ``python train.py``)."""

import time

STARTED = time.time()  # the command's start, for metrics.json's first_step_seconds: before any other import

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from panda.base.resources import config_dir  # noqa: E402
from panda.cli.main import check_command_line, command  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train(cfg: DictConfig) -> float:
    # imported once Hydra has set up logging: Lightning, imported earlier, would keep its lines out of the log
    from panda.training.fit import train

    return command(lambda: train(cfg, started=STARTED)["val_rel_error"])


def main() -> None:
    """The ``panda-train`` command: the command line checked, then Hydra's app (a run, or ``-m`` a sweep)."""
    check_command_line("train")
    _train()
