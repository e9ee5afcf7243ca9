"""Local files that appear whole or not at all: a temp file beside the target, fsynced, then renamed.

Every local file the pipeline writes goes through here (the store's local backend, decoded MIDI and
WAV, the generated corpus, the fingerprint cache). Temp files and folders are created with mode
``0o666`` / ``0o777`` less the process umask, as ``open`` would; ``tempfile.mkstemp`` / ``mkdtemp``
would make them ``0o600`` / ``0o700``, and a file renamed into a shared folder would stay unreadable
for everyone else. Their names start with a dot, so the store's listing never shows them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

_T = TypeVar("_T")
_ATTEMPTS = 100  # random names tried before giving up (one clash is a 1 in 2**32 event)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _new_beside(path: str, create: Callable[[str], _T]) -> tuple[str, _T]:
    """``create(tmp)`` on a fresh hidden name in ``path``'s folder (made if missing); ``(tmp, its result)``."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def _temp_beside(path: str | os.PathLike) -> Iterator[tuple[IO[bytes], str]]:
    """A new temp file in ``path``'s folder (created if missing), open for writing, and its path.

    The file is removed on exit unless it was renamed or linked away meanwhile.
    """
    tmp, fd = _new_beside(os.path.abspath(path), lambda t: os.open(t, _CREATE, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``, replacing any file there; a reader sees the old file or the new one.

    Parent folders are created. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    with _temp_beside(path) as (f, tmp):
        f.write(data)
        _fsync(f)
        os.replace(tmp, path)
    return Path(path)


def write_if_absent(path: str | os.PathLike, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if nothing is there; True if this call wrote it.

    Atomic and race-safe: the finished temp file is hard-linked to ``path``, which fails if it exists.
    """
    with _temp_beside(path) as (f, tmp):
        f.write(data)
        _fsync(f)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    return True


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A new empty hidden folder beside ``path`` (created with the umask's mode), to be renamed onto it."""
    tmp, _ = _new_beside(os.path.abspath(path), lambda t: os.mkdir(t, 0o777))
    return Path(tmp)
