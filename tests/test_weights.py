import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from panda.errors import WeightsError
from panda.generators.weights import cached_path, resolve_weights

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class _Handler(BaseHTTPRequestHandler):
    cut_first = False  # the first request sends half the body, then drops the connection
    requests: list[str | None] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).requests.append(self.headers.get("Range"))
        if self.path != "/g.pkl":
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
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
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_once_into_cache(server):
    url = f"{server}/g.pkl"
    path = resolve_weights(url, sha256=hashlib.sha256(PAYLOAD).hexdigest())
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


def test_bad_hash_and_missing(server, tmp_path):
    with pytest.raises(WeightsError, match="SHA-256"):
        resolve_weights(f"{server}/g.pkl", sha256="0" * 64)
    with pytest.raises(WeightsError, match="HTTP 404"):
        resolve_weights(f"{server}/nothing.pkl")
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "nothing.pkl"))


def test_offline_error_names_url_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_CACHE", str(tmp_path))
    url = "http://127.0.0.1:9/stylegan2-ffhq-1024x1024.pkl"  # discard port: nothing listens
    with pytest.raises(WeightsError) as error:
        resolve_weights(url)
    assert url in str(error.value) and str(tmp_path / "stylegan2-ffhq-1024x1024.pkl") in str(error.value)
