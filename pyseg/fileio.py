"""File I/O. Atomic writes: everything a user keeps (checkpoints, submissions, configs, CSVs, plots, json)
is written to a temporary file in the destination folder, flushed to disk, and moved into place with
``os.replace``, so a crash or an error never leaves a half-written file behind (the old file, if any,
stays as it was). Json reads: one error wording for a missing or malformed file."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pyseg.faults import tear

_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # open_temp_beside's mkstemp names: 8 random characters


def open_temp_beside(path: str | os.PathLike, mode: str = "wb", create_parent: bool = True):
    """A temporary file in ``path``'s folder (so ``os.replace`` onto ``path`` is atomic): (file, temp path).

    ``mode`` is "wb" or "w" (text: UTF-8, no newline translation). With ``create_parent=False`` a missing
    folder is an error. Raises ValueError saying why the file cannot be written.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is not a directory")
    if create_parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot write {path}: cannot create {parent}: {e.strerror or e}") from None
    elif not parent.is_dir():
        raise ValueError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: directory {parent} is not writable")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # e.g. root in a read-only place (access() says yes)
            raise ValueError(f"cannot write {path}: directory {parent} is not writable ({e.strerror})") from None
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    if mode == "wb":
        return os.fdopen(fd, "wb"), Path(tmp)
    return os.fdopen(fd, "w", newline="", encoding="utf-8"), Path(tmp)


def commit_temp(f, tmp: Path, path: str | os.PathLike) -> None:
    """Flush and close ``f`` (from :func:`open_temp_beside`), give it the usual permissions (0666 less the
    umask, not mkstemp's 0600) and move it onto ``path``."""
    f.flush()
    os.fsync(f.fileno())
    f.close()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def discard_temp(f, tmp: Path) -> None:
    """Close and remove a temporary file that will not be committed."""
    f.close()
    Path(tmp).unlink(missing_ok=True)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files of :func:`open_temp_beside` in ``folder`` (not below it) and return their paths: what
    a process killed while writing leaves. Only for a folder that no running process writes into."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _TEMP_NAME.fullmatch(p.name) and p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", create_parent: bool = True):
    """``with atomic_write(path) as f:`` writes ``path`` on a clean exit; on an error nothing is left."""
    f, tmp = open_temp_beside(path, mode, create_parent)
    try:
        yield tear(f, f"write:{Path(path).name}")
        commit_temp(f, tmp, path)
    except BaseException:
        discard_temp(f, tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, create_parent: bool = True) -> None:
    with atomic_write(path, "wb", create_parent) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, create_parent: bool = True) -> None:
    with atomic_write(path, "w", create_parent) as f:
        f.write(text)


def read_json(path: str | os.PathLike, what: str):
    """The parsed json at ``path``; a missing, unreadable or malformed file raises ``ValueError`` naming
    ``what`` it is (e.g. "annotation file") and the path."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from None
