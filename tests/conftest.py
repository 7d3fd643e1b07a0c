"""Shared fixtures: the real DCGAN face generator and a runner for the command-line scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from panda.generators.dcgan import DCGANFaces

ROOT = Path(__file__).resolve().parents[1]

# A training budget small enough for tests: a few steps on a handful of samples.
TINY = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=8",
    "data.val_samples=16",
    "data.init_samples=32",
    "callbacks.artifacts.num_images=4",
]


@pytest.fixture(scope="session")
def dcgan() -> DCGANFaces:
    return DCGANFaces()


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
