"""Files a run directory may come from someone else: opening them runs no code and reads no secrets."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from panda.base.errors import ConfigError, WeightsError
from panda.generators.dcgan import DCGANFaces
from panda.uses.factors import open_run
from tests.conftest import SHAPE, run_script, write_run


class _Listener(BaseHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def listener():
    _Listener.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def attack(kind: str, target: Path, url: str) -> tuple[dict, str]:
    """A crafted gen node and the generator name it claims."""
    if kind == "open":  # creates (or empties) any file
        return {"name": "dcgan_faces", "net": {"_target_": "builtins.open", "file": str(target), "mode": "w"}}, (
            "dcgan_faces"
        )
    if kind == "write_text":  # writes any file
        path = {"_target_": "pathlib.Path", "_args_": [str(target)]}
        net = {"_target_": "pathlib.Path.write_text", "_args_": [path, "written by a factors file"]}
        return {"name": "dcgan_faces", "net": net}, "dcgan_faces"
    weights = f"{url}/${{oc.env:PANDA_TEST_SECRET}}.pkl"  # sends an environment variable to a URL
    net = {"_target_": "panda.generators.stylegan2.StyleGAN2", "weights": weights}
    return {"name": "stylegan2_ffhq", "weights": weights, "net": net}, "stylegan2_ffhq"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("open", "gen.net._target_ 'builtins.open' is not the one of conf/gen/dcgan_faces.yaml"),
        ("write_text", "gen.net._target_ 'pathlib.Path.write_text' is not the one of conf/gen/dcgan_faces.yaml"),
        ("env", "holds an interpolation ('${'), which a loaded file may not use"),
    ],
)
def test_a_crafted_factors_file_is_refused_and_does_nothing(tmp_path, listener, monkeypatch, kind, message):
    monkeypatch.setenv("PANDA_TEST_SECRET", "s3cret")
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "victim.txt"
    gen, generator = attack(kind, target, listener)
    run_dir = write_run(tmp_path / "run", gen=gen, generator=generator)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as error:
        open_run(run_dir)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not target.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert _Listener.requests == []


def test_a_crafted_factors_file_is_one_line_from_the_command_line(tmp_path, listener):
    target = tmp_path / "victim.txt"
    gen, generator = attack("write_text", target, listener)
    run_dir = write_run(tmp_path / "run", gen=gen, generator=generator)
    done = run_script("evaluate.py", f"hydra.run.dir={tmp_path / 'out'}", "task=refine", f"run={run_dir}")
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "is not the one of conf/gen/dcgan_faces.yaml" in output and "Traceback" not in output
    assert not target.exists()


@pytest.mark.parametrize(
    ("gen", "message"),
    [
        ({"name": "dcgan_faces", "net": {"random_init": True, "color": "red"}}, "unknown key gen.net.color"),
        ({"name": "dcgan_faces", "net": {"weights": {"_target_": "os.getcwd"}}}, "gen.net.weights is a mapping in"),
        ({"name": "biggan", "net": {"arch": {"_target_": "os.getcwd"}}}, "gen.net.arch._target_"),
        ({"name": "stylegan2_ffhq", "net": {}}, "learnt for generator 'dcgan_faces', but their config is of 'styleg"),
    ],
)
def test_a_stored_generator_config_takes_only_plain_values_of_known_keys(tmp_path, gen, message):
    with pytest.raises(ConfigError) as error:
        open_run(write_run(tmp_path, gen=gen, generator="biggan" if gen["name"] == "biggan" else "dcgan_faces"))
    assert message in str(error.value)


def test_the_generator_is_rebuilt_from_the_projects_config_and_the_stored_values(tmp_path, dcgan):
    stored = {"name": "dcgan_faces", "random_init": True, "net": {"_target_": "panda.generators.dcgan.DCGANFaces"}}
    run = open_run(write_run(tmp_path, gen=stored))
    assert isinstance(run.generator, DCGANFaces) and run.feature_shape == SHAPE
    pretrained, rebuilt = dcgan.state_dict(), run.generator.state_dict()
    assert not all(torch.equal(pretrained[k], rebuilt[k]) for k in pretrained)  # random_init=true was taken


def test_a_generator_config_that_extends_another_is_rebuilt_from_the_composed_project_config(tmp_path):
    from omegaconf import OmegaConf

    from panda.generators.api import gen_config
    from panda.uses.factors import generator_config

    stored = OmegaConf.create({"gen": gen_config("stylegan2_afhqdog")})  # as training stores it: resolved
    gen = OmegaConf.to_container(stored, resolve=True)["gen"]
    gen["net"]["truncation_psi"] = 0.7
    factors = {"generator": "stylegan2_afhqdog", "config": yaml.safe_dump({"gen": gen})}
    rebuilt = generator_config(factors, tmp_path)
    assert rebuilt.net._target_ == "panda.generators.stylegan2.StyleGAN2"
    assert rebuilt.net.truncation_psi == 0.7
    assert rebuilt.net.arch.img_resolution == 512


def test_a_url_the_project_does_not_configure_is_never_fetched_when_a_run_is_opened(tmp_path, listener, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path / "cache"))
    weights = f"{listener}/ffhq.pkl"
    net = {"_target_": "panda.generators.stylegan2.StyleGAN2", "weights": weights}
    run_dir = write_run(tmp_path / "run", gen={"name": "stylegan2_ffhq", "weights": weights, "net": net},
                        generator="stylegan2_ffhq")  # fmt: skip
    with pytest.raises(ConfigError) as error:
        open_run(run_dir)
    assert f"gen.weights in the config stored in {run_dir} names the URL {weights}" in str(error.value)
    assert "\n" not in str(error.value)
    assert _Listener.requests == []
    assert not (tmp_path / "cache").exists()


class _Touches:
    """Unpickling this touches a file: a stand-in for weights that run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _crafted_weights(kind: str, directory: Path, marker: Path) -> Callable[[], object]:
    """Weights of generator ``kind`` that run code when unpickled, and the loader that opens them."""
    from panda.generators.biggan import BigGAN
    from panda.generators.genforce import ProGAN
    from panda.generators.pickles import load_network

    if kind == "stylegan":  # StyleGAN2 and StyleGAN3 pickles
        (directory / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Touches(marker)}))
        return lambda: load_network(directory / "evil.pkl")
    if kind == "biggan":
        (directory / "config.json").write_text("{}")
        torch.save({"generator.gen_z.weight": _Touches(marker)}, directory / "pytorch_model.bin")
        return lambda: BigGAN(weights=str(directory))
    key = "netG_state_dict" if kind == "dcgan" else "generator_smooth"
    torch.save({key: _Touches(marker)}, directory / "evil.pth")
    return lambda: (DCGANFaces if kind == "dcgan" else ProGAN)(weights=str(directory / "evil.pth"))


@pytest.mark.parametrize("kind", ["dcgan", "stylegan", "biggan", "genforce"])
def test_generator_weights_that_would_run_code_are_refused_and_run_nothing(tmp_path, kind):
    marker = tmp_path / "code-ran"
    load = _crafted_weights(kind, tmp_path, marker)
    with pytest.raises(WeightsError) as error:
        load()
    assert "\n" not in str(error.value) and not marker.exists()
