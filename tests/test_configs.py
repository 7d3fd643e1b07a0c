"""Every option of every config group composes, with importable targets, in the config that uses it."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method
from omegaconf import OmegaConf

from panda.base.config import check_overrides, instantiate
from panda.base.errors import ConfigError
from tests.conftest import run_script

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


GENERATORS = "biggan, dcgan_faces, progan_celebahq, stylegan1_ffhq, stylegan2_afhqdog, stylegan2_ffhq, stylegan3_afhqv2"


@pytest.mark.parametrize(
    ("overrides", "primary", "multirun", "message"),
    [
        (["gen=nonexistent"], "train", False, f"Could not find 'gen/nonexistent': available gen configs: {GENERATORS}"),
        (["gen=dcgan_faces,other"], "train", True, "Could not find 'gen/other': available gen configs: biggan,"),
        (["gen=dcgan_faces,biggan"], "train", False, "Ambiguous value for argument 'gen=dcgan_faces,biggan' 1."),
        (["trainer=tpu"], "train", False, "Could not find 'trainer/tpu': available trainer configs: cpu, ddp, default"),
        (
            ["task=paint"],
            "evaluate",
            False,
            "Could not find 'task/paint': available task configs: edit, localize, name",
        ),
        (["+experiment/solver=adam"], "train", False, "Could not find 'experiment/solver/adam': available experiment"),
        (["rank.part=16"], "train", False, "unknown config key rank.part (did you mean rank.parts?)"),
        (["+rank.part=16"], "train", False, "unknown config key rank.part (did you mean rank.parts?)"),
        (
            ["++trainer.max_step=3"],
            "train",
            False,
            "unknown config key trainer.max_step (did you mean trainer.max_steps?)",
        ),
        (["+eval.scale=[1]"], "evaluate", False, "unknown config key eval.scale (did you mean eval.scales?)"),
        (["hydra.run.dirr=out"], "train", False, "unknown config key hydra.run.dirr (did you mean hydra.run.dir?)"),
        (["gen.nett.arch.resolution=64"], "train", False, "unknown config key gen.nett (did you mean gen.net?)"),
        (
            ["gen=biggan,dcgan_faces", "gen.net.class_name=tench"],
            "train",
            True,
            "unknown config key gen.net.class_name",
        ),
        (["+rank.parts=16"], "train", False, "Could not append to config. An item is already at 'rank.parts'."),
        (["rank.parts=["], "train", False, "no viable alternative at input '['"),
    ],
)
def test_hydra_refuses_a_command_line_in_one_line(overrides, primary, multirun, message):
    with pytest.raises(ConfigError) as error:
        check_overrides(overrides, primary, multirun=multirun)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert compose(config_name="train").rank.parts == 48  # the test's GlobalHydra is still initialised


def test_hydra_composes_each_job_of_a_sweep_of_known_options_and_keys():
    check_overrides(
        [
            "gen=dcgan_faces,biggan",
            "rank.parts=4,8",
            "++rank.appearances=3",
            "~callbacks.artifacts",
            "gen.weights=/w",
            "experiment=ablation_solvers",
            "+experiment/solver=stats",
            "hydra/job_logging=disabled",
            "hydra.run.dir=o",
        ],
        "train",
        multirun=True,
    )


def test_the_command_line_is_checked_before_hydra_starts(tmp_path):
    for args in (["-m", "gen=dcgan_faces,nope"], ["--config-name", "evaluate", "eval.scale=[1]"]):
        done = run_script("train.py", *args, cwd=tmp_path)
        assert done.returncode == 2 and not list(tmp_path.iterdir()), done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "Could not find 'gen/nope'" in run_script("train.py", "-m", "gen=dcgan_faces,nope", cwd=tmp_path).stderr


def dotted_keys(node: object, prefix: str = "") -> set[str]:
    """The dotted keys of the mappings in ``node``."""
    if not isinstance(node, dict):
        return set()
    keys = {f"{prefix}{k}" for k in node}
    return keys.union(*(dotted_keys(v, f"{prefix}{k}.") for k, v in node.items()))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_an_experiment_sets_only_keys_its_config_has(experiment):
    # Hydra merges a config file's keys as they are; a misspelt one in an experiment would be silently added
    body = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    defaults = body.pop("defaults", [])
    body.pop("hydra", None)
    groups = {key.removeprefix("override /"): v for entry in defaults for key, v in entry.items()}
    options = [f"{g}=[{','.join(v)}]" if isinstance(v, list) else f"{g}={v}" for g, v in groups.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="train", overrides=options)
    known = dotted_keys(OmegaConf.to_container(base))
    assert dotted_keys(body) <= known, dotted_keys(body) - known
