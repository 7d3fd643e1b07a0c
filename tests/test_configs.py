"""Every config file composes, and every ``_target_`` in it names something importable."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def options() -> list[tuple[str, str]]:
    return [(p.parent.name, p.stem) for p in sorted(CONF.glob("*/*.yaml")) if p.parent.name not in {"hydra", "edits"}]


def targets(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in targets(value)]
    return []


@pytest.fixture(autouse=True)
def hydra_dir():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def test_every_group_of_the_template_exists():
    for group in ["gen", "rank", "model", "data", "trainer", "logger", "callbacks", "experiment", "paths", "hydra"]:
        assert (CONF / group).is_dir(), group


@pytest.mark.parametrize(("group", "option"), options())
def test_every_config_option_composes_with_importable_targets(group, option):
    if group in {"eval", "task"}:  # evaluate.py picks its eval settings by task
        cfg = compose(config_name="evaluate", overrides=[f"task={option}"], return_hydra_config=True)
        assert cfg.task == option
    else:
        cfg = compose(config_name="train", overrides=[f"{group}={option}"], return_hydra_config=True)
        assert cfg.gen.layer
    for target in targets(OmegaConf.to_container(cfg, resolve=False)):
        assert callable(get_method(target)), target
