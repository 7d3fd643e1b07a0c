"""Use learnt factors: ``panda-evaluate task=edit|remove|localize|refine|roir|name|studio run=RUN_DIR [...]`` (or
``python evaluate.py``)."""

import hydra
from omegaconf import DictConfig

from panda.base.resources import config_dir
from panda.cli.main import check_command_line, command


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _evaluate(cfg: DictConfig) -> None:
    # imported once Hydra has set up logging: Lightning, imported earlier, would keep its lines out of the log
    from panda.tasks.registry import evaluate

    command(lambda: evaluate(cfg))


def main() -> None:
    """The ``panda-evaluate`` command: the command line checked, then Hydra's app."""
    check_command_line("evaluate")
    _evaluate()
