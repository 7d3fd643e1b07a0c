"""Generator weights from a path or a URL: a URL downloads once into a cache directory.

The cache is ``$PANDA_CACHE`` or ``~/.cache/panda``; the file of a URL lives at
``<cache>/<first 16 hex digits of the URL's SHA-256>/<file name>``, so two URLs never share an
entry. A file downloads into ``<file name>.part`` (resumed with an HTTP Range request when
interrupted) and is renamed into place only once verified: its size against the server's
Content-Length (or Content-Range) or the size a gen config publishes, its SHA-256 against the one
published, or the end of a chunked response. A resumed download must continue the partial file
(its Content-Range starts where the file ends). A download none of these can verify is not
promoted. Without a network the error names the URL and the exact path to place the file at.

A gen config publishes the size and SHA-256 of its ``weights`` URL as ``weights_size`` and
``weights_sha256``: filled only from a published source, ``null`` otherwise.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml
from tqdm import tqdm

from panda.base.errors import WeightsError
from panda.base.resources import cache_dir, config_dir

CHUNK = 1 << 20


def is_url(path_or_url: str) -> bool:
    return urlparse(str(path_or_url)).scheme in ("http", "https")


def cached_path(url: str, name: str | None = None) -> Path:
    """Where the file of ``url`` lives in the cache: ``<hash of the URL>/<name or the URL's file name>``."""
    name = name or Path(unquote(urlparse(url).path)).name
    if not name:
        raise WeightsError(f"cannot name a cache file for URL {url} (it has no file name)")
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def published(url: str) -> tuple[int | None, str | None]:
    """``(weights_size, weights_sha256)`` a gen config gives for its ``weights`` URL ``url`` (``None`` when not)."""
    for path in sorted(config_dir().glob("gen/*.yaml")):
        gen = yaml.safe_load(path.read_text()) or {}
        if gen.get("weights") == url:
            return gen.get("weights_size"), gen.get("weights_sha256")
    return None, None


def resolve_weights(
    path_or_url: str, sha256: str | None = None, name: str | None = None, size: int | None = None
) -> Path:
    """A local file for ``path_or_url``, downloading a URL into the cache (as ``name``) the first time.

    ``size`` and ``sha256`` are what the download must have; when not given, those a gen config
    publishes for the URL (:func:`published`).
    """
    if not is_url(path_or_url):
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return path
    path = cached_path(path_or_url, name)
    if path.is_file():
        return path
    known_size, known_sha256 = published(path_or_url)
    download(path_or_url, path, sha256 or known_sha256, size or known_size)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, path: Path, sha256: str | None = None, size: int | None = None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``path`` through ``path.part``, resuming a partial file; verify, then rename."""
    part = path.with_name(path.name + ".part")
    hint = f"download it by hand from {url} and place it at {path}"
    source = "the gen config"
    total: int | None = None
    complete = False  # a chunked response read to its end
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if done and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != done:
                    part.unlink()
                    raise WeightsError(
                        f"the server did not continue the partial download of {url} (it sent "
                        f"{response.headers.get('Content-Range')!r} for bytes {done}-): the partial file was deleted; "
                        f"run again to download it anew, or {hint}"
                    )
            else:  # a fresh download, or the server ignored the range: start again
                done = 0
                total = int(length) if length is not None else None
            if total is None and length is not None:
                total = done + int(length)
            with (
                open(part, "ab" if done else "wb") as out,
                tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=path.name) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            complete = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    except urllib.error.HTTPError as error:
        if error.code == 416 and part.is_file():  # the range starts at the end: the file may be complete
            total = _content_range(error.headers.get("Content-Range"))[1]
        else:
            raise WeightsError(f"cannot download {url} (HTTP {error.code} {error.reason}); {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(f"cannot download {url} ({reason}); {hint} (a partial download resumes)") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise WeightsError(f"download of {url} stopped at {got} of {total} bytes; run again to resume, or {hint}")
    for expected, label in ((total, "the server"), (size, source)):
        if expected is not None and got != expected:
            part.unlink()
            raise WeightsError(
                f"download of {url} is {got} bytes, but {label} says {expected} (deleted); run again, or {hint}"
            )
    if sha256 is not None and sha256_of(part) != sha256.lower():
        part.unlink()
        raise WeightsError(f"download of {url} has the wrong SHA-256 (deleted); run again, or {hint}")
    if total is None and size is None and sha256 is None and not complete:
        raise WeightsError(
            f"download of {url} cannot be verified (the server sent no length, and no gen config publishes "
            f"weights_size or weights_sha256 for it); the {got} bytes stay in {part}: {hint}"
        )
    os.replace(part, path)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)
