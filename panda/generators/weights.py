"""Generator weights from a path or a URL: a URL downloads once into a cache directory.

The cache is ``$PANDA_CACHE`` or ``~/.cache/panda``; the file of a URL lives at
``<cache>/<first 16 hex digits of the URL's SHA-256>/<file name>``, so two URLs never share an
entry. A file downloads into ``<file name>.part`` (resumed with an HTTP Range request when
interrupted) and is renamed into place only once verified: its size against the server's
Content-Length (or Content-Range), or the end of a chunked response. A resumed download must
continue the partial file (its Content-Range starts where the file ends). A download neither can
verify is not promoted. Without a network the error names the URL and the exact path to place the file at.
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

from tqdm import tqdm

from panda.base.errors import WeightsError
from panda.base.resources import cache_dir

CHUNK = 1 << 20


def is_url(path_or_url: str) -> bool:
    return urlparse(str(path_or_url)).scheme in ("http", "https")


def cached_path(url: str, name: str | None = None) -> Path:
    """Where the file of ``url`` lives in the cache: ``<hash of the URL>/<name or the URL's file name>``."""
    name = name or Path(unquote(urlparse(url).path)).name
    if not name:
        raise WeightsError(f"cannot name a cache file for URL {url} (it has no file name)")
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def resolve_weights(path_or_url: str, name: str | None = None) -> Path:
    """A local file for ``path_or_url``, downloading a URL into the cache (as ``name``) the first time."""
    if not is_url(path_or_url):
        path = Path(path_or_url).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return path
    path = cached_path(path_or_url, name)
    if not path.is_file():
        download(path_or_url, path)
    return path


def download(url: str, path: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``path`` through ``path.part``, resuming a partial file; verify its size, then rename."""
    part = path.with_name(path.name + ".part")
    hint = f"download it by hand from {url} and place it at {path}"
    try:
        total, complete = _fetch(url, part, hint, timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not part.is_file():  # 416: the range starts at the end, so the file may be whole
            raise WeightsError(f"cannot download {url} (HTTP {error.code} {error.reason}); {hint}") from None
        total, complete = _content_range(error.headers.get("Content-Range"))[1], False
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(f"cannot download {url} ({reason}); {hint} (a partial download resumes)") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise WeightsError(f"download of {url} stopped at {got} of {total} bytes; run again to resume, or {hint}")
    if total is not None and got != total:
        part.unlink()
        raise WeightsError(
            f"download of {url} is {got} bytes, but the server says {total} (deleted); run again, or {hint}"
        )
    if total is None and not complete:
        raise WeightsError(
            f"download of {url} cannot be verified (the server sent no length); the {got} bytes stay in {part}: "
            f"run again to check their size with a Range request, or {hint}"
        )
    os.replace(part, path)


def _fetch(url: str, part: Path, hint: str, timeout: float) -> tuple[int | None, bool]:
    """Write the body of ``url`` into ``part``, continuing an existing one with a Range request: ``(the size of the
    whole file as the server gives it, whether a chunked response was read to its end)``."""
    part.parent.mkdir(parents=True, exist_ok=True)
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None else None
        if done and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != done:
                part.unlink()
                raise WeightsError(
                    f"the server did not continue the partial download of {url} (it sent "
                    f"{response.headers.get('Content-Range')!r} for bytes {done}-): the partial file was deleted; "
                    f"run again to download it anew, or {hint}"
                )
            total = done + int(length) if total is None and length is not None else total
        else:  # a fresh download, or the server ignored the range: start again
            done = 0
        with (
            open(part, "ab" if done else "wb") as out,
            tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=part.stem) as bar,
        ):
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
        return total, response.headers.get("Transfer-Encoding", "").lower() == "chunked"


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)
