"""An installed panda, without a clone: a wheel built from the sources, installed offline into a fresh virtual
environment outside the repository, ships every module and config, and its commands train and evaluate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with panda's wheel installed (``--no-deps --no-index``); the packages panda needs come
    from the test's own environment, whose site-packages a ``.pth`` file puts on the path (not its ``.pth`` files,
    so not an editable panda of a clone)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for name in ("panda", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    offline = ["--no-deps", "--no-index", "-q"]
    pip = [sys.executable, "-m", "pip", "wheel", *offline, "--no-build-isolation", "-w", str(root / "dist")]
    subprocess.run([*pip, str(source)], check=True, capture_output=True, cwd=root)
    (wheel,) = (root / "dist").glob("panda_factors-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    (site,) = (root / "venv" / "lib").glob("python*/site-packages")
    shared = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "shared_environment.pth").write_text("".join(f"{path}\n" for path in shared))
    python = root / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", *offline, str(wheel)], check=True, capture_output=True, cwd=root)
    return root / "venv"


def installed(venv: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` of the virtual environment (``panda-train``, ``python``, ...) run in ``cwd``, with no
    ``PYTHONPATH`` that could lead to the sources."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"WANDB_SILENT": "true"}
    return subprocess.run(
        [str(venv / "bin" / command), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_the_wheel_ships_every_module_and_config_and_finds_them_from_anywhere(venv, tmp_path):
    (site,) = (venv / "lib").glob("python*/site-packages")
    shipped = {p.relative_to(site).as_posix() for p in (site / "panda").rglob("*") if p.suffix in {".py", ".yaml"}}
    sources = {f"panda/{p.relative_to(ROOT / 'panda').as_posix()}" for p in (ROOT / "panda").rglob("*.py")}
    configs = {f"panda/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == sources | configs
    script = (
        "import panda, panda.generators as g, panda.uses.editing as e, panda.base.resources as r\n"
        "print(panda.__file__, r.config_dir(), g.load_generator('dcgan_faces').name,"
        " sorted(e.load_zoo('dcgan_faces')['edits']))"
    )
    done = installed(venv, "python", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module, configs_dir, name, edits = done.stdout.split(maxsplit=3)
    assert module == str(site / "panda" / "__init__.py") and configs_dir == str(site / "panda" / "conf")
    assert name == "dcgan_faces" and "hair_colour" in edits


def test_panda_train_and_panda_evaluate_run_from_the_installed_wheel(venv, tmp_path):
    done = installed(venv, "panda-train", "gen=nope", cwd=tmp_path)
    assert done.returncode == 2 and "available gen configs: biggan, dcgan_faces" in done.stderr
    assert not list(tmp_path.iterdir())
    done = installed(venv, "panda-train", "experiment=debug", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "factors.pt").is_file() and (tmp_path / "run" / "train.log").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["first_step_seconds"] > 0
    done = installed(venv, "panda-evaluate", "task=edit", "run=run", "samples=[0]", "hydra.run.dir=edit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "edit" / "evaluate.json").read_text())["edits"]
