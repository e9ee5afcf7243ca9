"""Where MIDI comes from: MAESTRO, a folder / fsspec URI / glob, or the built-in generated corpus.

:func:`list_files` (and :func:`maestro_source`, :func:`generated_source`) turn a source string into a
listing of files, each MIDI file paired with its recording when a sound file of the same stem lies next
to it; :func:`fingerprint` hashes their bytes. Both are plain functions; ``tasks.steps.prefect_tasks`` wraps them in
Prefect tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import fsspec

from storage_schemas.datasets import RemoteArchive, get_dataset
from tasks.storage.files import atomic_write
from tasks.storage.recordings import AUDIO_SUFFIXES, audio_preference, is_audio_path
from tasks.storage.settings import Settings, get_settings

MIDI_SUFFIXES = (".mid", ".midi")
METADATA_PATTERN = re.compile(r"maestro-v[\d.]+.*\.(csv|json)$", re.IGNORECASE)
GENERATED_SEED = 0
# source strings naming a declared MAESTRO archive: the MIDI-only one, and the full one with audio
MAESTRO_SPECS = {"maestro": "maestro-v3.0.0", "maestro-v3.0.0": "maestro-v3.0.0",
                 "maestro-full": "maestro-v3.0.0-full", "maestro-v3.0.0-full": "maestro-v3.0.0-full"}


@dataclass(frozen=True)
class SourceFile:
    """One input file: where it is read from, its path inside the source, and its content hash.

    ``audio_uri`` names the piece's recording (a sound file of the same stem beside it), with its size
    and sha256; both are None when the recording could not be read while fingerprinting.
    """

    uri: str
    relpath: str
    size: int
    sha256: str
    audio_uri: str | None = None
    audio_size: int | None = None
    audio_sha256: str | None = None


@dataclass(frozen=True)
class ResolvedSource:
    """A listing of MIDI files (``(uri, relpath)``) plus any MAESTRO metadata found beside them.

    ``audio`` maps the relpath of every MIDI file that has a recording next to it (same folder, same
    stem, a suffix of :data:`tasks.storage.recordings.AUDIO_SUFFIXES`) to the recording's URI.
    """

    spec: str
    kind: str  # "maestro" | "generated" | "files"
    default_name: str
    files: list[tuple[str, str]]
    metadata_uri: str | None = None
    audio: dict[str, str] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "corpus"


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def list_files(spec: str, settings: Settings | None = None) -> ResolvedSource:
    """List the MIDI files of a local folder, an fsspec URI (``s3://bucket/prefix``) or a glob."""
    settings = settings or get_settings()
    opts = settings.storage_options(spec)
    fs, path = fsspec.core.url_to_fs(spec, **opts)
    protocol = spec.split("://", 1)[0] + "://" if "://" in spec else ""
    walked = False  # True when every file of the folders concerned was listed (sound files included)
    if _is_glob(spec):
        found = fs.glob(path)
        root = path.split("*", 1)[0].rsplit("/", 1)[0]
    elif fs.isdir(path):
        found = fs.find(path)
        root = path.rstrip("/")
        walked = True
    elif fs.exists(path):
        found = [path]
        root = path.rsplit("/", 1)[0]
    else:
        raise FileNotFoundError(f"source {spec!r} does not exist")
    files, metadata, midi_paths = [], [], []
    for p in sorted(found):
        rel = p[len(root):].lstrip("/") if p.startswith(root) else PurePosixPath(p).name
        uri = protocol + p if protocol and not p.startswith(protocol) else p
        if p.lower().endswith(MIDI_SUFFIXES):
            files.append((uri, rel))
            midi_paths.append(p)
        elif METADATA_PATTERN.search(PurePosixPath(p).name):
            metadata.append((rel.count("/"), uri))
    sounds = [p for p in found if is_audio_path(p)]
    if not walked:  # a glob or one file: the recordings may not match the pattern, look beside the MIDI
        for folder in sorted({p.rsplit("/", 1)[0] for p in midi_paths if "/" in p}):
            try:
                sounds += [q for q in fs.ls(folder, detail=False) if is_audio_path(q)]
            except OSError:
                pass
    pairs = pair_recordings(midi_paths, sounds)
    audio = {rel: (protocol + pairs[p] if protocol and not pairs[p].startswith(protocol) else pairs[p])
             for p, (_, rel) in zip(midi_paths, files) if p in pairs}
    name = _slug(PurePosixPath(root.rstrip("/")).name or "corpus")
    meta_uri = sorted(metadata)[0][1] if metadata else None  # the shallowest metadata file
    return ResolvedSource(spec=spec, kind="files", default_name=name, files=files, metadata_uri=meta_uri,
                          audio=audio)


def _stem_key(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name.rsplit(".", 1)[0] if "." in name else name


def pair_recordings(midi_paths: list[str], sound_paths: list[str]) -> dict[str, str]:
    """Each MIDI path's recording: the sound file in the same folder with the same stem.

    ``a/b.midi`` pairs with ``a/b.wav`` (or ``.flac``, ``.ogg``, …; the stem is compared exactly, the
    suffix in any case). When one stem has several, the first suffix of :data:`AUDIO_SUFFIXES` wins.
    """
    best: dict[tuple[str, str], str] = {}
    for q in sorted(set(sound_paths)):
        key = _stem_key(q)
        if key not in best or audio_preference(q) < audio_preference(best[key]):
            best[key] = q
    return {p: best[_stem_key(p)] for p in midi_paths if _stem_key(p) in best}


def generate_corpus(dest_dir: str | os.PathLike, n: int, seed: int = 0, minutes: float | None = None) -> list[Path]:
    """Write pieces 0..n-1 of the built-in corpus with ``seed`` as ``gen-s{seed}-{i:05d}.mid`` under ``dest_dir``.

    Each file is written whole or not at all (:func:`tasks.storage.files.atomic_write`); a file already
    holding identical bytes is left untouched (its mtime stays, so its fingerprint is not computed again).
    ``minutes`` per piece defaults to :data:`tasks.kernels.corpus.DEFAULT_MINUTES`.

    Returns
    -------
    list[pathlib.Path]
        The n paths, sorted.
    """
    from tasks.kernels.corpus import DEFAULT_MINUTES, corpus_files

    files = corpus_files(n, seed, DEFAULT_MINUTES if minutes is None else minutes)  # checks the arguments
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files:
        path = dest / name
        paths.append(path)
        if not _same_bytes(path, data):
            atomic_write(path, data)
    return sorted(paths)


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def generated_source(spec: str, settings: Settings | None = None) -> ResolvedSource:
    """Materialise the built-in generated corpus in the local cache and list it."""
    from tasks.kernels.corpus import parse_generated_spec

    settings = settings or get_settings()
    n, minutes = parse_generated_spec(spec)
    tag = f"generated-{n}" + ("" if minutes == 1.0 else f"-{minutes:g}min")
    dest = Path(settings.cache_dir) / "sources" / f"{tag}-s{GENERATED_SEED}"
    paths = generate_corpus(dest, n=n, seed=GENERATED_SEED, minutes=minutes)
    files = [(str(p), p.name) for p in paths]
    return ResolvedSource(spec=spec, kind="generated", default_name=tag, files=files)


def maestro_source(archive: RemoteArchive, settings: Settings | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ResolvedSource:
    """Download (resumable, verified) and safely extract a MAESTRO archive, then list it.

    The recordings of the full archive (``.wav`` next to each ``.midi``) are extracted and paired too.
    """
    from tasks.storage.fetch import download, find_maestro_metadata, safe_extract

    settings = settings or get_settings()
    cache = Path(settings.cache_dir)
    zip_path = download(archive, cache / "downloads", progress=progress)
    dest = cache / "sources" / archive.name
    cap = max(settings.download_max_bytes, archive.max_unpacked_bytes or 0)
    safe_extract(zip_path, dest, max_bytes=cap, suffixes=(".mid", ".midi", ".csv", ".json") + AUDIO_SUFFIXES)
    listing = list_files(str(dest), settings)
    meta = find_maestro_metadata(dest)
    return ResolvedSource(spec=archive.name, kind="maestro", default_name=archive.name, files=listing.files,
                          metadata_uri=str(meta) if meta else listing.metadata_uri, audio=listing.audio)


def maestro_archive(settings: Settings | None = None, name: str = "maestro-v3.0.0", **overrides) -> RemoteArchive:
    """A declared MAESTRO archive (``name``), with a URL from settings and any explicit overrides.

    ``maestro-v3.0.0`` is the MIDI-only archive (``MIDIPIX_MAESTRO_URL`` points at a mirror),
    ``maestro-v3.0.0-full`` the one with the recordings (``MIDIPIX_MAESTRO_FULL_URL``).
    """
    settings = settings or get_settings()
    archive = get_dataset(name)
    mirror = settings.maestro_full_url if name == "maestro-v3.0.0-full" else settings.maestro_url
    if mirror:
        archive = archive.with_overrides(url=mirror)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return archive.with_overrides(**clean) if clean else archive


def maestro_spec(spec: str) -> str | None:
    """The declared archive a source string names (``maestro``, ``maestro-full``, …), else None."""
    if spec in MAESTRO_SPECS:
        return MAESTRO_SPECS[spec]
    if spec.startswith("maestro-v"):  # a declared name, or an unknown one that get_dataset will list
        return spec
    return None


def read_file_bytes(uri: str) -> bytes:
    """The bytes of one source file (local path or fsspec URI; credentials from settings)."""
    if "://" not in uri:
        return Path(uri).read_bytes()
    with fsspec.open(uri, "rb", **get_settings().storage_options(uri)) as fh:
        return fh.read()


def _fingerprint_cache_path() -> Path:
    return Path(get_settings().cache_dir) / "fingerprints.json"


def _load_fingerprint_cache() -> dict:
    try:
        return json.loads(_fingerprint_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_fingerprint_cache(cache: dict) -> None:
    atomic_write(_fingerprint_cache_path(), json.dumps(cache).encode())


def fingerprint(source: ResolvedSource, workers: int = 4) -> tuple[list[SourceFile], list[dict]]:
    """Size and sha256 of every listed file. Unreadable files come back as reject rows.

    Local files whose size and modification time (ns) are unchanged since they were last hashed on
    this machine take their hash from a small cache in ``$MIDIPIX_CACHE_DIR`` (as make does); remote
    files are always read.
    """
    cache = _load_fingerprint_cache()
    fresh: dict[str, list] = {}

    def one(item):
        uri, rel = item
        try:
            if "://" not in uri:
                st = os.stat(uri)
                key = os.path.abspath(uri)
                hit = cache.get(key)
                if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                    return SourceFile(uri=uri, relpath=rel, size=st.st_size, sha256=hit[2]), None
            data = read_file_bytes(uri)
        except OSError as e:
            return None, {"source": uri, "relpath": rel, "sha256": None, "error_kind": "io_error",
                          "message": f"could not read the file: {e}"}
        sha = hashlib.sha256(data).hexdigest()
        if "://" not in uri:
            fresh[os.path.abspath(uri)] = [st.st_size, st.st_mtime_ns, sha]
        return SourceFile(uri=uri, relpath=rel, size=len(data), sha256=sha), None

    def cached(item):
        uri, rel = item
        if "://" in uri:
            return None
        try:
            st = os.stat(uri)
        except OSError:
            return None
        hit = cache.get(os.path.abspath(uri))
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return SourceFile(uri=uri, relpath=rel, size=st.st_size, sha256=hit[2])
        return None

    # cache hits cost a stat each: no thread pool for them, only for the files that must be read
    known = [cached(item) for item in source.files] if cache else [None] * len(source.files)
    todo = [item for item, hit in zip(source.files, known) if hit is None]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        read = iter(list(pool.map(one, todo)))
    files, errors = [], []
    for hit in known:
        f, err = (hit, None) if hit is not None else next(read)
        if f is not None:
            files.append(f)
        else:
            errors.append(err)
    if source.audio:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            ids = list(pool.map(lambda f: _audio_identity(source.audio[f.relpath], cache, fresh)
                                if f.relpath in source.audio else None, files))
        files = [f if ident is None else replace(f, audio_uri=source.audio[f.relpath], audio_size=ident[0],
                                                  audio_sha256=ident[1])
                 for f, ident in zip(files, ids)]
    if fresh:
        cache.update(fresh)
        _save_fingerprint_cache(cache)
    return files, errors


def _stream_sha256(fh, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while data := fh.read(chunk):
        h.update(data)
    return h.hexdigest()


def _audio_identity(uri: str, cache: dict, fresh: dict) -> tuple[int | None, str | None]:
    """``(size, sha256)`` of a recording, streamed (recordings are large), from the make-style cache when
    unchanged: local files by size and modification time, remote ones by size and ETag / modification
    time. A file that cannot be read gives ``(None, None)``: the image build then records why."""
    try:
        if "://" not in uri:
            st = os.stat(uri)
            key, stamp = os.path.abspath(uri), st.st_mtime_ns
            size = st.st_size
        else:
            fs, path = fsspec.core.url_to_fs(uri, **get_settings().storage_options(uri))
            info = fs.info(path)
            key, size = uri, int(info["size"])
            stamp = str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or "") or None
        hit = cache.get(key)
        if stamp is not None and hit is not None and hit[0] == size and hit[1] == stamp:
            return size, hit[2]
        if "://" not in uri:
            with open(uri, "rb") as fh:
                sha = _stream_sha256(fh)
        else:
            with fs.open(path, "rb") as fh:
                sha = _stream_sha256(fh)
    except OSError:
        return None, None
    if stamp is not None:
        fresh[key] = [size, stamp, sha]
    return size, sha


def subset_corpus(source_dir: str | os.PathLike, pieces: int, dest_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A folder of symbolic links to ``pieces`` performances of a local MAESTRO copy, with its metadata.

    The pieces are a seeded choice made split by split in the proportions of the published split (at least
    one of each split that has any), so that a table set built from the folder keeps MAESTRO's split. The
    folder is written beside itself and renamed into place: it is whole or absent. Returns its path.
    """
    import csv
    import random

    src = Path(source_dir).resolve()
    metas = sorted(src.glob("maestro-v*.csv"))
    if not metas:
        raise FileNotFoundError(f"{src} holds no MAESTRO metadata (maestro-v*.csv) to take a subset by")
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    with open(metas[0], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (src / r["midi_filename"]).is_file()]
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    rng = random.Random(seed)
    chosen = []
    for split, group in sorted(by_split.items()):
        take = max(1, round(pieces * len(group) / len(rows)))
        chosen += rng.sample(group, min(take, len(group)))
    dest = Path(dest_dir)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    for r in chosen:
        link = tmp / r["midi_filename"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(src / r["midi_filename"])
    with open(tmp / metas[0].name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    try:
        tmp.rename(dest)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
