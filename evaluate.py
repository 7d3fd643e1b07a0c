"""Use learnt factors: ``python evaluate.py task=edit|remove|localize|refine|roir|name|studio run=RUN_DIR [...]``."""

import hydra
from omegaconf import DictConfig

from panda.cli.main import check_command_line, command


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from panda.tasks.registry import evaluate

    command(lambda: evaluate(cfg))


if __name__ == "__main__":
    check_command_line("evaluate")
    main()
