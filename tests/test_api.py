"""The Python API (panda.fit, panda.load, the factors' methods) and a generator of a user's own, outside panda
(tests/usergen): wrapped by FeatureGenerator.from_module, trained from a user config dir by train.py and by the API
alike, and opened by evaluate.py only when its module is trusted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import panda
import tests.usergen as usergen
from panda.base.config import compose
from panda.base.errors import ConfigError
from panda.base.resources import user_config_dirs
from panda.generators import FeatureGenerator
from panda.tasks.registry import evaluate
from panda.uses.factors import open_run
from panda.uses.visualize import Picture
from tests.conftest import ROOT, assert_resumes_after_the_layer, run_script

USER_CONFIGS = ROOT / "tests" / "usergen" / "conf"
BUDGET = ["experiment=debug", "rank.appearances=8", "trainer=cpu"]  # 4 Adam steps of 8 samples, 8 parts
TRUSTED = ["tests.usergen"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python train.py gen=tiny_gan`` with the user's config dir (``PANDA_CONFIG_PATH``)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    done = run_script("train.py", "gen=tiny_gan", *BUDGET, f"hydra.run.dir={out}",
                      env={"PANDA_CONFIG_PATH": str(USER_CONFIGS)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture
def user_configs(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PANDA_CONFIG_PATH", str(USER_CONFIGS))
    return USER_CONFIGS


def files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def latents(gen: FeatureGenerator) -> torch.Tensor:
    return gen.sample_latents(2, torch.Generator().manual_seed(0))


def test_a_module_resumes_by_itself_from_a_layer_inside_a_chain_of_sequentials(dcgan):
    gen = FeatureGenerator.from_module(dcgan.net, 100, name="faces")
    assert gen.resumable_layers() == list(gen.layer_shapes())  # DCGANNet returns main(z): every layer is in main
    assert_resumes_after_the_layer(gen, "main.8", latents(gen))


def test_a_module_that_cannot_resume_by_itself_says_so_and_resumes_through_the_users_function():
    bare = FeatureGenerator.from_module(usergen.TinyGAN(), usergen.Z_DIM)
    assert bare.resumable_layers() == []  # tanh(to_rgb(...)) runs after the blocks
    with pytest.raises(ConfigError, match=r"cannot run from layer 'blocks.1' on by itself .* pass resume=fn"):
        bare.features_and_state(latents(bare), "blocks.1")
    gen = usergen.generator()
    assert_resumes_after_the_layer(gen, "blocks.1", latents(gen))


@pytest.mark.parametrize(
    ("module", "sample_latents", "message"),
    [
        (nn.Linear(4, 4), 4, r"gives \(2, 4\), not images \[B, 3, H, W\]"),
        (nn.ReLU(), 4, "ReLU has no parameters"),
        (nn.Linear(4, 4), 0, "sample_latents=0: give a latent's size, its shape or a function"),
    ],
)
def test_a_module_that_panda_cannot_use_is_one_line(module, sample_latents, message):
    with pytest.raises(ConfigError, match=message):
        gen = FeatureGenerator.from_module(module, sample_latents)
        gen(gen.sample_latents(2, torch.Generator()))


def test_a_user_generator_trains_the_same_through_the_api_as_through_train_py(cli_run, user_configs, tmp_path):
    factors = panda.fit("tiny_gan", *BUDGET, run_dir=tmp_path / "api")
    stored = torch.load(cli_run / "factors.pt", weights_only=True)
    assert torch.equal(factors.A, stored["A"]) and torch.equal(factors.P, stored["P"])
    assert (factors.name, factors.layer, factors.feature_shape) == ("tiny_gan", "blocks.1", (16, 16, 16))
    assert math.isfinite(factors.error) and factors.error < 1
    saved = factors.save(tmp_path / "saved")
    written = {p for p in files(cli_run) if not p.startswith(".hydra/")} - {".lock", "train.log"}  # Hydra's own
    assert files(saved) == written
    reopened = panda.load(saved, trusted_modules=TRUSTED)
    assert torch.equal(reopened.A, factors.A) and torch.equal(reopened.P, factors.P)
    assert (reopened.name, reopened.layer, reopened.labels, reopened.run_dir) == ("tiny_gan", "blocks.1", None, saved)
    with pytest.raises(ConfigError, match="exists and is not an empty directory"):
        factors.save(saved)


def test_a_generator_object_is_fitted_edited_and_reopened_with_that_object(tmp_path):
    gen = usergen.generator()
    with pytest.raises(ConfigError, match=r"at which layer.*blocks.0, blocks.1"):
        panda.fit(gen, *BUDGET)
    factors = panda.fit(gen, *BUDGET, layer="blocks.1", run_dir=tmp_path / "run")
    assert factors.generator is gen and factors.name == "tiny_gan" and factors.error < 1
    assert isinstance(factors.show(), Picture) and factors.show()._repr_png_().startswith(b"\x89PNG")
    edited = factors.edit(0, 1, 5.0, samples=[0, 1])
    part = factors.part_mask(0, 32)
    assert edited.after.shape == (2, 3, 32, 32) and edited.change()[part].mean() > edited.change()[~part].mean()
    removed = factors.remove(0, statistics=16, samples=[0])
    assert not torch.equal(removed.before, removed.after)
    located = factors.localize(statistics=16, samples=[0, 1])
    assert located.masks.shape == (2, 8, 32, 32) and located._repr_png_().startswith(b"\x89PNG")
    refined = factors.refine(steps=3, samples=[0])
    assert refined.parts.shape == (1, 256, 8) and refined.errors[-1] <= refined.errors[0]
    with pytest.raises(ConfigError, match="unknown option step= of refine; its options: samples, seed, steps, lr"):
        factors.refine(step=3)
    with pytest.raises(ConfigError, match=r"given to panda\.fit as a Python object"):
        panda.load(tmp_path / "run")
    assert torch.equal(panda.load(tmp_path / "run", generator=gen).P, factors.P)


def test_a_user_generators_run_opens_only_when_its_module_is_trusted(cli_run, user_configs, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(usergen, "generator", lambda seed: built.append(seed))
    for trusted in ([], ["tests.user"], ["tests.usergen_v2"]):  # a prefix is a whole module name
        with pytest.raises(ConfigError) as refused:
            open_run(cli_run, trusted_modules=trusted)
        assert str(refused.value) == (
            f"the generator of {cli_run} is built by tests.usergen.generator, code outside panda's generators, "
            "which opening a run runs only when trusted: if you trust module tests.usergen, pass "
            "trusted_modules=[tests.usergen]"
        )
    assert built == []  # nothing of it ran
    with pytest.raises(ConfigError, match=r"trusted_modules='tests.usergen' must be a list of module names"):
        open_run(cli_run, trusted_modules="tests.usergen")


def test_a_user_generators_run_opens_in_the_tasks_when_trusted_and_roir_says_it_needs_faces(
    cli_run, user_configs, tmp_path
):
    def task(name: str, *overrides: str) -> dict:
        cfg = compose("evaluate", [f"task={name}", f"run={cli_run}", f"output_dir={tmp_path / name}",
                                   "samples=[0,1]", *overrides])  # fmt: skip
        return evaluate(cfg)

    trusted = "trusted_modules=[tests.usergen]"
    assert Path(task("edit", trusted)["files"]["before_after"]).is_file()
    with pytest.raises(ConfigError, match=r"^dlib found 0 faces in 4 samples; ROIR needs face images$"):
        task("roir", trusted, "eval.methods=[panda]", "eval.calibration=4")
    with pytest.raises(ConfigError, match=r"built by tests\.usergen\.generator, code outside panda's generators"):
        task("studio")  # refused before it serves anything


def test_a_user_config_dir_that_is_no_directory_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PANDA_CONFIG_PATH", f"{USER_CONFIGS}:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match=f"^PANDA_CONFIG_PATH names {tmp_path / 'missing'}, which is not a dir"):
        user_config_dirs()
