"""Download and unpack against a loopback HTTP server that misbehaves on request.

The server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1) serves a small MAESTRO-like zip built here and
can drop the connection mid-body, corrupt the bytes, ignore ``Range`` or answer with an error status.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import stat
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from storage_schemas.datasets import DATASETS, MAESTRO_V3, RemoteArchive
from tasks.storage.fetch import (
    EXTRACT_MARKER,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    find_maestro_metadata,
    read_maestro_metadata,
    safe_extract,
)

QUOTED_TITLE = 'Transcendental Etude No. 1 "Prelude"'
METADATA_ROWS = [
    {
        "canonical_composer": "Franz Liszt",
        "canonical_title": QUOTED_TITLE,
        "split": "validation",
        "year": 2008,
        "midi_filename": "2008/liszt.midi",
        "audio_filename": "2008/liszt.wav",
        "duration": 53.936911875,
    },
    {
        "canonical_composer": "Frédéric Chopin",
        "canonical_title": "Ballade No. 1 in G Minor, Op. 23",
        "split": "train",
        "year": 2004,
        "midi_filename": "2004/chopin.midi",
        "audio_filename": "2004/chopin.wav",
        "duration": 540.25,
    },
    {
        "canonical_composer": "Domenico Scarlatti",
        "canonical_title": "Sonata in D Major, K96",
        "split": "test",
        "year": 2018,
        "midi_filename": "2018/scarlatti.midi",
        "audio_filename": "2018/scarlatti.wav",
        "duration": 140.121387656,
    },
]


def _midi_bytes(seed: int, n: int) -> bytes:
    """MIDI-ish bytes: a real header chunk followed by incompressible noise (keeps the zip big enough)."""
    rng = random.Random(seed)
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    return header + bytes(rng.getrandbits(8) for _ in range(n))


def build_maestro_zip() -> bytes:
    """A miniature ``maestro-v3.0.0-midi.zip``: year folders of MIDI-ish files, v3 JSON and CSV."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("maestro-v3.0.0/", b"")
        for i, row in enumerate(METADATA_ROWS):
            zf.writestr(f"maestro-v3.0.0/{row['midi_filename']}", _midi_bytes(i, 20_000))
        columns = list(METADATA_ROWS[0])
        v3 = {c: {str(i): row[c] for i, row in enumerate(METADATA_ROWS)} for c in columns}
        zf.writestr("maestro-v3.0.0/maestro-v3.0.0.json", json.dumps(v3))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(METADATA_ROWS)
        zf.writestr("maestro-v3.0.0/maestro-v3.0.0.csv", text.getvalue())
        zf.writestr("maestro-v3.0.0/LICENSE", b"CC BY-NC-SA 4.0\n")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# the loopback server


@dataclass
class ServerState:
    payload: bytes = b""
    corrupt: bool = False  # flip bytes in the body (same length)
    ignore_range: bool = False  # always answer 200 with the full body
    drop_requests: set[int] = field(default_factory=set)  # request indexes to cut short
    drop_after: int = 0  # body bytes sent before cutting
    status: int | None = None  # answer every request with this error status
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def archive(self, name: str = "maestro-v3.0.0-midi.zip") -> RemoteArchive:
        return MAESTRO_V3.with_overrides(
            url=f"{self.base_url}/{name}",
            size=len(self.payload),
            sha256=hashlib.sha256(self.payload).hexdigest(),
        )

    @property
    def ranges(self) -> list[str | None]:
        return [r["range"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with st.lock:
            index = len(st.requests)
            record = {"range": rng, "status": None}
            st.requests.append(record)
        if st.status is not None:
            record["status"] = st.status
            self.send_error(st.status)
            return
        body = st.payload
        if st.corrupt:
            body = bytes(b ^ 0x55 for b in body)
        start, status = 0, 200
        if rng and not st.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        record["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if index in st.drop_requests:
            self.wfile.write(chunk[: st.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture(scope="module")
def maestro_zip() -> bytes:
    return build_maestro_zip()


@pytest.fixture
def server(maestro_zip):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = ServerState(payload=maestro_zip, base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------------------------------
# datasets as data


def test_maestro_declared_and_overridable():
    assert DATASETS["maestro-v3.0.0"] is MAESTRO_V3
    assert MAESTRO_V3.filename == "maestro-v3.0.0-midi.zip"
    mirror = MAESTRO_V3.with_overrides(url="http://127.0.0.1:9/m.zip", size=10, sha256="AB" * 32)
    assert (mirror.url, mirror.size, mirror.sha256) == ("http://127.0.0.1:9/m.zip", 10, "ab" * 32)
    assert mirror.extract_subdir == MAESTRO_V3.extract_subdir == "maestro-v3.0.0"
    assert MAESTRO_V3.size == 58_416_533  # the original is untouched
    assert RemoteArchive.from_dict(mirror.to_dict()) == mirror
    with pytest.raises(ValueError):
        MAESTRO_V3.with_overrides(sha256="not-a-hash")
    with pytest.raises(ValueError):
        MAESTRO_V3.with_overrides(url="ftp://example/x.zip")
    with pytest.raises(ValueError):
        MAESTRO_V3.with_overrides(size=0)


def test_datasets_module_imports_neither_torch_nor_prefect():
    import subprocess
    import sys

    code = (
        "import sys, storage_schemas.datasets; "
        "bad = [m for m in ('torch', 'prefect') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --------------------------------------------------------------------------------------------------
# download


def test_download_plain(server, tmp_path):
    calls: list[tuple[int, int]] = []
    path = download(server.archive(), tmp_path, progress=lambda d, t: calls.append((d, t)), chunk_size=4096)
    assert path == tmp_path / "maestro-v3.0.0-midi.zip"
    assert path.read_bytes() == server.payload
    assert server.ranges == [None]
    assert calls[-1] == (len(server.payload), len(server.payload))
    assert len(calls) > 5 and all(t == len(server.payload) for _, t in calls)
    assert _leftovers(tmp_path) == ["maestro-v3.0.0-midi.zip"]


def test_download_resumes_with_range_after_drop(server, tmp_path):
    server.drop_requests = {0}
    server.drop_after = 12_345
    calls: list[int] = []
    path = download(server.archive(), tmp_path, progress=lambda d, t: calls.append(d), chunk_size=4096)
    assert path.read_bytes() == server.payload
    assert server.ranges == [None, "bytes=12345-"]
    assert [r["status"] for r in server.requests] == [200, 206]
    assert calls == sorted(calls) and 12_345 in calls  # resumed, never restarted
    assert _leftovers(tmp_path) == ["maestro-v3.0.0-midi.zip"]


def test_download_resumes_twice(server, tmp_path):
    server.drop_requests = {0, 1}
    server.drop_after = 9_000
    path = download(server.archive(), tmp_path, chunk_size=1000)
    assert path.read_bytes() == server.payload
    assert server.ranges == [None, "bytes=9000-", "bytes=18000-"]


def test_download_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.drop_requests = {0}
    server.drop_after = 10_000
    server.ignore_range = True
    calls: list[int] = []
    path = download(server.archive(), tmp_path, progress=lambda d, t: calls.append(d), chunk_size=4096)
    assert path.read_bytes() == server.payload
    assert server.ranges == [None, "bytes=10000-"]
    assert [r["status"] for r in server.requests] == [200, 200]
    assert 0 in calls[1:]  # progress went back to zero on the restart
    assert _leftovers(tmp_path) == ["maestro-v3.0.0-midi.zip"]


def test_download_wrong_bytes_raises_and_publishes_nothing(server, tmp_path):
    server.corrupt = True
    with pytest.raises(ChecksumError) as err:
        download(server.archive(), tmp_path)
    message = str(err.value)
    assert hashlib.sha256(server.payload).hexdigest() in message
    assert hashlib.sha256(bytes(b ^ 0x55 for b in server.payload)).hexdigest() in message
    assert _leftovers(tmp_path) == []  # neither the final file nor a .part


def test_download_wrong_size_raises(server, tmp_path):
    archive = server.archive().with_overrides(size=len(server.payload) + 1)
    with pytest.raises(ChecksumError, match=str(len(server.payload) + 1)):
        download(archive, tmp_path)
    assert _leftovers(tmp_path) == []


def test_download_complete_part_gets_416_and_is_verified(server, tmp_path):
    (tmp_path / "maestro-v3.0.0-midi.zip.part").write_bytes(server.payload)
    path = download(server.archive(), tmp_path)
    assert path.read_bytes() == server.payload
    assert [(r["range"], r["status"]) for r in server.requests] == [(f"bytes={len(server.payload)}-", 416)]


def test_download_stale_part_with_bad_bytes_gets_one_clean_retry(server, tmp_path):
    (tmp_path / "maestro-v3.0.0-midi.zip.part").write_bytes(b"\0" * 5000)
    path = download(server.archive(), tmp_path)
    assert path.read_bytes() == server.payload
    assert server.ranges == ["bytes=5000-", None]


def test_download_existing_verified_file_skips_network(server, tmp_path):
    (tmp_path / "maestro-v3.0.0-midi.zip").write_bytes(server.payload)
    path = download(server.archive(), tmp_path)
    assert path.read_bytes() == server.payload
    assert server.requests == []


def test_download_replaces_existing_unverified_file(server, tmp_path):
    (tmp_path / "maestro-v3.0.0-midi.zip").write_bytes(b"not the archive")
    path = download(server.archive(), tmp_path)
    assert path.read_bytes() == server.payload
    assert server.ranges == [None]


def test_download_http_404_fails_without_retry(server, tmp_path):
    server.status = 404
    with pytest.raises(DownloadError, match="404"):
        download(server.archive(), tmp_path, retry_delay=0)
    assert len(server.requests) == 1
    assert not (tmp_path / "maestro-v3.0.0-midi.zip").exists()


def test_download_retries_5xx_then_gives_up(server, tmp_path):
    server.status = 503
    with pytest.raises(DownloadError, match="retries"):
        download(server.archive(), tmp_path, max_retries=2, retry_delay=0)
    assert len(server.requests) == 3
    assert not (tmp_path / "maestro-v3.0.0-midi.zip").exists()


def test_download_gives_up_when_no_bytes_arrive(server, tmp_path):
    server.drop_requests = set(range(100))
    server.drop_after = 0
    with pytest.raises(DownloadError):
        download(server.archive(), tmp_path, max_retries=3, retry_delay=0)
    assert len(server.requests) == 4
    assert not (tmp_path / "maestro-v3.0.0-midi.zip").exists()


def test_download_two_threads_fetch_once(server, tmp_path):
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(download(server.archive(), tmp_path))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == server.payload
    assert len(server.requests) == 1


# --------------------------------------------------------------------------------------------------
# safe_extract


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def test_extract_filters_suffixes_and_is_idempotent(tmp_path, maestro_zip):
    zpath = tmp_path / "m.zip"
    zpath.write_bytes(maestro_zip)
    dest = tmp_path / "out"
    files = safe_extract(zpath, dest, max_bytes=10**7, suffixes=(".mid", ".midi", "csv", ".JSON"))
    rels = [p.relative_to(dest).as_posix() for p in files]
    assert rels == sorted(
        ["maestro-v3.0.0/maestro-v3.0.0.csv", "maestro-v3.0.0/maestro-v3.0.0.json"]
        + [f"maestro-v3.0.0/{r['midi_filename']}" for r in METADATA_ROWS]
    )
    assert not (dest / "maestro-v3.0.0" / "LICENSE").exists()
    assert (dest / EXTRACT_MARKER).is_file()
    with zipfile.ZipFile(zpath) as zf:
        assert (dest / "maestro-v3.0.0/2008/liszt.midi").read_bytes() == zf.read(
            "maestro-v3.0.0/2008/liszt.midi"
        )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left

    zpath.write_bytes(b"garbage: a second call must not reopen the archive")
    assert safe_extract(zpath, dest, max_bytes=10**7) == files


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_extracted_folders_and_files_get_the_umask_mode(tmp_path, maestro_zip, umask):
    """The extraction folder was a mkdtemp (0o700) renamed into place: a shared cache others could not read."""
    zpath = tmp_path / "m.zip"
    zpath.write_bytes(maestro_zip)
    old = os.umask(umask)
    try:
        files = safe_extract(zpath, tmp_path / "out", max_bytes=10**7)
    finally:
        os.umask(old)
    folders = {tmp_path / "out"} | {p.parent for p in files}
    assert {stat.S_IMODE(d.stat().st_mode) for d in folders} == {0o777 & ~umask}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}


def test_extract_end_to_end_from_server(server, tmp_path):
    archive = server.archive()
    zpath = download(archive, tmp_path / "downloads")
    root = tmp_path / "maestro"
    safe_extract(zpath, root, max_bytes=10**7, suffixes=(".midi", ".json", ".csv"))
    meta = find_maestro_metadata(root)
    assert meta == root / archive.extract_subdir / "maestro-v3.0.0.json"
    df = read_maestro_metadata(meta)
    assert df["canonical_title"].tolist()[0] == QUOTED_TITLE
    for rel in df["midi_filename"]:
        assert (root / archive.extract_subdir / rel).is_file()
    pd_csv = read_maestro_metadata(meta.with_suffix(".csv"))
    assert pd_csv.equals(df)


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "bad_name",
    ["../evil.mid", "ok/../../evil.mid", "..\\evil.mid", "C:/evil.mid", "ABSOLUTE"],
    ids=["dotdot", "nested-dotdot", "backslash-dotdot", "drive-letter", "absolute"],
)
def test_extract_refuses_escaping_entries(tmp_path, bad_name):
    root = tmp_path / "root"
    root.mkdir()
    if bad_name == "ABSOLUTE":
        bad_name = (tmp_path / "abs-evil.mid").as_posix()
    data = _zip_with([("good/a.mid", b"MThd-good"), (bad_name, b"evil")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert bad_name in zf.namelist()  # the hostile name really is in the archive
    zpath = tmp_path / "evil.zip"
    zpath.write_bytes(data)
    dest = root / "out"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(zpath, dest, max_bytes=10**6)
    assert not dest.exists()
    assert sorted(p.name for p in root.iterdir()) == []  # no temp folder, nothing escaped into root
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.zip", "root"]


def test_extract_allows_dotdot_that_stays_inside(tmp_path):
    zpath = tmp_path / "ok.zip"
    zpath.write_bytes(_zip_with([("a/../b/c.mid", b"x")]))
    files = safe_extract(zpath, tmp_path / "out", max_bytes=100)
    assert files == [tmp_path / "out" / "b" / "c.mid"]


def test_extract_refuses_symlink_entries(tmp_path):
    zpath = tmp_path / "link.zip"
    zpath.write_bytes(_zip_with([("a.mid", b"x"), (_symlink_info("link.mid"), b"/etc/passwd")]))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(zpath, tmp_path / "out", max_bytes=10**6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zip"]


def test_extract_refuses_archive_declaring_more_than_max_bytes(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.mid", b"\0" * 600_000)  # compresses to ~600 bytes
        zf.writestr("b.mid", b"\0" * 600_000)
    zpath = tmp_path / "bomb.zip"
    zpath.write_bytes(buf.getvalue())
    assert zpath.stat().st_size < 10_000
    with pytest.raises(UnsafeArchiveError, match="max_bytes"):
        safe_extract(zpath, tmp_path / "out", max_bytes=1_000_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]
    # the same archive under a cap it fits is fine
    assert len(safe_extract(zpath, tmp_path / "out", max_bytes=1_200_000)) == 2


def test_extract_counts_written_bytes_when_headers_lie(tmp_path, monkeypatch):
    zpath = tmp_path / "liar.zip"
    zpath.write_bytes(_zip_with([("a.mid", b"tiny"), ("b.mid", b"tiny")]))
    # Make the archive stream far more than its headers declare (what a hostile zip would do).
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(b"\1" * 50_000))
    with pytest.raises(UnsafeArchiveError, match="declared"):
        safe_extract(zpath, tmp_path / "out", max_bytes=10**6)  # under the cap, but over its header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liar.zip"]
    with pytest.raises(UnsafeArchiveError):
        safe_extract(zpath, tmp_path / "out", max_bytes=60_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liar.zip"]


def test_extract_survives_patched_size_fields(tmp_path):
    """Central-directory sizes rewritten to 1 byte: zipfile stops at the declared size, the CRC fails."""
    data = bytearray(_zip_with([("a.mid", b"\2" * 50_000)]))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 1)  # uncompressed size in the central directory
    zpath = tmp_path / "patched.zip"
    zpath.write_bytes(bytes(data))
    with pytest.raises((UnsafeArchiveError, zipfile.BadZipFile)):
        safe_extract(zpath, tmp_path / "out", max_bytes=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patched.zip"]


def test_extract_refuses_non_empty_foreign_dest(tmp_path, maestro_zip):
    zpath = tmp_path / "m.zip"
    zpath.write_bytes(maestro_zip)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        safe_extract(zpath, dest, max_bytes=10**7)
    assert (dest / "mine.txt").read_text() == "user data"
