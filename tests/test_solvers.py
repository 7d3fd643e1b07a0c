"""The solvers of the ``model/solver`` group optimise the same objective and reach the same values."""

import itertools

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from panda.base.config import instantiate
from panda.base.errors import ConfigError
from panda.method import factorization as fz
from panda.method.data import FeatureDataModule
from panda.method.solvers import StatisticsSolver
from tests.conftest import ROOT, fit_in_process, panda_model

LAYER = "main.5"  # 256 x 8 x 8
STATS = ["model/solver=stats", "model.solver.appearance_steps=4", "model.solver.parts_steps=2"]


def fit(dcgan, steps: int, tmp_path, appearances: int | None, *overrides: str, ckpt_path=None):
    data = FeatureDataModule(dcgan, LAYER, batch_size=32, seed=5, val_samples=128, init_samples=128)
    model = panda_model(dcgan.check_layer(LAYER), 4, appearances, *overrides)
    trainer = fit_in_process(data, model, steps, tmp_path, val_every=steps, ckpt_path=ckpt_path)
    return float(trainer.callback_metrics["val/rel_error"]), model


def statistics_solver(params: list[torch.nn.Parameter], **options) -> StatisticsSolver:
    """The solver of ``conf/model/solver/stats.yaml`` on ``params``, with ``options`` overridden."""
    return instantiate(OmegaConf.load(ROOT / "conf" / "model" / "solver" / "stats.yaml"), **options)(params)


def test_each_pass_of_the_statistics_solver_lowers_the_objective_it_saw():
    g = torch.Generator().manual_seed(0)
    Z = torch.rand(40, 6, 12, generator=g, dtype=torch.float64)
    A = torch.nn.Parameter(fz.leading_eigenvectors(fz.channel_scatter(Z), 3))
    P = torch.nn.Parameter(fz.random_parts(12, 4, g).double())
    solver = statistics_solver([A, P], appearance_steps=4, parts_steps=4, parts_decay=0.0)
    errors = [fz.squared_error(Z, A, P).item()]
    for _ in range(6):  # alternating passes: P, A, P, A, ...
        for batch in Z.split(10):
            error, norm = solver.accumulate(batch)
            torch.testing.assert_close(error, fz.squared_error(batch, A, P))
            torch.testing.assert_close(norm, batch.square().sum())
            solver.step()
        errors.append(fz.squared_error(Z, A, P).item())
        assert (P >= 0).all()
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 0.5 * errors[0]


def test_reference_and_statistics_solver_lower_the_objective_from_the_same_start():
    g = torch.Generator().manual_seed(2)
    Z = torch.rand(40, 6, 12, generator=g, dtype=torch.float64)
    scatter, initial_parts = fz.channel_scatter(Z), fz.random_parts(12, 4, g).double()
    A = torch.nn.Parameter(fz.leading_eigenvectors(scatter, 3))  # where the reference starts too
    P = torch.nn.Parameter(initial_parts.clone())
    start = fz.squared_error(Z, A, P).item()
    *_, (ref_A, ref_P) = fz.reference_factorization(scatter, Z.split(1), initial_parts, 3, lr=3e-3)
    reference = fz.squared_error(Z, ref_A, ref_P).item()
    solver = statistics_solver([A, P], appearance_steps=2, parts_steps=2)
    for batch in Z.split(4):  # the same 40 samples: 5 passes
        solver.accumulate(batch)
        solver.step()
    stats = fz.squared_error(Z, A, P).item()
    assert reference < 0.3 * start and stats < 0.3 * start, (start, reference, stats)
    assert stats <= reference


def test_parts_solves_use_the_decayed_sum_of_the_parts_passes():
    g = torch.Generator().manual_seed(1)
    Z = torch.rand(60, 6, 12, generator=g, dtype=torch.float64)
    A = torch.nn.Parameter(fz.leading_eigenvectors(fz.channel_scatter(Z), 3))
    P = torch.nn.Parameter(fz.random_parts(12, 4, g).double())
    solver = statistics_solver([A, P], appearance_steps=1, parts_steps=2, parts_decay=0.5, first_pass="appearances")
    batches = Z.split(10)  # appearances pass (1 batch), parts pass (2 batches), twice
    G1 = G2 = 0
    for start in (0, 3):
        solver.accumulate(batches[start])
        solver.step()
        assert solver.updating_parts()
        new = [fz.parts_statistics(b, A.detach()) for b in batches[start + 1 : start + 3]]
        G1 = 0.5 * G1 + new[0][0] + new[1][0]
        G2 = 0.5 * G2 + new[0][1] + new[1][1]
        expected = fz.solve_parts(G1, G2, P.detach().clone(), max_iter=solver.param_groups[0]["max_iter"])
        for b in batches[start + 1 : start + 3]:
            solver.accumulate(b)
            solver.step()
        assert not solver.updating_parts()
        torch.testing.assert_close(P.detach(), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("appearances", "setting", "first_pass"),
    [
        (None, "auto", "appearances"),
        (16, "auto", "parts"),
        (None, "parts", "parts"),  # an explicit setting wins
        (16, "appearances", "appearances"),
    ],
)
def test_first_pass_auto_starts_with_the_appearances_only_when_they_span_every_channel(
    dcgan, appearances, setting, first_pass
):
    shape = dcgan.check_layer(LAYER)
    model = panda_model(shape, 8, appearances, "model/solver=stats", f"model.solver.first_pass={setting}")
    solver = model.configure_optimizers()
    assert solver.param_groups[0]["first_pass"] == first_pass
    assert solver.updating_parts() == (first_pass == "parts")
    with pytest.raises(ConfigError, match=r"first_pass='middle' is unknown; choices: auto, parts, appearances"):
        statistics_solver([model.A, model.P], first_pass="middle")


@pytest.mark.parametrize("appearances", [None, 16])
def test_solvers_reach_the_same_objective(dcgan, tmp_path, appearances):
    stats, _ = fit(dcgan, 48, tmp_path / "stats", appearances, *STATS)
    pgd, _ = fit(dcgan, 400, tmp_path / "pgd", appearances, "model/solver=pgd", "model.solver.lr=0.01")
    assert 0 < stats < 1 and 0 < pgd < 1
    assert abs(stats - pgd) < 0.02 * pgd, (stats, pgd)


def test_statistics_solver_resumes_mid_pass_exactly(dcgan, tmp_path):
    # passes of 2 (P) and 4 (A) steps: the run stops inside the first appearances pass, and the
    # resumed one goes on to parts solves on decayed sums of the parts passes' statistics
    _, straight = fit(dcgan, 14, tmp_path / "straight", 16, *STATS)
    fit(dcgan, 5, tmp_path / "first", 16, *STATS)
    _, resumed = fit(
        dcgan, 14, tmp_path / "second", 16, *STATS, ckpt_path=str(tmp_path / "first" / "ckpt" / "last.ckpt")
    )
    torch.testing.assert_close(resumed.P.data, straight.P.data)
    torch.testing.assert_close(resumed.A.data, straight.A.data)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.solver=stats"],
            r"model.solver='stats' is not a solver: pick one with model/solver=pgd or model/solver=stats",
        ),
        (["model/solver=stats", "model.solver.appearance_steps=0"], r"model.solver.appearance_steps=0 must be >= 1"),
        (["model/solver=stats", "model.solver.parts_steps=0"], r"model.solver.parts_steps=0 must be >= 1"),
        (["model/solver=stats", "model.solver.max_iter=0"], r"model.solver.max_iter=0 must be >= 1"),
        (["model/solver=stats", "model.solver.parts_decay=1.0"], r"model.solver.parts_decay=1.0 must be in \[0, 1\)"),
        (
            ["model/solver=stats", "model.solver.first_pass=middle"],
            r"model.solver.first_pass='middle' is unknown; choices: auto, parts, appearances",
        ),
        (
            ["model/solver=stats", "model.orthonormal=true"],
            r"model.orthonormal=true needs model/solver=pgd, not model/solver=stats",
        ),
    ],
)
def test_bad_solver_settings_are_rejected(dcgan, overrides, message):
    with pytest.raises(ConfigError, match=message):
        panda_model(dcgan.check_layer(LAYER), 4, 8, *overrides)


def test_unknown_solver_lists_the_solvers(dcgan):
    with pytest.raises(MissingConfigException, match=r"model/solver/newton(.|\n)*pgd\n\tstats"):
        panda_model(dcgan.check_layer(LAYER), 4, 8, "model/solver=newton")
