"""Generator weights from a path or a URL: a URL downloads once into a cache directory.

The cache is ``$PANDA_CACHE`` or ``~/.cache/panda``; a file downloads into ``<name>.part``
(resumed with an HTTP Range request when interrupted), is checked against its size and, when
given, its SHA-256, and is then renamed into place. Without a network the error names the URL
and the exact path to place the file at.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from panda.errors import WeightsError

CHUNK = 1 << 20


def cache_dir() -> Path:
    """The download cache: ``$PANDA_CACHE`` or ``~/.cache/panda``."""
    return Path(os.environ.get("PANDA_CACHE") or Path.home() / ".cache" / "panda").expanduser()


def is_url(path_or_url: str) -> bool:
    return urlparse(str(path_or_url)).scheme in ("http", "https")


def cached_path(url: str, name: str | None = None) -> Path:
    """Where the file of ``url`` lives in the cache: ``name``, or the URL's last path component."""
    name = name or Path(unquote(urlparse(url).path)).name
    if not name:
        raise WeightsError(f"cannot name a cache file for URL {url} (it has no file name)")
    return cache_dir() / name


def resolve_weights(path_or_url: str, sha256: str | None = None, name: str | None = None) -> Path:
    """A local file for ``path_or_url``, downloading a URL into the cache (as ``name``) the first time."""
    if not is_url(path_or_url):
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return path
    path = cached_path(path_or_url, name)
    if path.is_file():
        return path
    download(path_or_url, path, sha256)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, path: Path, sha256: str | None = None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``path`` through ``path.part``, resuming a partial file; verify, then rename."""
    part = path.with_name(path.name + ".part")
    hint = f"download it by hand from {url} and place it at {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if done and response.status != 206:  # the server ignored the range: start again
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            with (
                open(part, "ab" if done else "wb") as out,
                tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=path.name) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as error:
        if error.code == 416 and part.is_file():  # the range starts at the end: the file is complete
            total = part.stat().st_size
        else:
            raise WeightsError(f"cannot download {url} (HTTP {error.code} {error.reason}); {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(f"cannot download {url} ({reason}); {hint} (a partial download resumes)") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise WeightsError(f"download of {url} stopped at {size} of {total} bytes; run again to resume, or {hint}")
    if sha256 is not None and sha256_of(part) != sha256.lower():
        part.unlink()
        raise WeightsError(f"download of {url} has the wrong SHA-256 (deleted); run again, or {hint}")
    os.replace(part, path)
