"""Learn PandA parts and appearances: ``python train.py [gen=...] [rank.parts=...] [-m ...]``."""

import hydra
from omegaconf import DictConfig

from panda.cli import check_command_line, run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from panda.training import train

    return run(lambda: train(cfg)["val_rel_error"])


if __name__ == "__main__":
    check_command_line("train")
    main()
