"""Downloadable datasets, declared as data: where each archive lives, how big it is, and its sha256.

Nothing here touches the network; :mod:`tasks.storage.fetch` downloads and verifies an archive against these
numbers. Users point at a mirror with :meth:`RemoteArchive.with_overrides`. This module imports neither
torch nor prefect.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["RemoteArchive", "MAESTRO_V3", "MAESTRO_V3_FULL", "DATASETS", "get_dataset"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SAFE_FILENAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")


@dataclass(frozen=True)
class RemoteArchive:
    """One downloadable archive.

    Parameters
    ----------
    name : str
        Short identifier, also the key in :data:`DATASETS` (``"maestro-v3.0.0"``).
    url : str
        ``http://`` or ``https://`` address of the archive.
    size : int
        Exact size of the archive in bytes.
    sha256 : str
        Lower-case hex sha256 of the archive.
    extract_subdir : str
        Folder (relative, ``/``-separated) inside the archive that holds the data, ``""`` for its root.
    max_unpacked_bytes : int, optional
        Cap on the bytes extracted from this archive (a zip-bomb guard); ``None`` takes the settings'
        ``download_max_bytes``. Archives that legitimately inflate past that (MAESTRO with audio) say so.
    """

    name: str
    url: str
    size: int
    sha256: str
    extract_subdir: str = ""
    max_unpacked_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name or self.name in (".", ".."):
            raise ValueError(f"invalid dataset name {self.name!r}")
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"{self.name}: url must be http(s), got {self.url!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"{self.name}: size must be a positive int, got {self.size!r}")
        sha = self.sha256.lower() if isinstance(self.sha256, str) else self.sha256
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")
        object.__setattr__(self, "sha256", sha)
        sub = self.extract_subdir.replace("\\", "/").strip("/")
        if sub.startswith("/") or ".." in sub.split("/") or re.match(r"^[A-Za-z]:", sub):
            raise ValueError(f"{self.name}: extract_subdir must be a relative path, got {self.extract_subdir!r}")
        object.__setattr__(self, "extract_subdir", sub)
        cap = self.max_unpacked_bytes
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
            raise ValueError(f"{self.name}: max_unpacked_bytes must be a positive int or None, got {cap!r}")

    @property
    def filename(self) -> str:
        """File name to store the download under: the URL's last path segment, else ``<name>.zip``."""
        base = posixpath.basename(unquote(urlsplit(self.url).path))
        if base and base not in (".", "..") and _SAFE_FILENAME_RE.match(base):
            return base
        return f"{self.name}.zip"

    def with_overrides(
        self, *, url: str | None = None, size: int | None = None, sha256: str | None = None
    ) -> RemoteArchive:
        """Return a copy with a different URL, size and/or sha256 (a mirror, a test server).

        Arguments left as ``None`` keep their current value.
        """
        changes: dict[str, object] = {}
        if url is not None:
            changes["url"] = url
        if size is not None:
            changes["size"] = size
        if sha256 is not None:
            changes["sha256"] = sha256
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RemoteArchive:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown RemoteArchive fields: {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]


MAESTRO_V3 = RemoteArchive(
    name="maestro-v3.0.0",
    url="https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip",
    size=58_416_533,
    sha256="70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c",
    extract_subdir="maestro-v3.0.0",
)

# The full archive: every MIDI file with its recording (WAV, 44.1–48 kHz 16-bit stereo, same stem) and the
# metadata (whose ``audio_filename`` names the WAV). 101 GiB to download, ~120 GB unpacked. The sha256 is
# the one Magenta's dataset page publishes; the byte size is not on that page (it says "101GB") and was
# taken from another project's download script; neither was checked against the server from here. Both
# can be overridden (``--maestro-size`` / ``--maestro-sha256``) and a mismatch fails the download cleanly.
MAESTRO_V3_FULL = RemoteArchive(
    name="maestro-v3.0.0-full",
    url="https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0.zip",
    size=108_445_099_632,
    sha256="6680fea5be2339ea15091a249fbd70e49551246ddbd5ca50f1b2352c08c95291",
    extract_subdir="maestro-v3.0.0",
    max_unpacked_bytes=130_000_000_000,
)

DATASETS: dict[str, RemoteArchive] = {a.name: a for a in (MAESTRO_V3, MAESTRO_V3_FULL)}


def get_dataset(name: str) -> RemoteArchive:
    """Look up a declared dataset by name (``KeyError`` lists the known names)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
