"""The artifact store: one interface, two backends, a local folder and ``s3://bucket/prefix``.

``Store(uri)`` returns a :class:`LocalStore` or an :class:`S3Store`; both are :class:`Store`. Keys are
``/``-separated paths relative to the store root. Every write is atomic (an object appears whole or
not at all); :meth:`Store.put_if_absent` and :meth:`Store.swap_pointer` are the two race-safe
primitives that publishing builds on. On S3 they rely on the server's conditional writes
(``If-None-Match: *`` / ``If-Match: <etag>``), never on a check made here first; locally on a hard link
that fails if the target exists and on a file lock.

Key segments must not start with ``.``: such names are reserved for temporary and lock files, which
:meth:`Store.list` therefore never shows.
"""

from __future__ import annotations

import abc
import hashlib
import os
import time

import fsspec
from fsspec.asyn import sync

from tasks.storage.files import atomic_write, write_if_absent
from tasks.storage.settings import get_settings

_S3_SCHEMES = ("s3://", "s3a://")
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


class Store(abc.ABC):
    """Artifact store rooted at a local folder or ``s3://bucket/prefix``.

    ``Store(uri)`` picks the backend from the URI; the subclasses can also be named directly.

    Parameters
    ----------
    uri : str
        A folder (relative paths are made absolute; ``file://`` accepted) or ``s3://bucket[/prefix]``.
        Endpoint and credentials come from :func:`tasks.storage.settings.get_settings`, never from the URI.

    Attributes
    ----------
    uri : str
        The normalised URI: an absolute folder, or ``s3://bucket[/prefix]`` without a trailing slash.
    fs : fsspec.AbstractFileSystem
        The filesystem holding the objects; :meth:`path` gives a key's path in it.
    """

    uri: str
    fs: fsspec.AbstractFileSystem
    _root: str  # the store root as a path in ``fs``

    def __new__(cls, uri: str) -> Store:
        if cls is Store:
            cls = S3Store if uri.startswith(_S3_SCHEMES) else LocalStore
        return super().__new__(cls)

    def __reduce__(self):
        return type(self), (self.uri,)  # rebuilt from the URI: credentials are never pickled

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

    # -- reads ----------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return self.fs.isfile(self.path(key))

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

    # -- writes, each backend its own -----------------------------------------------------------

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing any object there; the object appears whole or not at all."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there.

        Returns
        -------
        bool
            True if this call wrote the object, False if the key already existed (it is never
            overwritten).
        """

    @abc.abstractmethod
    def read_pointer(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and compare-and-swap token of a pointer (``(None, None)`` if absent)."""

    @abc.abstractmethod
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


class LocalStore(Store):
    """A store in a local (or mounted shared) folder; files are written with the process umask."""

    def __init__(self, uri: str) -> None:
        if "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"unsupported store URI scheme: {uri.split('://', 1)[0]}:// "
                             "(use a folder or s3://bucket/prefix)")
        self.uri = os.path.abspath(uri.removeprefix("file://"))  # also drops a trailing slash
        self.fs = fsspec.filesystem("file")
        self._root = self.uri

    def write_bytes(self, key: str, data: bytes) -> None:
        """Temp file beside the target, fsynced, then ``os.replace``-d."""
        atomic_write(self.path(key), data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Temp file beside the target, fsynced, then hard-linked (which fails if the target exists)."""
        return write_if_absent(self.path(key), data)

    def read_pointer(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and its sha256 as the token (``(None, None)`` if absent)."""
        try:
            with open(self.path(key), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return data, sha256_bytes(data)

    def swap_pointer(self, key: str, data: bytes, expected_token: str | None) -> bool:
        """Compare and write under a lock file beside the pointer."""
        from filelock import FileLock

        path = self.path(key)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        with FileLock(os.path.join(folder, f".{name}.lock"), timeout=60):
            if self.read_pointer(key)[1] != expected_token:
                return False
            self.write_bytes(key, data)
        return True


class S3Store(Store):
    """A store under ``s3://bucket[/prefix]`` (AWS, MinIO, moto); conditional writes done by the server."""

    def __init__(self, uri: str) -> None:
        if not uri.startswith(_S3_SCHEMES):
            raise ValueError(f"not an s3 URI: {uri!r} (expected s3://bucket[/prefix])")
        self.uri = "s3://" + uri.split("://", 1)[1].rstrip("/")
        if self.uri == "s3://":
            raise ValueError("an s3 store needs a bucket: s3://bucket[/prefix]")
        # Listings are not cached: other processes write to the same bucket.
        self.fs = fsspec.filesystem("s3", use_listings_cache=False, **self.storage_options())
        self._root = self.uri[len("s3://") :]

    def write_bytes(self, key: str, data: bytes) -> None:
        """One PUT, or above 100 MB a multipart upload, invisible until completed (aborted on failure)."""
        self.fs.pipe_file(self.path(key), data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """One PUT with ``If-None-Match: *``."""
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_pointer(self, key: str) -> tuple[bytes | None, str | None]:
        """Content and ETag from one GET (``(None, None)`` if absent)."""
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
        """One PUT with ``If-Match: <etag>`` (``If-None-Match: *`` to create)."""
        match = {"IfNoneMatch": "*"} if expected_token is None else {"IfMatch": expected_token}
        return self._conditional_put(key, data, **match)

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
