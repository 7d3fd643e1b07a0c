"""The PandA LightningModule and the streaming DataModule, trained in-process on the real DCGAN."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from panda.base.errors import ConfigError
from panda.method import factorization as fz
from panda.method.data import FeatureDataModule, Stream
from panda.method.model import PandA, check_ranks
from tests.conftest import fit_in_process, panda_model

LAYER = "main.5"  # 256 x 8 x 8: quick


def stream(dcgan, precision: str = "fp32", val_cache_mb: float = 1024) -> FeatureDataModule:
    return FeatureDataModule(
        dcgan,
        LAYER,
        batch_size=8,
        seed=3,
        val_samples=16,
        init_samples=32,
        precision=precision,
        val_cache_mb=val_cache_mb,
    )


def drawn_streams(data: FeatureDataModule, monkeypatch) -> list[Stream]:
    """The stream of every batch ``data`` computes from now on, in order."""
    streams = []
    batch = data.batch
    monkeypatch.setattr(data, "batch", lambda stream, *args: streams.append(stream) or batch(stream, *args))
    return streams


def fit(
    dcgan, steps: int, tmp_path: Path, *overrides: str, ckpt_path: str | None = None, callbacks=(), precision="fp32"
) -> PandA:
    data = stream(dcgan, precision)
    model = panda_model(dcgan.check_layer(LAYER), 4, 8, "model/solver=pgd", *overrides)
    fit_in_process(data, model, steps, tmp_path, ckpt_path=ckpt_path, callbacks=tuple(callbacks))
    return model


class AfterEveryStep(pl.Callback):
    def __init__(self) -> None:
        self.minima: list[float] = []
        self.zeros: list[int] = []
        self.gram_errors: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.minima.append(pl_module.P.min().item())
        self.zeros.append(int((pl_module.P == 0).sum()))
        A = pl_module.A.detach()
        self.gram_errors.append((A.T @ A - torch.eye(A.shape[1])).abs().max().item())


def test_parts_are_non_negative_after_every_step(dcgan, tmp_path):
    probe = AfterEveryStep()
    fit(dcgan, 6, tmp_path, "model.solver.lr=0.05", callbacks=[probe])
    assert len(probe.minima) == 6
    assert min(probe.minima) >= 0
    assert max(probe.zeros) > 0  # the projection was active: some entries were clamped


def test_orthonormal_option_keeps_appearances_orthonormal(dcgan, tmp_path):
    probe = AfterEveryStep()
    fit(dcgan, 4, tmp_path, "model.orthonormal=true", callbacks=[probe])
    assert max(probe.gram_errors) < 1e-5
    unconstrained = AfterEveryStep()
    fit(dcgan, 4, tmp_path / "free", "model.solver.lr=0.05", callbacks=[unconstrained])
    assert max(unconstrained.gram_errors) > 1e-3


def test_hosvd_initialisation_uses_the_init_stream(dcgan, tmp_path):
    data = FeatureDataModule(dcgan, LAYER, batch_size=8, seed=3, init_samples=24)
    model = panda_model(dcgan.check_layer(LAYER), 4, 5)
    model.initialize(data.init_dataloader())
    Z = torch.cat([fz.flatten_features(b) for b in data.init_dataloader()])
    assert Z.shape[0] == 24
    torch.testing.assert_close(model.A.data, fz.leading_eigenvectors(fz.channel_scatter(Z), 5))
    assert bool(model.initialized)


# 2 batches of 8 at each of 4 validations (Lightning's sanity check, then after steps 2, 4 and 6)
@pytest.mark.parametrize(("cache_mb", "computed"), [(1024, 2), (0, 8)])
def test_validation_features_are_computed_once_when_they_fit(dcgan, tmp_path, monkeypatch, cache_mb, computed):
    data = stream(dcgan, val_cache_mb=cache_mb)
    streams = drawn_streams(data, monkeypatch)
    model = panda_model(dcgan.check_layer(LAYER), 4, 8, "model/solver=pgd")
    trainer = fit_in_process(data, model, 6, tmp_path)
    assert streams.count(Stream.VAL) == computed
    fresh = [model.errors(b) for b in stream(dcgan).val_dataloader()]  # the final factors on features made afresh
    error = sum(e for e, _ in fresh) / sum(n for _, n in fresh)
    assert float(trainer.callback_metrics["val/rel_error"]) == pytest.approx(error.item(), rel=1e-6)


def test_the_statistics_solver_at_r_c_equal_c_skips_the_hosvd_which_changes_nothing(dcgan, tmp_path, monkeypatch):
    def trained(hosvd: bool) -> tuple[PandA, list[Stream]]:
        data = stream(dcgan)
        streams = drawn_streams(data, monkeypatch)
        model = panda_model(dcgan.check_layer(LAYER), 4, None, "model/solver=stats")
        if hosvd:
            monkeypatch.setattr(model, "needs_initialization", lambda: True)
        fit_in_process(data, model, 24, tmp_path / str(hosvd), val_every=12)
        return model, streams

    (skipped, streams), (initialised, init_streams) = trained(False), trained(True)
    assert Stream.INIT not in streams and Stream.INIT in init_streams
    assert bool(skipped.initialized)
    torch.testing.assert_close(skipped.P.data, initialised.P.data)
    torch.testing.assert_close(skipped.A.data, initialised.A.data)  # each appearance, not only their span
    assert panda_model(dcgan.check_layer(LAYER), 4, 8, "model/solver=stats").needs_initialization()  # R_C < C
    assert panda_model(dcgan.check_layer(LAYER), 4, None, "model/solver=pgd").needs_initialization()  # Adam


def test_training_lowers_the_validation_error(dcgan, tmp_path):
    data = stream(dcgan)  # the one fit() trains on
    untrained = panda_model(dcgan.check_layer(LAYER), 4, 8, "model/solver=pgd")
    untrained.initialize(data.init_dataloader())  # where fit() starts from
    trained = fit(dcgan, 60, tmp_path, "model.solver.lr=0.01")
    start, end = (sum(m.errors(b)[0].item() for b in data.val_dataloader()) for m in (untrained, trained))
    assert end < 0.85 * start


def test_bf16_features_train_factors_as_good_as_fp32_ones(dcgan, tmp_path):
    data = stream(dcgan)  # fp32
    fp32 = fit(dcgan, 60, tmp_path / "fp32", "model.solver.lr=0.01")
    bf16 = fit(dcgan, 60, tmp_path / "bf16", "model.solver.lr=0.01", precision="bf16")
    assert not torch.equal(fp32.P.data, bf16.P.data)  # trained on other (rounded) features
    fp32_error, bf16_error = (sum(m.errors(b)[0].item() for b in data.val_dataloader()) for m in (fp32, bf16))
    assert bf16_error == pytest.approx(fp32_error, rel=5e-4)


def test_resumed_run_equals_an_uninterrupted_one(dcgan, tmp_path):
    straight = fit(dcgan, 6, tmp_path / "straight")
    fit(dcgan, 3, tmp_path / "first")
    resumed = fit(dcgan, 6, tmp_path / "second", ckpt_path=str(tmp_path / "first" / "ckpt" / "last.ckpt"))
    torch.testing.assert_close(resumed.P.data, straight.P.data)
    torch.testing.assert_close(resumed.A.data, straight.A.data)
    torch.testing.assert_close(resumed.exported_appearances(), straight.exported_appearances())


def test_exported_appearances_are_numbered_by_norm_and_signed_by_their_third_moment_on_validation(dcgan, tmp_path):
    model = fit(dcgan, 6, tmp_path, "model.solver.lr=0.01")
    exported = model.exported_appearances()
    assert not torch.equal(exported, model.A.data)  # Adam left another numbering and other signs here
    Z = torch.cat([fz.flatten_features(b) for b in stream(dcgan).val_dataloader()])
    norms = exported.norm(dim=0)
    assert (fz.coefficient_cubes(Z, exported, model.P.data) >= 0).all() and (norms[:-1] >= norms[1:]).all()
    torch.testing.assert_close(exported @ exported.T, model.A.data @ model.A.data.T)


@pytest.mark.parametrize(
    ("parts", "appearances", "message"),
    [
        (0, None, r"rank.parts=0 is out of range: it must be an integer in \[1, 64\]"),
        (65, None, r"rank.parts=65 .*\[1, 64\] \(S = H\*W = 8\*8"),
        (4, 257, r"rank.appearances=257 .*\[1, 256\] \(C = 256"),
        (4, -1, r"rank.appearances=-1"),
        (2.5, None, r"rank.parts=2.5"),
    ],
)
def test_ranks_out_of_range_are_rejected(parts, appearances, message):
    with pytest.raises(ConfigError, match=message):
        check_ranks((256, 8, 8), parts, appearances)


def test_default_appearance_rank_is_all_channels():
    assert check_ranks((256, 8, 8), 4, None) == (4, 256)
