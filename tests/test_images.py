"""Image datasets: rendering a table set into shards, augmentation, incremental rebuilds, crash safety.

Most tests run against both stores (a local folder and a loopback S3 server). No Prefect here.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_schemas import shards as SH
from storage_schemas.encodings import RollConfig
from tasks.kernels import rolls as E
from tasks.steps import render as R
from tasks.steps import tables as T
from tasks.kernels.augment import PIANO_HI, PIANO_LO, AugmentConfig, noise_seed
from tasks.steps.loader import read_dataset_manifest
from tasks.storage.sources import fingerprint, generate_corpus, list_files, read_file_bytes
from tasks.storage.store import LocalStore, S3Store, Store

TABLES = "c"
HILBERT = R.HilbertConfig(order=6, sample_rate=8000)
DECODERS = {"enc1": E.from_enc1, "enc2": E.from_enc2, "enc3": E.from_enc3}
ALL_TRAIN = T.SplitConfig(mode="random", ratios=(1.0, 0.0, 0.0))


# -- helpers ------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[T.SourceFile]:
    files, errors = fingerprint(list_files(str(folder)))
    assert errors == []
    return files


def publish_tables(store: Store, folder: Path, split: T.SplitConfig = T.SplitConfig()) -> dict:
    """Build the table set of ``folder``, write it to ``store`` as ``c`` and publish it; its manifest."""
    files = _files(folder)
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, split)
    version = T.version_id(files, {"split": split.model_dump(mode="json")})
    T.write_table_set(store, TABLES, version, result, {})
    T.publish(store, TABLES, version)
    return T.read_manifest(store, TABLES, version)


def build(store: Store, tables: dict, encoding: str, **kw) -> tuple[dict, R.RenderStats]:
    return R.build_image_dataset(store, TABLES, tables, HILBERT if encoding == "hilbert" else encoding, **kw)


def pieces_and_notes(store: Store, tables: dict) -> tuple[dict[int, dict], dict[int, dict[str, np.ndarray]]]:
    """Pieces by id (with their split) and each piece's note columns, in table order."""
    pieces = {}
    for split in ("train", "validation", "test"):
        for rec in T.table_files(tables, "pieces", split):
            for row in pq.read_table(io.BytesIO(store.read_bytes(rec["key"]))).to_pylist():
                pieces[row["piece_id"]] = {**row, "split": split}
    notes = T.load_tables(store, tables, ["notes"])["notes"]
    pid = notes["piece_id"].to_numpy()
    cols = {c: notes[c].to_numpy() for c in R.NOTE_COLUMNS[1:]}
    by_piece = {p: {c: v[pid == p] for c, v in cols.items()} for p in pieces}
    return pieces, by_piece


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_complete(store: Store, name: str, version: str | None = None) -> dict:
    """The published version of ``name`` (or ``version``) is whole: manifest hash, every shard, the index."""
    manifest = read_dataset_manifest(store, name)  # checks the manifest against the pointer's hash
    if version is not None:
        assert manifest["version"] == version
    for s in manifest["shards"]:
        data = store.read_bytes(s["key"])
        assert s["key"] == SH.shard_key(name, s["sha256"])
        assert sha256(data) == s["sha256"] and len(data) == s["bytes"]
    images = R.read_images_table(store, name, manifest["version"])
    assert images.num_rows == manifest["images"] == sum(s["rows"] for s in manifest["shards"])
    assert set(images["shard"].to_pylist()) <= {s["sha256"] for s in manifest["shards"]}
    return manifest


def published_version(store: Store, name: str) -> str | None:
    raw, _ = store.read_pointer(SH.pointer_key(name))
    return None if raw is None else json.loads(raw)["version"]



def decoded_onsets(image: np.ndarray, window_start: int, cfg: RollConfig) -> set[tuple[int, int]]:
    """(pitch, piece column) of every note onset an image shows."""
    g = DECODERS[cfg.encoding](image, window_start, cfg)
    return {(int(p), int(c)) for p, c, on in zip(g.pitch, g.start_col, g.has_onset) if on}


def expected_onsets(notes: dict[str, np.ndarray], window_start: int, cfg: RollConfig, k: int = 0
                    ) -> set[tuple[int, int]]:
    """(pitch + k, column) of the notes whose onset column lies in the window starting at ``window_start``."""
    start, _ = E.note_columns(notes["onset_s"], notes["offset_s"], cfg)
    inside = (start >= window_start) & (start < window_start + cfg.columns)
    return {(int(p) + k, int(c)) for p, c in zip(notes["pitch"][inside], start[inside])}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(folder, n=6, seed=3, minutes=0.3)
    return folder


# -- a build, checked from the outside ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3", "hilbert"])
def test_build_writes_verified_shards_and_an_exact_image_index(store_uri, corpus, encoding):
    store = Store(store_uri)
    tables = publish_tables(store, corpus)
    manifest, stats = build(store, tables, encoding)
    name = SH.dataset_name(TABLES, encoding)
    version = manifest["version"]
    hilbert = encoding == "hilbert"
    assert manifest["name"] == name and manifest["encoding"] == encoding
    assert json.loads(store.read_bytes(SH.manifest_key(name, version))) == manifest
    assert published_version(store, name) is None  # built, not published
    assert R.publish_dataset(store, name, version) is True
    assert R.publish_dataset(store, name, version) is False
    assert_complete(store, name, version)
    assert stats.rendered_shards == len(manifest["shards"]) and stats.reused_shards == 0
    assert stats.images == manifest["images"] > 0

    shape = tuple(manifest["shape"])
    cfg = None if hilbert else RollConfig(encoding=encoding)
    assert shape == ((1, 64, 64) if hilbert else cfg.shape)
    value_type = pa.float16() if hilbert else pa.uint8()
    images = pq.read_table(io.BytesIO(store.read_bytes(SH.images_key(name, version))))  # plain pyarrow
    assert images.schema.remove_metadata().equals(SH.IMAGES.remove_metadata())
    assert images.num_rows == manifest["images"]
    assert set(images["encoding"].to_pylist()) == {encoding}

    pieces, notes = pieces_and_notes(store, tables)
    audio_checked = 0
    for rec in manifest["shards"]:
        data = store.read_bytes(rec["key"])
        assert sha256(data) == rec["sha256"] and len(data) == rec["bytes"]
        reader = pa.ipc.open_file(pa.BufferReader(data))  # no midipix code involved
        image_type = reader.schema.field("image").type
        assert isinstance(image_type, pa.FixedShapeTensorType)
        assert image_type.value_type == value_type and tuple(image_type.shape) == shape
        assert all(reader.get_batch(i).num_rows <= SH.BATCH_ROWS for i in range(reader.num_record_batches))
        shard = reader.read_all()
        assert shard.num_rows == rec["rows"]
        pixels = shard["image"].combine_chunks().to_numpy_ndarray()
        assert pixels.shape == (rec["rows"], *shape) and pixels.dtype == value_type.to_pandas_dtype()

        # the index points at exactly this shard's rows, in order, with the shard's own columns
        mine = images.filter(pa.compute.equal(images["shard"], rec["sha256"])).sort_by("row")
        assert mine["row"].to_pylist() == list(range(rec["rows"]))
        for col in SH.SHARD_COLUMNS.names:
            assert mine[col].to_pylist() == shard[col].to_pylist(), col
        assert set(mine["split"].to_pylist()) <= {rec["split"]}
        assert mine["transposition"].to_pylist() == [0] * rec["rows"]
        assert mine["noise_seed"].to_pylist() == [-1] * rec["rows"]

        for i, row in enumerate(mine.to_pylist()):
            piece = pieces[row["piece_id"]]
            assert piece["split"] == rec["split"]
            if hilbert:
                block = 4 ** HILBERT.order
                assert row["window_start_s"] == pytest.approx(row["window_start"] * block / HILBERT.sample_rate)
                if i < 2:  # the row's pixels are the piece's audio at that block
                    from tasks.kernels.hilbert import images_to_audio
                    from tasks.kernels.synth import render

                    n = notes[row["piece_id"]]
                    audio = render(n["pitch"], n["velocity"], n["onset_s"], n["offset_pedal_s"],
                                   sample_rate=HILBERT.sample_rate, timbre=HILBERT.timbre)
                    want = np.zeros(block, np.float32)
                    part = audio[row["window_start"] * block:(row["window_start"] + 1) * block]
                    want[:part.shape[0]] = part
                    got = images_to_audio(pixels[i][:, :, :].astype(np.float32), order=HILBERT.order)
                    np.testing.assert_allclose(got, want, atol=2e-3)
                    audio_checked += 1
            else:
                assert row["window_start"] % cfg.hop_columns == 0
                assert row["window_start_s"] == pytest.approx(row["window_start"] * cfg.resolution_s)
                got = decoded_onsets(pixels[i], row["window_start"], cfg)
                assert got and got == expected_onsets(notes[row["piece_id"]], row["window_start"], cfg)
    if hilbert:
        assert audio_checked > 0

    # splits: counts add up, every piece is in exactly one split and has images there
    by_split = {}
    for rec in manifest["shards"]:
        by_split[rec["split"]] = by_split.get(rec["split"], 0) + rec["rows"]
    for split, n in by_split.items():
        assert images.filter(pa.compute.equal(images["split"], split)).num_rows == n
    assert sum(by_split.values()) == images.num_rows
    splits_of = {}
    for pid, split in zip(images["piece_id"].to_pylist(), images["split"].to_pylist()):
        splits_of.setdefault(pid, set()).add(split)
    assert set(splits_of) == set(pieces)
    assert all(splits_of[p] == {pieces[p]["split"]} for p in pieces)
    assert sorted(pieces[p]["split"] for p in pieces).count("train") >= 2  # the corpus has a real split


# -- augmentation -------------------------------------------------------------------------------------


def _variants(images: pa.Table) -> dict[int, dict[tuple[int, int], list[int]]]:
    """piece -> (transposition, noise seed) -> window starts."""
    out: dict[int, dict[tuple[int, int], list[int]]] = {}
    for r in images.select(["piece_id", "transposition", "noise_seed", "window_start"]).to_pylist():
        out.setdefault(r["piece_id"], {}).setdefault((r["transposition"], r["noise_seed"]), []).append(
            r["window_start"])
    return {p: {v: sorted(w) for v, w in vs.items()} for p, vs in out.items()}


def test_augmentation_renders_train_variants_only_and_records_them(store_uri, corpus):
    store = Store(store_uri)
    tables = publish_tables(store, corpus)
    augment = AugmentConfig(transpositions=(-2, 2), noise_fraction=0.2, seed=7)
    manifest, stats = build(store, tables, "enc2", augment=augment)
    name = SH.dataset_name(TABLES, "enc2")
    assert manifest["augment"] == augment.to_dict()
    images = R.read_images_table(store, name, manifest["version"])
    assert images.num_rows == manifest["images"] == stats.images
    pieces, notes = pieces_and_notes(store, tables)
    variants = _variants(images)
    cfg = RollConfig(encoding="enc2")

    expected_skips = 0
    for pid, piece in pieces.items():
        got = variants[pid]
        if piece["split"] != "train":
            assert set(got) == {(0, -1)}
            continue
        # the original and each transposition that keeps every note on the keyboard, each plain and noisy
        lo, hi = int(notes[pid]["pitch"].min()), int(notes[pid]["pitch"].max())
        fits = [k for k in (0, -2, 2) if lo + k >= PIANO_LO and hi + k <= PIANO_HI]
        expected_skips += 2 * (3 - len(fits))
        want = {(k, s) for k in fits for s in (-1, noise_seed(augment, k, pid))}
        assert set(got) == want
        assert len({s for _, s in want if s != -1}) == len(fits)  # every noisy variant has its own seed
        for k in fits:
            assert got[(k, -1)] == got[(0, -1)]  # same windows as the original
    assert stats.skipped_variants == expected_skips
    n_train = sum(p["split"] == "train" for p in pieces.values())
    assert n_train >= 2

    # pixels: a transposed image is the original moved by k rows; a noisy one differs from its plain twin
    table = images.to_pylist()
    shards = {s["sha256"]: s for s in manifest["shards"]}
    pixels = {sha: store.read_bytes(s["key"]) for sha, s in shards.items()}
    from tasks.storage.shards import shard_images

    arrays = {sha: shard_images(data) for sha, data in pixels.items()}
    image_of = {(r["piece_id"], r["transposition"], r["noise_seed"], r["window_start"]): arrays[r["shard"]][r["row"]]
                for r in table}
    noisy_differs = 0
    for (pid, k, seed, ws), img in image_of.items():
        if seed == -1:
            assert decoded_onsets(img, ws, cfg) == expected_onsets(notes[pid], ws, cfg, k)
        else:
            noisy_differs += not np.array_equal(img, image_of[(pid, k, -1, ws)])
    assert noisy_differs > 0


def test_a_transposition_off_the_keyboard_is_skipped_and_counted(tmp_path, corpus):
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, corpus)
    augment = AugmentConfig(transpositions=(60,), noise_fraction=0.2)
    manifest, stats = build(store, tables, "enc3", augment=augment)
    images = R.read_images_table(store, SH.dataset_name(TABLES, "enc3"), manifest["version"])
    pieces, notes = pieces_and_notes(store, tables)
    train = [p for p, piece in pieces.items() if piece["split"] == "train"]
    assert all(notes[p]["pitch"].max() + 60 > PIANO_HI for p in train)  # +60 pushes notes off for every piece
    assert stats.skipped_variants == 2 * len(train)  # plain and noisy +60 of every train piece
    assert 60 not in set(images["transposition"].to_pylist())
    for p, got in _variants(images).items():
        want = {(0, -1), (0, noise_seed(augment, 0, p))} if p in train else {(0, -1)}
        assert set(got) == want


# -- incremental rebuilds -----------------------------------------------------------------------------


def _pieces_per_shard(images: pa.Table) -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    for sha, pid in zip(images["shard"].to_pylist(), images["piece_id"].to_pylist()):
        out.setdefault(sha, set()).add(pid)
    return {k: frozenset(v) for k, v in out.items()}


def test_adding_a_piece_rerenders_only_its_shard_and_equals_a_full_build(store_uri, tmp_path):
    # every piece in train, so the new piece cannot move an old one to another split
    folder = tmp_path / "corpus"
    generate_corpus(folder, n=24, seed=5, minutes=0.1)
    store = Store(store_uri)
    name = SH.dataset_name(TABLES, "enc2")
    old, _ = build(store, publish_tables(store, folder, ALL_TRAIN), "enc2")
    R.publish_dataset(store, name, old["version"])
    old_images = R.read_images_table(store, name, old["version"])
    assert len(old["shards"]) >= 3  # the test means something only with several shards

    generate_corpus(folder, n=25, seed=5, minutes=0.1)  # one new piece
    tables = publish_tables(store, folder, ALL_TRAIN)
    new_pid = next(p for p, piece in pieces_and_notes(store, tables)[0].items()
                   if piece["relpath"] == "gen-s5-00024.mid")
    new, stats = build(store, tables, "enc2", previous=old, previous_images=old_images)
    assert new["version"] != old["version"]
    new_images = R.read_images_table(store, name, new["version"])

    old_sets = set(_pieces_per_shard(old_images).values())
    per_shard = _pieces_per_shard(new_images)
    rendered = [s for s in new["shards"] if per_shard[s["sha256"]] not in old_sets]
    # the new piece's shard, plus the next one if the new piece ends a shard (a content-defined boundary)
    assert any(new_pid in per_shard[s["sha256"]] for s in rendered)
    assert 1 <= len(rendered) <= 2
    assert stats.rendered_shards == len(rendered), (stats, len(new["shards"]))
    assert stats.reused_shards == len(new["shards"]) - len(rendered) >= 1
    assert stats.rendered_pieces == sum(s["pieces"] for s in rendered)
    old_by_sha = {s["sha256"]: s for s in old["shards"]}
    for s in new["shards"]:
        if s not in rendered:  # unchanged shards keep their bytes, key and record
            assert old_by_sha[s["sha256"]] == s
    R.publish_dataset(store, name, new["version"])
    assert_complete(store, name, new["version"])

    # the same table set rendered from scratch in an empty store gives the same dataset
    scratch = Store(store_uri.rstrip("/") + "-scratch")
    full, full_stats = build(scratch, publish_tables(scratch, folder, ALL_TRAIN), "enc2")
    assert full_stats.reused_shards == 0
    assert full["version"] == new["version"]
    assert full["shards"] == new["shards"]
    assert R.read_images_table(scratch, name, full["version"]).equals(new_images)
    assert full == new


def test_notes_changed_by_a_new_reader_are_rendered_again(tmp_path, corpus):
    files = _files(corpus)
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, T.SplitConfig())
    store = Store(str(tmp_path / "store"))
    T.write_table_set(store, TABLES, "v1-reader-a", result, {})
    old, _ = build(store, T.read_manifest(store, TABLES, "v1-reader-a"), "enc2")
    old_images = R.read_images_table(store, SH.dataset_name(TABLES, "enc2"), old["version"])
    # the same files read by a changed reader (tables.code_version() differs): here, other velocities
    for split, notes in result.tables["notes"].items():
        i = notes.schema.get_field_index("velocity")
        v = pa.array(notes["velocity"].to_numpy() // 2 + 1, pa.uint8())
        result.tables["notes"][split] = notes.set_column(i, notes.schema.field(i), v)
    T.write_table_set(store, TABLES, "v1-reader-b", result, {})
    tables_b = T.read_manifest(store, TABLES, "v1-reader-b")
    scratch = Store(str(tmp_path / "scratch"))
    T.write_table_set(scratch, TABLES, "v1-reader-b", result, {})
    full, _ = build(scratch, tables_b, "enc2")
    new, stats = build(store, tables_b, "enc2", previous=old, previous_images=old_images)
    assert [s["sha256"] for s in full["shards"]] != [s["sha256"] for s in old["shards"]]  # the pixels changed
    assert new["shards"] == full["shards"], stats


# -- crash safety -------------------------------------------------------------------------------------


class InjectedFault(Exception):
    """A failure the test made happen."""


class StoreFaults:
    """Counts writes through either store backend; once armed, write ``fail_at`` and every later one fail.

    A failing write raises :class:`InjectedFault` before it happens, or with ``after=True`` after it
    happened (the write landed but its caller never heard back). Local ``swap_pointer`` writes through
    ``write_bytes``: both calls count.
    """

    error, match = InjectedFault, r"^write \d+"
    WRITES = ("put_if_absent", "write_bytes", "swap_pointer")

    def __init__(self, monkeypatch):
        self.calls, self.fail_at, self.after, self.keys = 0, None, False, []
        self._lock = threading.Lock()
        for backend in (LocalStore, S3Store):
            for name in self.WRITES:
                monkeypatch.setattr(backend, name, self._wrap(getattr(backend, name)))

    def arm(self, fail_at: int | None, after: bool = False) -> None:
        with self._lock:
            self.calls, self.fail_at, self.after, self.keys = 0, fail_at, after, []

    def _wrap(self, fn):
        def write(store, key, *args, **kwargs):
            with self._lock:
                i = self.calls
                self.calls += 1
                self.keys.append(key)
                fail = self.fail_at is not None and i >= self.fail_at
            if fail and not self.after:
                raise InjectedFault(f"write {i} ({fn.__name__})")
            out = fn(store, key, *args, **kwargs)
            if fail:
                raise InjectedFault(f"write {i} ({fn.__name__}) landed, its reply was lost")
            return out

        return write


class ServerFaults:
    """WSGI middleware in front of moto: counts write requests (PUT, POST, DELETE); once armed, request
    ``fail_at`` and every later write get ``500 InternalError`` — refused before moto sees them, or with
    ``after=True`` carried out by moto and the reply replaced by the error."""

    error, match = OSError, "injected fault"  # s3fs turns botocore's ClientError into OSError

    BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b"<Message>injected fault</Message><RequestId>fault</RequestId></Error>")

    def __init__(self, app):
        self.app = app
        self.calls, self.fail_at, self.after, self.keys = 0, None, False, []
        self._lock = threading.Lock()

    def arm(self, fail_at: int | None, after: bool = False) -> None:
        with self._lock:
            self.calls, self.fail_at, self.after, self.keys = 0, fail_at, after, []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] not in ("PUT", "POST", "DELETE"):
            return self.app(environ, start_response)
        with self._lock:
            i = self.calls
            self.calls += 1
            self.keys.append(environ["PATH_INFO"])
            fail = self.fail_at is not None and i >= self.fail_at
        if not fail:
            return self.app(environ, start_response)
        if self.after:
            result = self.app(environ, lambda *a, **k: (lambda data: None))
            try:
                for _ in result:
                    pass
            finally:
                getattr(result, "close", lambda: None)()
        else:  # read the body (and no further: the connection stays usable)
            from werkzeug.wsgi import get_input_stream

            get_input_stream(environ).read()
        start_response("500 Internal Server Error", [("Content-Type", "application/xml"),
                                                     ("Content-Length", str(len(self.BODY))),
                                                     ("Connection", "close")])
        return [self.BODY]


@pytest.fixture(scope="module")
def faulty_s3(s3_endpoint):
    """A second endpoint onto the session's moto backend, behind :class:`ServerFaults`."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    switch = ServerFaults(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, switch, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield switch, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def _build_and_publish(store: Store, tables: dict, encoding: str, augment: AugmentConfig) -> str:
    manifest, _ = build(store, tables, encoding, augment=augment)
    R.publish_dataset(store, SH.dataset_name(TABLES, encoding), manifest["version"])
    return manifest["version"]


def _crash_at_every_write(store: Store, tables: dict, faults, after: bool) -> int:
    """Fail a build-and-publish at each of its writes in turn; check what readers see after each crash."""
    faults.arm(None)
    _build_and_publish(store, tables, "enc3", AugmentConfig())
    n_writes = faults.calls  # writes of one build and publish: shards, index, manifest, pointer
    assert n_writes >= 6
    pointer_write = next(i for i, k in enumerate(faults.keys) if k.endswith("/CURRENT"))
    assert pointer_write >= n_writes - 2  # everything else is written before the pointer
    name = SH.dataset_name(TABLES, "enc2")

    def attempt(fail_at: int, augment: AugmentConfig, before: str | None) -> str | None:
        version = R.dataset_version(tables["version"], R.image_config("enc2"), augment)
        faults.arm(fail_at, after)
        with pytest.raises(faults.error, match=faults.match):
            _build_and_publish(store, tables, "enc2", augment)
        faults.arm(None)
        current = published_version(store, name)
        # the pointer moves only if its own write landed (a lost reply), and then the new version is whole
        assert current == before or (after and fail_at >= pointer_write and current == version), fail_at
        if current is not None:
            assert_complete(store, name, current)
        else:
            with pytest.raises(FileNotFoundError):
                read_dataset_manifest(store, name)
        return current

    # nothing published yet: failed attempts (leaving their debris behind) publish nothing
    first = AugmentConfig(transpositions=(2,), seed=0)
    for fail_at in range(n_writes):
        if attempt(fail_at, first, None) is not None:
            break  # the pointer write landed; trying the same version again would write nothing
    previous = _build_and_publish(store, tables, "enc2", first)
    assert_complete(store, name, previous)
    # a version published: each failed attempt at a new one leaves it whole, and a rerun publishes the new one
    for fail_at in range(n_writes):
        augment = AugmentConfig(transpositions=(2,), noise_fraction=0.1, seed=fail_at + 1)
        attempt(fail_at, augment, previous)
        previous = _build_and_publish(store, tables, "enc2", augment)
        assert_complete(store, name, previous)
    return n_writes


@pytest.mark.parametrize("after", [False, True], ids=["write-fails", "reply-lost"])
def test_a_crash_at_any_store_write_leaves_the_published_version_whole(store_uri, corpus, monkeypatch, after):
    store = Store(store_uri)
    tables = publish_tables(store, corpus)
    _crash_at_every_write(store, tables, StoreFaults(monkeypatch), after)


@pytest.mark.s3
@pytest.mark.parametrize("after", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["request-refused", "reply-lost"])
def test_s3_server_errors_at_any_request_leave_the_published_version_whole(s3_env, faulty_s3, corpus,
                                                                          monkeypatch, after):
    from tasks.storage.settings import reload_settings

    switch, url = faulty_s3
    store = Store(s3_env)
    tables = publish_tables(store, corpus)  # through the healthy endpoint
    monkeypatch.setenv("MIDIPIX_S3_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore would retry a 500 by itself
    reload_settings()
    try:
        n = _crash_at_every_write(Store(s3_env), tables, switch, after)
        assert n == 6  # 3 shards (one per split), the image index, the manifest, the pointer
    finally:
        switch.arm(None)
