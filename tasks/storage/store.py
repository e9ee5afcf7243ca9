"""The artifact store: one small class over fsspec for a local folder or ``s3://bucket/prefix``.

Keys are ``/``-separated paths relative to the store root. Every write is atomic (an object appears
whole or not at all); :meth:`Store.put_if_absent` and :meth:`Store.swap_pointer` are the two
race-safe primitives that publishing builds on. On S3 they rely on the server's conditional writes
(``If-None-Match: *`` / ``If-Match: <etag>``), never on a check made here first.

Key segments must not start with ``.``: such names are reserved for temporary and lock files, which
:meth:`Store.list` therefore never shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import fsspec
from fsspec.asyn import sync

from tasks.storage.settings import get_settings

_PRECONDITION_CODES = {"PreconditionFailed", "412", "NoSuchKey", "404"}  # If-Match on a missing key: 404
_CONFLICT_CODES = {"ConditionalRequestConflict", "409"}  # a concurrent conditional write; AWS says retry


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _client_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception that s3fs translated (``__cause__`` is botocore's)."""
    for err in (exc, exc.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return None


@contextlib.contextmanager
def _temp_beside(path: str) -> Iterator[tuple[IO[bytes], str]]:
    """A temp file (open for writing, and its path) in ``path``'s folder; removed on exit if still there.

    Its name starts with a dot, so :meth:`Store.list` never shows it.
    """
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


class Store:
    """Artifact store rooted at a local folder or ``s3://bucket/prefix``.

    Parameters
    ----------
    uri : str
        A folder (relative paths are made absolute; ``file://`` accepted) or ``s3://bucket[/prefix]``.
        Endpoint and credentials come from :func:`tasks.storage.settings.get_settings`, never from the URI.
    """

    def __init__(self, uri: str) -> None:
        if uri.startswith(("s3://", "s3a://")):
            self.uri = "s3://" + uri.split("://", 1)[1].rstrip("/")
            if self.uri == "s3://":
                raise ValueError("an s3 store needs a bucket: s3://bucket[/prefix]")
            self.is_remote = True
            # Listings are not cached: other processes write to the same bucket.
            self.fs = fsspec.filesystem("s3", use_listings_cache=False, **self.storage_options())
            self._root = self.uri[len("s3://") :]
        elif "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"unsupported store URI scheme: {uri.split('://', 1)[0]}://")
        else:
            self.uri = os.path.abspath(uri.removeprefix("file://"))  # also drops a trailing slash
            self.is_remote = False
            self.fs = fsspec.filesystem("file")
            self._root = self.uri

    @classmethod
    def from_uri(cls, uri: str) -> Store:
        """Same as ``Store(uri)``."""
        return cls(uri)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    __str__ = __repr__

    # -- addressing -----------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """Full fsspec path of ``key`` (``bucket/prefix/key`` on S3, an absolute path locally)."""
        parts = key.strip("/").split("/")
        if not key.strip("/") or any(p == "" or p.startswith(".") for p in parts):
            raise ValueError(f"invalid store key {key!r}: empty, or a segment starting with '.'")
        return f"{self._root}/{'/'.join(parts)}"

    def url(self, key: str) -> str:
        """Full URI of ``key`` for pandas / pyarrow, to be used with :meth:`storage_options`."""
        return f"{self.uri}/{self.path(key)[len(self._root) + 1 :]}"

    def storage_options(self) -> dict:
        """fsspec ``storage_options`` for this store (empty locally; holds credentials on S3)."""
        return get_settings().storage_options(self.uri)

    def arrow_filesystem(self):
        """A pyarrow filesystem and the base path of the store root inside it.

        Returns
        -------
        tuple[pyarrow.fs.FileSystem, str]
            On S3, pyarrow's native ``S3FileSystem`` pointed at the configured endpoint: its C++
            client reads and writes with multiple threads outside the GIL, several times faster
            than wrapping s3fs in ``PyFileSystem(FSSpecHandler(...))``. Writes made through it are
            not atomic locally; use :meth:`open_write` for that.
        """
        import pyarrow.fs as pafs

        if not self.is_remote:
            return pafs.LocalFileSystem(), self._root
        s = get_settings()
        kwargs: dict = {"region": s.s3_region}
        if s.s3_endpoint_url:
            scheme, _, host = s.s3_endpoint_url.rstrip("/").rpartition("://")
            kwargs.update(endpoint_override=host, scheme=scheme or "https")
        if s.aws_access_key_id is not None and s.aws_secret_access_key is not None:
            kwargs.update(
                access_key=s.aws_access_key_id.get_secret_value(),
                secret_key=s.aws_secret_access_key.get_secret_value(),
            )
        return pafs.S3FileSystem(**kwargs), self._root

    # -- plain reads and writes -----------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return self.fs.isfile(self.path(key))

    def size(self, key: str) -> int:
        """Size of the object at ``key`` in bytes (``FileNotFoundError`` if absent)."""
        return int(self.fs.size(self.path(key)))

    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key`` (``FileNotFoundError`` if absent)."""
        return self.fs.cat_file(self.path(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a folder-like key, or ``""`` for everything), recursive and sorted."""
        base = self.path(prefix) if prefix.strip("/") else self._root
        if not self.fs.exists(base):
            return []
        keys = (p[len(self._root) + 1 :] for p in self.fs.find(base))
        return sorted(k for k in keys if not any(s.startswith(".") for s in k.split("/")))

    def delete(self, key_or_prefix: str) -> None:
        """Delete one object, or every object under a folder-like prefix; absent keys are ignored."""
        path = self.path(key_or_prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing any object there; the object appears whole or not at all."""
        with self.open_write(key) as f:
            f.write(data)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """Binary file to write ``key``; committed atomically on clean exit, discarded on an exception.

        Locally this is a temp file in the same folder, fsynced and ``os.replace``-d. On S3 the object
        is one PUT (small) or a multipart upload (large), both invisible until the commit on close;
        on an exception the multipart upload is aborted. (s3fs's own ``with fs.open(...)`` would
        commit the partial data on an exception, which is why this doesn't use it.)
        """
        path = self.path(key)
        if self.is_remote:
            f = self.fs.open(path, "wb")
            try:
                yield f
            except BaseException:
                f.discard()  # abort the multipart upload, if one was started
                f.closed = True  # skip fsspec's close(), which would commit the buffer
                raise
            f.close()
            return
        with _temp_beside(path) as (f, tmp):
            yield f
            _fsync(f)
            os.replace(tmp, path)

    # -- race-safe primitives -------------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there.

        Returns
        -------
        bool
            True if this call wrote the object, False if the key already existed (it is never
            overwritten).
        """
        if self.is_remote:
            return self._conditional_put(key, data, IfNoneMatch="*")
        path = self.path(key)
        with _temp_beside(path) as (f, tmp):
            f.write(data)
            _fsync(f)
            try:
                os.link(tmp, path)  # atomic, and fails if ``path`` exists
            except FileExistsError:
                return False
        return True

    def read_pointer(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and compare-and-swap token of a pointer (``(None, None)`` if absent).

        The token is the S3 ETag, or locally the sha256 of the content.
        """
        if not self.is_remote:
            try:
                with open(self.path(key), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None, None
            return data, sha256_bytes(data)
        bucket, _, obj = self.path(key).partition("/")

        async def get() -> tuple[bytes, str]:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=obj)
            async with resp["Body"] as body:  # content and ETag from the same response
                return await body.read(), resp["ETag"]

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None, None

    def swap_pointer(self, key: str, data: bytes, expected_token: str | None) -> bool:
        """Write ``data`` at ``key`` only if its current token is ``expected_token``.

        Parameters
        ----------
        key : str
            The pointer's key.
        data : bytes
            New content.
        expected_token : str or None
            Token from :meth:`read_pointer`; None means the pointer must not exist yet.

        Returns
        -------
        bool
            True if swapped, False if the pointer had moved on (nothing written).
        """
        if self.is_remote:
            match = {"IfNoneMatch": "*"} if expected_token is None else {"IfMatch": expected_token}
            return self._conditional_put(key, data, **match)
        from filelock import FileLock

        path = self.path(key)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        with FileLock(os.path.join(folder, f".{name}.lock"), timeout=60):
            if self.read_pointer(key)[1] != expected_token:
                return False
            self.write_bytes(key, data)
        return True

    # -- helpers --------------------------------------------------------------------------------

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> bool:
        """One ``PutObject`` with an ``If-Match`` / ``If-None-Match`` header; a failed condition -> False."""
        path = self.path(key)
        bucket, _, obj = path.partition("/")
        attempt = 0
        while True:
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, **condition)
                return True
            except OSError as exc:  # s3fs turns botocore's ClientError into OSError subclasses
                code = _client_error_code(exc)
                if code in _PRECONDITION_CODES:
                    return False
                if code not in _CONFLICT_CODES or attempt == 4:
                    raise
            finally:
                self.fs.invalidate_cache(path)  # the raw client bypasses s3fs's listing cache
            attempt += 1
            time.sleep(0.1 * 2**attempt)
