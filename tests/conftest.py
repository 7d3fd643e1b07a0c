"""Shared fixtures and helpers: the real DCGAN face generator, runs with made-up factors, a script runner, a
two-step training config, the tiny architectures of the other generators."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from panda.base.config import instantiate
from panda.generators.base import FeatureGenerator
from panda.generators.dcgan import DCGANFaces
from panda.generators.stylegan2 import StyleGAN2
from panda.method.data import FeatureDataModule, layer_features
from panda.method.factorization import orthonormalize
from panda.method.model import PandA
from panda.uses.factors import Factors

ROOT = Path(__file__).resolve().parents[1]
LAYER, SHAPE = "main.8", (128, 16, 16)

# A training budget small enough for tests: a few steps on a handful of samples.
TINY = ["experiment=debug"]
# An in-process ``train(cfg)`` budget: two steps on a handful of samples, no logger or callbacks.
TWO_STEPS = [
    "experiment=debug",
    "rank.appearances=4",
    "trainer=cpu",
    "trainer.max_steps=2",
    "data.batch_size=4",
    "data.val_samples=8",
    "data.init_samples=8",
    "logger=none",
    "callbacks={}",
]
# In-process runs that resume: a few Adam steps at the earlier default ranks (8 parts) with the default
# checkpoints, no pictures, no logger.
STEPS = [
    "model/solver=pgd",
    "rank.parts=8",
    "trainer=cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=1",
    "trainer.enable_progress_bar=false",
    "rank.appearances=4",
    "data.batch_size=4",
    "data.val_samples=8",
    "data.init_samples=8",
    "logger=none",
    "~callbacks.artifacts",
]
# The gen node of a training config of the real DCGAN, as factors.pt stores it.
DCGAN_GEN = {"name": "dcgan_faces", "net": {"_target_": "panda.generators.dcgan.DCGANFaces"}}
# Part labels of the run of :func:`run_dir`.
LABELS = ["chin", *(f"blob {k}" for k in range(1, 8))]

# Tiny architectures (init kwargs) of the other generators, for random-weight networks.
PROGAN_ARCH = {"resolution": 32, "z_dim": 16, "fmaps_base": 256, "fmaps_max": 16}
STYLEGAN1_ARCH = {
    "resolution": 128,  # 128 px: the last upsampling layer is the fused (transposed) one of fused_scale=auto
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 2,
    "mapping_fmaps": 16,
    "fmaps_base": 512,
    "fmaps_max": 16,
}
STYLEGAN2_ARCH = {
    "z_dim": 16,
    "c_dim": 0,
    "w_dim": 16,
    "img_resolution": 32,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "synthesis_kwargs": {"channel_base": 128, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": 256},
}
_STYLEGAN3 = {"z_dim": 16, "w_dim": 16, "img_resolution": 32, "img_channels": 3, "mapping_kwargs": {"num_layers": 2}}
# config T (3x3 convolutions, separable filters) and config R (1x1, radial down filters, class-conditional)
STYLEGAN3_ARCHS = {
    "T": {**_STYLEGAN3, "c_dim": 0, "channel_base": 512, "channel_max": 16, "num_layers": 6,
          "magnitude_ema_beta": 0.999},
    "R": {**_STYLEGAN3, "c_dim": 4, "channel_base": 1024, "channel_max": 32, "num_layers": 6, "conv_kernel": 1,
          "use_radial_filters": True, "conv_clamp": 0.5},
}  # fmt: skip


def made_up_factors(parts: int = 8, appearances: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``A`` ``[128, R_C]`` and ``P >= 0`` ``[256, R_S]``; part 0 is exactly the bottom half of the
    16 x 16 grid (1 there, 0 above), the other parts are small and random."""
    generator = torch.Generator().manual_seed(seed)
    A = orthonormalize(torch.randn(SHAPE[0], appearances, generator=generator))
    P = torch.rand(SHAPE[1] * SHAPE[2], parts, generator=generator) * 0.1
    P.view(16, 16, parts)[:, :, 0] = 0
    P.view(16, 16, parts)[8:, :, 0] = 1
    return A, P


def write_run(
    path: Path, labels: list[str] | None = None, gen: dict = DCGAN_GEN, generator: str = "dcgan_faces"
) -> Path:
    """A run directory holding :func:`made_up_factors` at :data:`LAYER` in the old format (no checksum) for
    ``generator``, whose stored training config has ``gen`` as its gen node (and part ``labels`` if given)."""
    A, P = made_up_factors()
    record = {"A": A, "P": P, "generator": generator, "layer": LAYER, "feature_shape": list(SHAPE)}
    record |= {"ranks": {"parts": 8, "appearances": 16}, "config": yaml.safe_dump({"gen": gen})}
    if labels is not None:
        record["labels"] = labels
    path.mkdir(parents=True, exist_ok=True)
    torch.save(record, path / "factors.pt")
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the real DCGAN with :func:`made_up_factors` and :data:`LABELS`; shared, so read only
    (a test that writes into its run takes :func:`run_copy`)."""
    return write_run(tmp_path_factory.mktemp("run"), LABELS)


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of :func:`run_dir` of the test's own."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


@pytest.fixture(scope="session")
def dcgan() -> DCGANFaces:
    return DCGANFaces()


@pytest.fixture
def run(dcgan: DCGANFaces) -> Factors:
    A, P = made_up_factors()
    return Factors(A=A, P=P, generator=dcgan, name="dcgan_faces", layer=LAYER, feature_shape=SHAPE)


@pytest.fixture(scope="session")
def stylegan2_run() -> Factors:
    """Made-up factors at ``synthesis.b16.conv1`` of a tiny random StyleGAN2 (:data:`STYLEGAN2_ARCH`), whose layers
    after the split read values computed before it (``ws``, the skip image)."""
    torch.manual_seed(0)
    gen = StyleGAN2(random_init=True, arch=STYLEGAN2_ARCH)
    layer = "synthesis.b16.conv1"
    shape = gen.check_layer(layer)
    generator = torch.Generator().manual_seed(0)
    A = orthonormalize(torch.randn(shape[0], 4, generator=generator))
    P = torch.rand(shape[1] * shape[2], 3, generator=generator)
    return Factors(A=A, P=P, generator=gen, name="stylegan2_ffhq", layer=layer, feature_shape=shape)


@contextmanager
def forward_calls(modules: Sequence[nn.Module]) -> Iterator[list[nn.Module]]:
    """The forward passes of ``modules`` run within the context: a list that gets the module of each."""
    calls: list[nn.Module] = []
    hooks = [module.register_forward_hook(lambda module, *_: calls.append(module)) for module in modules]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run ``python <script> args...`` from the project root and capture its output."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=600,
    )


def _default_signals() -> None:
    """In the child: Ctrl-C and SIGTERM as a terminal gives them, also when the tests run in the background (a
    shell without job control starts background jobs with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interrupted_training(out: Path, args: Sequence[str], sig: int) -> tuple[int, str]:
    """Start ``train.py args`` writing into ``out``, send it ``sig`` once its first checkpoint is written, and return
    its exit code and output."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    command = [sys.executable, str(ROOT / "train.py"), *args]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_default_signals,
    ) as job:
        for _ in range(600):  # wait until training has taken a step
            if (out / "checkpoints" / "last.ckpt").is_file() or job.poll() is not None:
                break
            time.sleep(0.5)
        job.send_signal(sig)
        output = job.communicate(timeout=300)[0].decode()
    return job.returncode, output


def run_evaluate(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``evaluate.py`` on samples 0 and 1 with ``overrides``, writing into ``out``."""
    return run_script("evaluate.py", f"hydra.run.dir={out}", "samples=[0,1]", *overrides)


def compose_two_steps(output_dir: Path, *overrides: str) -> DictConfig:
    """The ``train`` config with ``overrides`` and the :data:`TWO_STEPS` budget, writing into ``output_dir``."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, *TWO_STEPS, f"paths.output_dir={output_dir}"])


def configured(output_dir: Path, *overrides: str) -> DictConfig:
    """The ``train`` config with the :data:`STEPS` budget, writing into ``output_dir``, and ``overrides`` (which
    win)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*STEPS, f"paths.output_dir={output_dir}", *overrides])


def panda_model(feature_shape: tuple[int, int, int], parts: int, appearances: int | None, *overrides: str) -> PandA:
    """train.py's model (``conf/model``) with the ranks and Hydra ``overrides``, e.g. ``model/solver=stats``,
    ``model.solver.lr=0.05``; built as train.py builds it (a bad option raises its own error)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return instantiate(cfg.model, feature_shape=feature_shape, parts=parts, appearances=appearances)


def assert_bf16_features_close(gen: FeatureGenerator, layer: str, bound: float) -> None:
    """``data.precision=bf16`` features of ``gen`` at ``layer`` are float32, and differ from fp32 ones by
    more than rounding the output alone would (the whole forward ran in bfloat16) and less than ``bound``."""
    latents = gen.sample_latents(8, torch.Generator().manual_seed(0))
    fp32, bf16 = (layer_features(gen, layer, latents, precision) for precision in ("fp32", "bf16"))
    assert bf16.dtype == torch.float32
    rounding = ((fp32.bfloat16().float() - fp32).norm() / fp32.norm()).item()
    assert rounding < ((bf16 - fp32).norm() / fp32.norm()).item() < bound


def fit_in_process(
    data: FeatureDataModule,
    model: PandA,
    steps: int,
    tmp_path: Path,
    val_every: int = 2,
    ckpt_path: str | None = None,
    callbacks: tuple[pl.Callback, ...] = (),
) -> pl.Trainer:
    """Train ``model`` on ``data`` for ``steps`` steps on the CPU, checkpointing into ``tmp_path/ckpt``."""
    trainer = pl.Trainer(
        max_steps=steps,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True), *callbacks],
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def assert_resumes_after_the_layer(gen: FeatureGenerator, layer: str, latents: torch.Tensor) -> None:
    """``resume`` from ``features_and_state`` at ``layer`` gives ``gen(latents)`` bit for bit running only modules
    the full forward pass runs after the layer (in its order: none before it again), and edited features change
    the images."""
    order: list[str] = []  # modules in the order their forward passes end
    hooks = [
        module.register_forward_hook(lambda *_, path=path: order.append(path))
        for path, module in gen.net.named_modules()
        if path
    ]
    try:
        with torch.no_grad():
            full = gen(latents)
            after = iter(order[order.index(layer) + 1 :])
            features, state = gen.features_and_state(latents, layer)
            order.clear()
            images = gen.resume(features, layer, state=state)
            resumed = list(order)
            edited = gen.resume(features + 0.5, layer, state=state)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(images, full), layer
    assert all(path in after for path in resumed), f"{layer}: resume ran {resumed}"
    assert not torch.allclose(edited, full), layer
