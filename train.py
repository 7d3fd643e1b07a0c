"""Learn PandA parts and appearances: ``python train.py [gen=...] [rank.parts=...] [-m ...]``."""

import time

STARTED = time.time()  # the command's start, for metrics.json's first_step_seconds

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from panda.cli.main import check_command_line, command  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from panda.training.fit import train

    return command(lambda: train(cfg, started=STARTED)["val_rel_error"])


if __name__ == "__main__":
    check_command_line("train")
    main()
