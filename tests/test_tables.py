"""Building, writing, publishing and reading table sets (no Prefect here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from storage_schemas import tables as S
from tasks.steps import tables as T
from tasks.kernels.corpus import generate_piece
from tasks.storage.sources import fingerprint, generate_corpus, list_files, read_file_bytes
from tasks.storage.store import Store

from conftest import SHARED_MIDI


def _files(folder: Path) -> list[T.SourceFile]:
    files, errors = fingerprint(list_files(str(folder)))
    assert errors == []
    return files


def _build(folder: Path, previous=None, split=T.SplitConfig(), metadata=None) -> T.BuildResult:
    return T.build_tables(_files(folder), lambda f: read_file_bytes(f.uri), metadata, split, previous=previous)


def _write_publish(store: Store, name: str, folder: Path, result: T.BuildResult) -> str:
    version = T.version_id(_files(folder), {"test": True})
    T.write_table_set(store, name, version, result, {})
    assert T.publish(store, name, version) is True
    return version


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    generate_corpus(folder, n=6, seed=3, minutes=0.2)
    return folder


def test_tables_hold_every_generated_note_and_read_with_plain_pandas(tmp_path, corpus):
    store = Store(str(tmp_path / "store"))
    result = _build(corpus)
    version = _write_publish(store, "c", corpus, result)

    pointer = json.loads((tmp_path / "store" / S.pointer_key("c")).read_text())
    assert pointer["version"] == version
    root = tmp_path / "store" / S.version_root("c", version)
    notes = pd.read_parquet(root / "notes")  # no midipix code involved
    pieces = pd.read_parquet(root / "pieces")
    assert set(notes.columns) >= set(S.NOTES.names) | {"split"}
    assert len(pieces) == 6
    for i in range(6):
        gen = generate_piece(3, i, 0.2)
        row = pieces[pieces.relpath == f"{gen.name}.mid"].iloc[0]
        mine = notes[notes.piece_id == row.piece_id]
        assert len(mine) == gen.n_notes == row.note_count
        got = sorted(zip(mine.onset_tick, mine.pitch, mine.offset_tick, mine.velocity))
        want = sorted(zip(gen.notes["onset_tick"], gen.notes["pitch"], gen.notes["offset_tick"],
                          gen.notes["velocity"]))
        assert got == want
        np.testing.assert_allclose(np.sort(mine.onset_s.to_numpy()),
                                   np.sort(gen.ticks_to_seconds(gen.notes["onset_tick"])), atol=1e-6)
        assert (mine.offset_pedal_s >= mine.offset_s).all()
        assert row.split in S.SPLITS
        assert (mine.split == row.split).all()  # one piece never spans two splits
    # schemas are the declared ones
    for t in S.PARTITIONED:
        f = next((root / t).rglob("*.parquet"))
        assert pq.read_schema(f).remove_metadata().equals(S.SCHEMAS[t].remove_metadata())


def test_bad_files_become_rejects_and_good_files_stay(tmp_path, corpus):
    good = (corpus / "gen-s3-00000.mid").read_bytes()
    (corpus / "truncated.mid").write_bytes(good[: len(good) // 2])
    (corpus / "garbage.mid").write_bytes(bytes(range(256)) * 4)
    (corpus / "text.midi").write_text("this is not a MIDI file\n")
    zero = bytearray(good)
    zero[12:14] = b"\x00\x00"
    (corpus / "zero-division.mid").write_bytes(bytes(zero))
    (corpus / "zz-copy-of-0.mid").write_bytes(good)

    result = _build(corpus)
    rejects = {r["relpath"]: r for r in result.tables["rejects"][None].to_pylist()}
    assert {k: v["error_kind"] for k, v in rejects.items()} == {
        "truncated.mid": "truncated",
        "garbage.mid": "not_midi",
        "text.midi": "not_midi",
        "zero-division.mid": "zero_division",
        "zz-copy-of-0.mid": "duplicate",
    }
    assert all(r["message"] for r in rejects.values())
    assert "gen-s3-00000.mid" in rejects["zz-copy-of-0.mid"]["message"]
    kept = sum(t.num_rows for t in result.tables["pieces"].values())
    assert kept == 6


def test_random_split_is_exact_seeded_and_by_piece():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(24)]
    a = T.random_splits(shas, T.SplitConfig(mode="random", seed=0))
    assert sorted(a.values()).count("train") == 17
    assert list(a.values()).count("validation") == 5
    assert list(a.values()).count("test") == 2
    assert T.random_splits(shas, T.SplitConfig(mode="random", seed=0)) == a
    assert T.random_splits(shas, T.SplitConfig(mode="random", seed=1)) != a
    # growing the corpus moves at most one old piece across each of the two boundaries
    b = T.random_splits(shas + [hashlib.sha256(b"new").hexdigest()], T.SplitConfig(mode="random", seed=0))
    assert sum(a[h] != b[h] for h in shas) <= 2
    with pytest.raises(ValueError):
        T.SplitConfig(ratios=(0.5, 0.2, 0.2))


def test_maestro_metadata_gives_published_split_and_titles(tmp_path):
    folder = SHARED_MIDI / "maestro-v3.0.0"
    if not folder.is_dir():
        pytest.skip("../shared/data/midi is not present")
    from tasks.storage.fetch import read_maestro_metadata

    source = list_files(str(SHARED_MIDI))
    assert source.metadata_uri is not None and source.metadata_uri.endswith(".csv")
    meta = read_maestro_metadata(source.metadata_uri)
    files, _ = fingerprint(source)
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), meta, T.SplitConfig())
    pieces = pd.concat([t.to_pandas().assign(split=s) for s, t in result.tables["pieces"].items()])
    maestro = pieces[pieces.relpath.str.startswith("maestro-v3.0.0/")].set_index("relpath")
    assert len(maestro) == len(meta) == 7
    for row in meta.itertuples():
        got = maestro.loc[f"maestro-v3.0.0/{row.midi_filename}"]
        assert got.split == row.split
        assert got.composer == row.canonical_composer and got.title == row.canonical_title
        assert got.year == row.year
        assert got.maestro_duration_s == row.duration
        # MAESTRO states the audio's duration; the MIDI file's end-of-track lies within a few seconds
        assert abs(got.duration_s - row.duration) < 3.0
    with pytest.raises(ValueError, match="split=maestro"):
        T.build_tables(files, lambda f: read_file_bytes(f.uri), meta, T.SplitConfig(mode="maestro"))


def test_incremental_build_reuses_rows_and_equals_a_full_build(tmp_path, corpus):
    store = Store(str(tmp_path / "store"))
    first = _build(corpus)
    version = _write_publish(store, "c", corpus, first)
    generate_corpus(corpus, n=8, seed=3, minutes=0.2)  # two new pieces
    previous = T.PreviousTables(T.load_tables(store, T.read_manifest(store, "c")))

    calls = []

    def counting_read(f):
        calls.append(f.relpath)
        return read_file_bytes(f.uri)

    incremental = T.build_tables(_files(corpus), counting_read, None, T.SplitConfig(), previous=previous)
    assert sorted(calls) == ["gen-s3-00006.mid", "gen-s3-00007.mid"]
    assert (incremental.parsed, incremental.reused) == (2, 6)
    full = _build(corpus)
    for t in S.PARTITIONED:
        for s in S.SPLITS:
            assert incremental.tables[t][s].equals(full.tables[t][s]), (t, s)
    assert version


def test_publish_is_compare_and_swap_and_manifest_is_verified(tmp_path, corpus):
    store = Store(str(tmp_path / "store"))
    version = _write_publish(store, "c", corpus, _build(corpus))
    assert T.publish(store, "c", version) is False  # already current
    manifest = T.read_manifest(store, "c")
    assert manifest["version"] == version
    for table in manifest["files"]:
        for rec in T.table_files(manifest, table):
            assert hashlib.sha256(store.read_bytes(rec["key"])).hexdigest() == rec["sha256"]
    # a manifest altered after publishing is caught by the pointer's hash
    key = S.manifest_key("c", version)
    store.write_bytes(key, store.read_bytes(key) + b" ")
    with pytest.raises(ValueError, match="does not match"):
        T.read_manifest(store, "c")
    assert T.list_table_sets(store) == ["c"]


def test_big_tables_are_written_as_parts_that_plain_pandas_reads_as_one(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(T, "PART_ROWS", 40)  # more than 10 parts: listed as 0, 1, 2 … 10, not 0, 1, 10, 2
    store = Store(str(tmp_path / "store"))
    result = _build(corpus)
    version = _write_publish(store, "c", corpus, result)
    manifest = T.read_manifest(store, "c")
    train = T.table_files(manifest, "notes", "train")
    assert len(train) > 10 and all(r["rows"] <= 40 for r in train)
    assert [int(r["key"].rsplit("part-", 1)[1].split(".")[0]) for r in train] == list(range(len(train)))
    notes = pd.read_parquet(tmp_path / "store" / S.version_root("c", version) / "notes")
    want = sum(t.num_rows for t in result.tables["notes"].values())
    assert len(notes) == want == manifest["rows"]["notes"]
    # parts keep the rows in order: each piece's notes stay sorted by onset
    first = notes[notes.split == "train"]
    for _, g in first.groupby("piece_id"):
        assert g.onset_tick.is_monotonic_increasing


def test_fingerprints_are_cached_by_size_and_mtime_and_refreshed_on_change(tmp_path, corpus, midipix_env):
    import os

    first, _ = fingerprint(list_files(str(corpus)))
    victim = corpus / "gen-s3-00001.mid"
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01  # same size, different bytes
    st = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # a cache keyed on size+mtime cannot see it
    cached, _ = fingerprint(list_files(str(corpus)))
    assert {f.relpath: f.sha256 for f in cached} == {f.relpath: f.sha256 for f in first}
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # any touch refreshes it
    again, _ = fingerprint(list_files(str(corpus)))
    changed = {f.relpath for f in again} - {f.relpath for f in again if f.sha256 in {g.sha256 for g in first}}
    assert changed == {"gen-s3-00001.mid"}
    assert hashlib.sha256(bytes(data)).hexdigest() in {f.sha256 for f in again}
