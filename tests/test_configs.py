"""Every option of every config group composes, with importable targets, in the config that uses it."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method
from omegaconf import OmegaConf

from panda.base.config import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"
PRIMARIES = ("train", "evaluate")
NOT_GROUPS = {"edits"}  # the edit zoo, read by panda.uses.editing, not composed
# groups no primary config's defaults list names: appended (+group=option) to the config that sweeps them, or to
# one whose options pull them in (roir: conf/task/roir.yaml and conf/callbacks/roir*.yaml, at a package of theirs)
APPENDED = {("train", "experiment/solver"): ["experiment=ablation_solvers"], ("evaluate", "roir"): []}


def group_options() -> list[tuple[str, str, str]]:
    """``(primary config, group, option)`` for every option file under ``conf/`` of every group
    (nested ones such as ``model/solver`` included) that a primary config composes."""
    GlobalHydra.instance().clear()
    found = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for primary in PRIMARIES:
            for group in compose(config_name=primary, return_hydra_config=True).hydra.runtime.choices:
                options = loader.get_group_options(group)
                found += [(primary, group, o) for o in options if (CONF / group / f"{o}.yaml").is_file()]
        for primary, group in APPENDED:
            found += [(primary, group, o) for o in loader.get_group_options(group)]
    GlobalHydra.instance().clear()
    return found


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


def test_every_option_file_belongs_to_a_group_a_config_composes():
    files = {p.relative_to(CONF) for p in CONF.rglob("*.yaml") if p.parent != CONF and p.parts[-2] not in NOT_GROUPS}
    composed = {Path(group) / f"{option}.yaml" for _, group, option in group_options()}
    assert files == composed


@pytest.mark.parametrize(("primary", "group", "option"), group_options())
def test_every_config_option_composes_with_importable_targets(primary, group, option):
    appended = APPENDED.get((primary, group))
    overrides = [f"{group}={option}"] if appended is None else [*appended, f"+{group}={option}"]
    cfg = compose(config_name=primary, overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option
    for target in targets(OmegaConf.to_container(cfg, resolve=False)):
        assert callable(get_method(target)), target


@pytest.mark.parametrize("solver", ["pgd", "stats"])
def test_every_solver_builds_an_optimizer_of_the_factors(solver):
    cfg = compose(config_name="train", overrides=[f"model/solver={solver}"])
    model = instantiate(cfg.model, feature_shape=(8, 4, 4), parts=2, appearances=3)
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["params"] == [model.A, model.P]


@pytest.mark.parametrize(
    ("experiment", "grid"),
    [
        ("ablation_ranks", {"rank.parts": "8,16,32,48,64", "rank.appearances": "16,32,null"}),
        ("ablation_layers", {"gen.layer": "main.5,main.8,main.11", "rank.parts": "8,16,32"}),
        ("ablation_solvers", {"+experiment/solver": "pgd_lr0.001,pgd_lr0.003,pgd_lr0.01,stats"}),
    ],
)
def test_ablation_experiments_sweep_their_grid_and_measure_roir(experiment, grid):
    cfg = compose(config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == grid
    assert cfg.hydra.sweep.dir.startswith(f"multirun/{experiment}/")
    assert "roir_final" in cfg.callbacks and ("early_stop" in cfg.callbacks) == (experiment == "ablation_solvers")


@pytest.mark.parametrize(
    ("option", "target", "lr"),
    [
        ("pgd_lr0.001", "torch.optim.Adam", 0.001),
        ("pgd_lr0.01", "torch.optim.Adam", 0.01),
        ("stats", "panda.method.solvers.StatisticsSolver", None),
    ],
)
def test_each_solver_of_the_solver_ablation_sets_its_solver_and_rate(option, target, lr):
    cfg = compose(config_name="train", overrides=["experiment=ablation_solvers", f"+experiment/solver={option}"])
    assert cfg.model.solver._target_ == target
    assert cfg.model.solver.get("lr") == lr
