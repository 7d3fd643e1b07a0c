import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf

from panda.base.config import instantiate
from panda.base.errors import WeightsError
from panda.generators.weights import cached_path, resolve_weights

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class _Handler(BaseHTTPRequestHandler):
    cut_first = False  # the first request sends half the body, then drops the connection
    no_length = False  # no Content-Length: the body ends when the connection closes
    wrong_range = False  # a Range request is answered with 206 from byte 0
    requests: list[str | None] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).requests.append(self.headers.get("Range"))
        payload = {"/g.pkl": PAYLOAD, "/a/w.pkl": b"A" * 1000, "/b/w.pkl": b"B" * 2000}.get(self.path)
        if payload is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if type(self).wrong_range:
            start = 0
        if start >= len(payload):  # nothing left: 416 with the size
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.end_headers()
            return
        body = payload[start:]
        self.send_response(206 if self.headers.get("Range") else 200)
        if self.headers.get("Range"):
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        if not type(self).no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path / "cache"))
    _Handler.requests, _Handler.cut_first, _Handler.no_length, _Handler.wrong_range = [], False, False, False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_once_into_cache(server):
    url = f"{server}/g.pkl"
    path = resolve_weights(url)
    assert path == cached_path(url) and path.read_bytes() == PAYLOAD
    assert resolve_weights(url) == path
    assert _Handler.requests == [None]  # the second call used the cache


def test_interrupted_download_resumes(server):
    url = f"{server}/g.pkl"
    _Handler.cut_first = True
    with pytest.raises(WeightsError, match="resume"):
        resolve_weights(url)
    part = cached_path(url).with_name("g.pkl.part")
    assert 0 < part.stat().st_size < len(PAYLOAD)
    assert resolve_weights(url).read_bytes() == PAYLOAD
    assert _Handler.requests[1] == f"bytes={len(PAYLOAD) // 2}-"
    assert not part.exists()


def test_missing(server, tmp_path):
    with pytest.raises(WeightsError, match="HTTP 404"):
        resolve_weights(f"{server}/nothing.pkl")
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "nothing.pkl"))


def test_offline_error_names_url_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path))
    url = "http://127.0.0.1:9/stylegan2-ffhq-1024x1024.pkl"  # discard port: nothing listens
    with pytest.raises(WeightsError) as error:
        resolve_weights(url)
    assert url in str(error.value) and str(cached_path(url)) in str(error.value)
    assert cached_path(url).parent.parent == tmp_path and cached_path(url).name == "stylegan2-ffhq-1024x1024.pkl"


def test_a_download_of_unknown_length_that_stops_is_not_promoted(server):
    url = f"{server}/g.pkl"
    _Handler.no_length, _Handler.cut_first = True, True
    with pytest.raises(WeightsError, match="cannot be verified"):
        resolve_weights(url)
    assert not cached_path(url).exists()
    assert resolve_weights(url).read_bytes() == PAYLOAD  # resumed: the Content-Range gives the size
    assert _Handler.requests[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_a_whole_download_of_unknown_length_is_verified_by_a_range_request_from_its_end(server):
    url = f"{server}/g.pkl"
    _Handler.no_length = True
    with pytest.raises(WeightsError, match="cannot be verified"):
        resolve_weights(url)
    assert not cached_path(url).exists()
    assert cached_path(url).with_name("g.pkl.part").stat().st_size == len(PAYLOAD)
    assert resolve_weights(url).read_bytes() == PAYLOAD  # the 416's Content-Range gives the size
    assert _Handler.requests == [None, f"bytes={len(PAYLOAD)}-"]


def test_a_resume_that_does_not_continue_the_partial_file_is_not_appended(server):
    url = f"{server}/g.pkl"
    _Handler.cut_first = True
    with pytest.raises(WeightsError, match="resume"):
        resolve_weights(url)
    _Handler.wrong_range = True
    with pytest.raises(WeightsError, match="did not continue the partial download"):
        resolve_weights(url)
    assert not cached_path(url).exists() and not cached_path(url).with_name("g.pkl.part").exists()
    _Handler.wrong_range = False
    assert resolve_weights(url).read_bytes() == PAYLOAD


def test_two_urls_with_one_file_name_have_two_cache_entries(server):
    first, second = resolve_weights(f"{server}/a/w.pkl"), resolve_weights(f"{server}/b/w.pkl")
    assert first != second and first.name == second.name == "w.pkl"
    assert first.read_bytes() == b"A" * 1000 and second.read_bytes() == b"B" * 2000


def test_a_cached_file_that_fails_to_load_says_how_to_download_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path))
    url = "http://127.0.0.1:9/ffhq.pkl"  # nothing listens: the cache entry is used
    cached_path(url).parent.mkdir(parents=True)
    cached_path(url).write_bytes(b"half a pickle")
    cfg = OmegaConf.create({"_target_": "panda.generators.stylegan2.StyleGAN2", "weights": url})
    with pytest.raises(WeightsError) as error:
        instantiate(cfg)
    assert f"{cached_path(url)} is a cached download: delete it to download it again" in str(error.value)
