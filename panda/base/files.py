"""Result files: written atomically (temporary file + rename), loadable without this package; the run directory lock."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from panda.base.errors import BusyError, ConfigError

METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one (mode 0666 less the umask,
    as ``open`` would create it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    import torch  # here: the command line (panda.cli.main) imports this module before torch is needed

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def save_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_plain(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, so loading runs no code.

    Raises:
        ConfigError: (naming the file as ``what``) it would need other objects, which could run
            code, or it cannot be read: damaged, truncated, empty.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if unsafe:
            raise ConfigError(
                f"{what} {path} is refused: it needs more than tensors and plain data to load, so loading it could "
                f"run code ({unsafe[0]})"
            ) from None
        reason = str(error).strip().splitlines()[-1]
    except Exception as error:  # torch raises many types for a damaged archive
        reason = str(error).split(". ")[0].strip() or error.__class__.__name__
    raise ConfigError(f"{what} {path} is not readable (damaged or truncated: {reason})")


def check_links(directory: str | Path) -> None:
    """A :class:`ConfigError` naming the first link under ``directory`` whose target lies outside it (writing through
    such a link would change files elsewhere); links that stay inside are fine."""
    root = Path(os.path.realpath(directory))
    for parent, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            path = Path(parent) / name
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if target != root and root not in target.parents:
                    raise ConfigError(
                        f"{path} is a link to {target}, outside the run directory; remove the link, or pass another "
                        "hydra.run.dir"
                    )


def check_writable(directory: Path) -> None:
    """A :class:`ConfigError` when ``directory`` cannot be written (a read-only file system or directory) or a link
    inside it leads out of it (:func:`check_links`); one that does not exist yet, when its nearest existing parent
    cannot be written or its disk is full (making it, Hydra would fail with a traceback)."""
    if directory.is_dir():
        check_links(directory)
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    disk = os.statvfs(existing)
    if not os.access(existing, os.W_OK) or disk.f_flag & os.ST_RDONLY:
        where = "" if existing == directory else f" (cannot be made in {existing})"
        raise ConfigError(f"{directory} is read-only{where}: make it writable, or pass another directory")
    if existing != directory and (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) == 0:
        raise ConfigError(
            f"cannot make {directory}: No space left on device; make room, then run the same command again"
        )


@contextlib.contextmanager
def lock_if_free(directory: str | Path) -> Iterator[bool]:
    """Within: ``directory``'s lock (:func:`lock_directory`) held by this process unless another live process holds
    it; yields whether this process holds it (a directory without a lock file: ``True``)."""
    path = Path(directory) / LOCK_FILE
    if path.is_symlink() or not path.is_file():
        yield True
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


@contextlib.contextmanager
def lock_directory(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (``fcntl.flock`` of ``<directory>/.lock``, which records the pid).

    The lock goes with the process: it is released on exit, also when the process crashes or is killed.

    Raises:
        ConfigError: a link inside ``directory`` leads out of it (:func:`check_links`).
        BusyError: another process holds it (named by its pid).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    check_links(directory)
    with open(directory / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise BusyError(
                f"{directory} is in use by process {holder or '(unknown)'}, running there now; wait for it to end, "
                "or pass another hydra.run.dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
