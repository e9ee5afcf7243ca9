"""Download, verify and unpack datasets; read MAESTRO metadata. Pure functions, no Prefect.

- :func:`download` streams an archive over HTTP(S) into ``<file>.part``, resumes dropped transfers with
  ``Range`` requests, checks size and sha256, and only then renames the file to its final name.
- :func:`safe_extract` unpacks a zip into a hidden sibling folder and renames it into place, refusing
  entries that would land outside the target, symlinks, and archives that inflate past a byte cap.
- :func:`read_maestro_metadata` / :func:`find_maestro_metadata` read the MAESTRO table from its v2/v3 JSON
  or CSV form into one canonical DataFrame.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from filelock import FileLock

from storage_schemas.datasets import RemoteArchive
from tasks.storage.files import temp_dir_beside

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "EXTRACT_MARKER",
    "MAESTRO_COLUMNS",
    "MAESTRO_SPLITS",
    "download",
    "file_sha256",
    "safe_extract",
    "read_maestro_metadata",
    "find_maestro_metadata",
]

ProgressFn = Callable[[int, int], None]

_USER_AGENT = "midipix-fetch/1"
_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_COPY_CHUNK = 1 << 20


class ChecksumError(Exception):
    """The downloaded bytes do not match the declared size or sha256."""


class DownloadError(Exception):
    """The download failed (HTTP error, or retries used up)."""


class UnsafeArchiveError(Exception):
    """An archive entry would escape the target, is a link, or the archive inflates past the cap."""


class _Transient(Exception):
    """Internal: a network failure worth a retry (connection dropped, timeout, 5xx)."""


# --------------------------------------------------------------------------------------------------
# download


def file_sha256(path: str | os.PathLike[str], chunk_size: int = _COPY_CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _matches(path: Path, archive: RemoteArchive) -> bool:
    try:
        if path.stat().st_size != archive.size:
            return False
    except FileNotFoundError:
        return False
    return file_sha256(path) == archive.sha256


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes 100-199/1000`` -> ``(100, 1000)``; total is ``None`` for ``/*``."""
    if not value:
        return None
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value)
    if not m:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _fetch_into(
    archive: RemoteArchive,
    part: Path,
    *,
    progress: ProgressFn | None,
    chunk_size: int,
    timeout: float,
) -> tuple[int, bool]:
    """One HTTP request appending to (or restarting) ``part``.

    Returns ``(bytes now in part, whether this request resumed from an offset)``. Raises
    :class:`_Transient` for failures worth retrying, :class:`DownloadError` / :class:`ChecksumError`
    otherwise.
    """
    total = archive.size
    have = part.stat().st_size if part.exists() else 0
    if have > total:
        part.unlink()
        have = 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(archive.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:
            # Nothing left to send: either the part is complete or it is longer than the server's file.
            if have == total:
                return have, True
            part.unlink()
            raise _Transient(f"HTTP 416 for a {have}-byte part of a {total}-byte file; restarting") from e
        if e.code in _RETRYABLE_HTTP:
            raise _Transient(f"HTTP {e.code} from {archive.url}") from e
        raise DownloadError(f"{archive.name}: HTTP {e.code} {e.reason} from {archive.url}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _Transient(f"cannot reach {archive.url}: {e}") from e

    with response:
        status = response.status
        if status == 206 and have:
            crange = _parse_content_range(response.headers.get("Content-Range"))
            if crange is None or crange[0] != have:
                # A range we did not ask for: throw the part away and start over.
                part.unlink()
                raise _Transient(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            if crange[1] is not None and crange[1] != total:
                part.unlink()
                raise ChecksumError(
                    f"{archive.name}: size mismatch: expected {total} bytes, server reports {crange[1]}"
                )
            mode, resumed = "ab", True
        elif status == 200:
            # Full body (also what a server that ignores Range sends): restart from byte 0.
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) != total:
                if part.exists():
                    part.unlink()
                raise ChecksumError(
                    f"{archive.name}: size mismatch: expected {total} bytes, server sends {int(length)}"
                )
            mode, resumed, have = "wb", False, 0
        else:
            raise DownloadError(f"{archive.name}: unexpected HTTP {status} from {archive.url}")

        with open(part, mode) as f:
            if progress is not None:
                progress(have, total)
            try:
                while have < total:
                    try:
                        chunk = response.read(min(chunk_size, total - have))
                    except (http.client.HTTPException, OSError) as e:
                        raise _Transient(f"connection dropped after {have} bytes: {e}") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, total)
            finally:
                f.flush()
                os.fsync(f.fileno())
        if have < total:
            raise _Transient(f"short read: {have} of {total} bytes")
        # We asked for exactly `total` bytes; anything the server still has means the sizes disagree.
        try:
            extra = response.read(1)
        except (http.client.HTTPException, OSError):
            extra = b""
        if extra:
            part.unlink()
            raise ChecksumError(f"{archive.name}: size mismatch: server sends more than {total} bytes")
        return have, resumed


def download(
    archive: RemoteArchive,
    dest_dir: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 30.0,
    max_retries: int = 5,
    retry_delay: float = 1.0,
) -> Path:
    """Download ``archive`` into ``dest_dir`` and return the verified file's path.

    Parameters
    ----------
    archive : RemoteArchive
        What to fetch, with its expected size and sha256.
    dest_dir : path
        Folder for the file (created if missing). The transfer goes to ``<file>.part`` first.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as bytes arrive (``done`` drops back to 0 when a
        server forces a restart).
    chunk_size : int
        Bytes per read.
    timeout : float
        Socket timeout in seconds for connecting and for each read.
    max_retries : int
        Retries allowed in a row without progress (a request that moved bytes resets the count).
    retry_delay : float
        First back-off in seconds, doubled per failure in a row (capped at 30 s).

    Returns
    -------
    Path
        ``dest_dir / archive.filename``, present only once its size and sha256 matched.

    Raises
    ------
    ChecksumError
        The bytes do not match; the ``.part`` file is deleted and nothing is published.
    DownloadError
        A non-retryable HTTP error, or retries used up (the ``.part`` is kept for a later resume).
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / archive.filename
    # Not tasks.storage.files.atomic_write: the .part must outlive a failed attempt (even the process) so
    # a dropped transfer resumes from its bytes, it is appended to across requests, and it is renamed only
    # once its size and sha256 match; a temp file removed on exit would throw the resumable bytes away.
    part = dest / (archive.filename + ".part")

    # Concurrent downloaders of the same file wait here; the second one then finds the verified file.
    with FileLock(str(dest / (archive.filename + ".lock"))):
        if final.exists():
            if _matches(final, archive):
                return final
            final.unlink()  # never keep an unverified file under the final name

        fresh_retry_used = False
        failures = 0
        while True:
            resumed_any = part.exists() and part.stat().st_size > 0
            while True:
                before = part.stat().st_size if part.exists() else 0
                try:
                    have, resumed = _fetch_into(
                        archive, part, progress=progress, chunk_size=chunk_size, timeout=timeout
                    )
                    resumed_any = resumed_any or resumed
                    break
                except _Transient as e:
                    after = part.stat().st_size if part.exists() else 0
                    if after > before:
                        failures = 0  # the connection moved bytes: resume right away
                        resumed_any = True
                        continue
                    failures += 1
                    if failures > max_retries:
                        raise DownloadError(
                            f"{archive.name}: giving up after {max_retries} retries: {e}"
                        ) from e
                    time.sleep(min(retry_delay * 2 ** (failures - 1), 30.0))

            size = part.stat().st_size
            digest = file_sha256(part) if size == archive.size else None
            if size == archive.size and digest == archive.sha256:
                os.replace(part, final)
                return final
            part.unlink()
            if resumed_any and not fresh_retry_used:
                # Bytes from an earlier attempt (or a stale .part) may be the bad ones: one clean retry.
                fresh_retry_used = True
                continue
            got = f"{size} bytes" if digest is None else f"sha256 {digest}"
            expected = f"{archive.size} bytes" if digest is None else f"sha256 {archive.sha256}"
            raise ChecksumError(
                f"{archive.name}: downloaded file from {archive.url} does not match: "
                f"expected {expected}, got {got}"
            )


# --------------------------------------------------------------------------------------------------
# safe_extract

EXTRACT_MARKER = ".midipix-extracted.json"


def _entry_parts(name: str) -> tuple[str, ...]:
    """Validate an archive entry name and return its normalised relative path parts."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"entry name with a NUL byte: {name!r}")
    unified = name.replace("\\", "/")
    if unified.startswith("/"):
        raise UnsafeArchiveError(f"absolute path in archive: {name!r}")
    if re.match(r"^[A-Za-z]:", unified):
        raise UnsafeArchiveError(f"drive letter in archive path: {name!r}")
    parts: list[str] = []
    for piece in unified.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                raise UnsafeArchiveError(f"path escapes the target folder: {name!r}")
            parts.pop()
            continue
        parts.append(piece)
    return tuple(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _normalise_suffixes(suffixes: Iterable[str] | None) -> frozenset[str] | None:
    if suffixes is None:
        return None
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    return frozenset(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)


def _read_marker(dest: Path) -> list[Path] | None:
    marker = dest / EXTRACT_MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    files = [dest / rel for rel in data.get("files", [])]
    if not all(p.is_file() for p in files):
        return None  # someone removed files after extraction: treat as incomplete
    return files


def safe_extract(
    zip_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    max_bytes: int,
    suffixes: Iterable[str] | None = None,
) -> list[Path]:
    """Extract a zip archive into ``dest_dir`` safely and atomically.

    Entries are extracted into a hidden temporary sibling of ``dest_dir``; a marker file is written
    last and the folder is renamed into place, so ``dest_dir`` either does not exist or is complete.

    Parameters
    ----------
    zip_path : path
        The archive.
    dest_dir : path
        Target folder; must not exist yet, or hold a complete earlier extraction (then its listing
        is returned without opening the archive).
    max_bytes : int
        Cap on the total uncompressed bytes written, checked against the sizes the archive declares
        and against the bytes actually written.
    suffixes : iterable of str, optional
        Keep only files with these suffixes (case-insensitive), e.g. ``(".mid", ".midi", ".json")``.

    Returns
    -------
    list of Path
        The extracted files (sorted), excluding the marker.

    Raises
    ------
    UnsafeArchiveError
        An absolute path, drive letter, ``..`` escaping the target, a symlink entry, duplicate
        entries, or more than ``max_bytes``. Nothing is left behind.
    FileExistsError
        ``dest_dir`` exists but is not a complete extraction (and is not empty).
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    dest = Path(dest_dir)
    done = _read_marker(dest)
    if done is not None:
        return sorted(done)
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        elif dest.is_dir() and (dest / EXTRACT_MARKER).exists():
            shutil.rmtree(dest)  # our own extraction, damaged since: redo it
        else:
            raise FileExistsError(f"{dest} exists and is not a complete extraction; remove it first")
    keep = _normalise_suffixes(suffixes)

    with zipfile.ZipFile(zip_path) as zf:
        # Validate every entry before writing a single byte.
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        seen: set[tuple[str, ...]] = set()
        declared = 0
        for info in zf.infolist():
            parts = _entry_parts(info.filename)
            if _is_symlink(info):
                raise UnsafeArchiveError(f"symlink entry in archive: {info.filename!r}")
            if info.is_dir() or not parts:
                continue
            if keep is not None and Path(parts[-1]).suffix.lower() not in keep:
                continue
            if parts == (EXTRACT_MARKER,):
                raise UnsafeArchiveError(f"entry collides with the extraction marker: {info.filename!r}")
            if parts in seen:
                raise UnsafeArchiveError(f"duplicate entry in archive: {info.filename!r}")
            seen.add(parts)
            declared += info.file_size
            if declared > max_bytes:
                raise UnsafeArchiveError(
                    f"archive declares more than max_bytes={max_bytes} uncompressed bytes"
                )
            plan.append((info, parts))
        # A file and a folder of the same name cannot both exist.
        dirs = {parts[:i] for parts in seen for i in range(1, len(parts))}
        clash = seen & dirs
        if clash:
            raise UnsafeArchiveError(f"entry is both a file and a folder: {'/'.join(min(clash))!r}")

        tmp = temp_dir_beside(dest)  # mode 0o777 less the umask, where mkdtemp's 0o700 would stick
        try:
            root = tmp.resolve()
            written = 0
            for info, parts in plan:
                target = tmp.joinpath(*parts)
                if not target.resolve().is_relative_to(root):  # belt and braces
                    raise UnsafeArchiveError(f"path escapes the target folder: {info.filename!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                entry_written = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(_COPY_CHUNK):
                        entry_written += len(chunk)
                        written += len(chunk)
                        if written > max_bytes:
                            raise UnsafeArchiveError(
                                f"archive inflates past max_bytes={max_bytes} (at {info.filename!r})"
                            )
                        if entry_written > info.file_size:
                            raise UnsafeArchiveError(
                                f"entry {info.filename!r} inflates past its declared {info.file_size} bytes"
                            )
                        out.write(chunk)
            rels = sorted("/".join(parts) for _, parts in plan)
            marker = {"source": Path(zip_path).name, "bytes": written, "files": rels}
            (tmp / EXTRACT_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            try:
                os.rename(tmp, dest)
            except OSError:
                # Another process may have finished the same extraction first.
                done = _read_marker(dest)
                if done is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return sorted(done)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return [dest.joinpath(*rel.split("/")) for rel in rels]


# --------------------------------------------------------------------------------------------------
# MAESTRO metadata

MAESTRO_COLUMNS = (
    "midi_filename",
    "canonical_composer",
    "canonical_title",
    "split",
    "year",
    "duration",
    "audio_filename",
)
MAESTRO_SPLITS = frozenset({"train", "validation", "test"})
_STRING_COLUMNS = ("midi_filename", "canonical_composer", "canonical_title", "split", "audio_filename")


def _relative_posix(value: str, column: str) -> str:
    p = value.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    if not p or p.startswith("/") or re.match(r"^[A-Za-z]:", p) or ".." in p.split("/"):
        raise ValueError(f"{column} must be a relative path inside the dataset, got {value!r}")
    return p


def _canonical_maestro(raw: pd.DataFrame, source: Path) -> pd.DataFrame:
    missing = [c for c in MAESTRO_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{source}: MAESTRO metadata lacks columns {missing}")
    df = raw.loc[:, list(MAESTRO_COLUMNS)].reset_index(drop=True)
    nulls = [c for c in MAESTRO_COLUMNS if df[c].isna().any()]
    if nulls:
        raise ValueError(f"{source}: missing values in columns {nulls}")
    out: dict[str, pd.Series] = {}
    for col in _STRING_COLUMNS:
        out[col] = df[col].map(str).astype(str)
    out["midi_filename"] = out["midi_filename"].map(lambda v: _relative_posix(v, "midi_filename")).astype(str)
    out["audio_filename"] = out["audio_filename"].map(lambda v: v.replace("\\", "/")).astype(str)
    bad_split = sorted(set(out["split"]) - MAESTRO_SPLITS)
    if bad_split:
        raise ValueError(f"{source}: unknown split values {bad_split}")
    year = pd.to_numeric(df["year"], errors="raise").astype("float64")
    if ((year % 1) != 0).any():
        raise ValueError(f"{source}: non-integer year values")
    out["year"] = year.astype("int64")
    out["duration"] = pd.to_numeric(df["duration"], errors="raise").astype("float64")
    return pd.DataFrame({c: out[c] for c in MAESTRO_COLUMNS})


def read_maestro_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read MAESTRO metadata from its JSON (v3 column-oriented or v2 list of records) or CSV form.

    Returns
    -------
    pandas.DataFrame
        Columns ``midi_filename`` (relative, ``/``-separated), ``canonical_composer``,
        ``canonical_title``, ``split``, ``year`` (int64), ``duration`` (float64 seconds),
        ``audio_filename``; rows in file order (v3 JSON: by its integer row keys).
    """
    src = Path(path)
    suffix = src.suffix.lower()
    if suffix == ".json":
        with open(src, encoding="utf-8-sig") as f:
            data = json.load(f)
        if isinstance(data, list):
            if not all(isinstance(r, dict) for r in data):
                raise ValueError(f"{src}: a JSON list must hold one object per row")
            raw = pd.DataFrame.from_records(data)
        elif isinstance(data, dict):
            if not all(isinstance(v, dict) for v in data.values()):
                raise ValueError(f"{src}: column-oriented JSON must map column -> {{row: value}}")
            keys: set[str] = set()
            for column in data.values():
                keys.update(column)
            try:
                order = sorted(keys, key=int)
            except ValueError:
                raise ValueError(f"{src}: row keys must be integers") from None
            raw = pd.DataFrame(
                {name: [col.get(k) for k in order] for name, col in data.items()}, dtype=object
            )
        else:
            raise ValueError(f"{src}: unexpected JSON layout ({type(data).__name__})")
    elif suffix == ".csv":
        raw = pd.read_csv(src, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig")
    else:
        raise ValueError(f"{src}: expected a .json or .csv file")
    return _canonical_maestro(raw, src)


_METADATA_NAME_RE = re.compile(r"^maestro(?:-v(\d+(?:\.\d+)*))?[^/]*\.(json|csv)$", re.IGNORECASE)


def find_maestro_metadata(folder: str | os.PathLike[str]) -> Path | None:
    """Find the MAESTRO metadata file in ``folder`` or below; ``None`` if there is none.

    Preference: the newest version in the file name (``maestro-v3.0.0`` over ``maestro-v2.0.0``), then
    JSON over CSV, then the shallower and shorter path. Hidden folders are skipped.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    best: tuple | None = None
    best_path: Path | None = None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        depth = len(Path(dirpath).relative_to(root).parts)
        for name in filenames:
            m = _METADATA_NAME_RE.match(name)
            if not m:
                continue
            version = tuple(int(x) for x in m.group(1).split(".")) if m.group(1) else ()
            is_json = m.group(2).lower() == "json"
            # max() over: newest version, JSON, shallow, short name, then name (reversed for stability)
            key = (version, is_json, -depth, -len(name), [-ord(c) for c in name])
            if best is None or key > best:
                best, best_path = key, Path(dirpath) / name
    return best_path
