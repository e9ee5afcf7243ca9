"""Recorded audio for the Hilbert images: pairing sound files with MIDI, reading, mono fold, resampling,
the audio modes, bad recordings, and cache invalidation when a recording changes. No Prefect here."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from storage_schemas import shards as SH
from storage_schemas import tables as S
from storage_schemas.encodings import config_from_dict
from tasks.steps import render as R
from tasks.steps import tables as T
from tasks.storage.recordings import AudioError, read_audio, read_recording
from tasks.kernels.resample import resample, resample_reference, resampled_length
from tasks.storage.shards import shard_images
from tasks.storage.sources import (
    fingerprint,
    generate_corpus,
    list_files,
    maestro_archive,
    maestro_source,
    maestro_spec,
    read_file_bytes,
)
from tasks.storage.store import Store
from tasks.steps.summary import dataset_stats, format_datasets

TABLES = "c"
HILBERT = R.HilbertConfig(order=6, sample_rate=8000)  # 4,096-sample blocks, half a second each
ALL_TRAIN = T.SplitConfig(mode="random", ratios=(1.0, 0.0, 0.0))
NAME = SH.dataset_name(TABLES, "hilbert")


# -- helpers ------------------------------------------------------------------------------------------


def tone(seconds: float, sr: int, freq: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(frames, channels) test signal: a sine per channel at slightly different levels, plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    cols = [(0.5 - 0.1 * c) * np.sin(2 * np.pi * freq * (1 + 0.1 * c) * t) + 0.01 * rng.standard_normal(t.size)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_sound(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def expected_images(path: Path, config: R.HilbertConfig) -> np.ndarray:
    """What a recording must become: soundfile's samples, channel mean, resampled, on the curve."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)  # exact for 16-bit PCM: (a + b) / 2 is representable in float32
    from tasks.kernels.hilbert import audio_to_images

    images, _ = audio_to_images(resample(mono, sr, config.sample_rate), order=config.order, dtype=np.float16)
    return images  # (N, side, side)


def build_tables(store: Store, folder: Path, split: T.SplitConfig = ALL_TRAIN) -> tuple[dict, list[T.SourceFile]]:
    files, errors = fingerprint(list_files(str(folder)))
    assert errors == []
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, split)
    version = T.version_id(files, {"split": split.model_dump(mode="json")})
    if not store.exists(S.manifest_key(TABLES, version)):
        T.write_table_set(store, TABLES, version, result, {})
    T.publish(store, TABLES, version)
    return T.read_manifest(store, TABLES, version), files


def piece_ids(store: Store, tables: dict) -> dict[str, int]:
    """piece_id by MIDI file name."""
    out = {}
    for rec in T.table_files(tables, "pieces"):
        for row in pq.read_table(io.BytesIO(store.read_bytes(rec["key"])), columns=["piece_id", "relpath"]).to_pylist():
            out[row["relpath"]] = row["piece_id"]
    return out


def piece_rows(store: Store, manifest: dict, piece_id: int) -> tuple[np.ndarray, list[str]]:
    """A piece's images in window order, and their ``audio`` labels from images.parquet."""
    index = R.read_images_table(store, NAME, manifest["version"])
    rows = index.filter(pc.equal(index["piece_id"], piece_id)).sort_by("window_start").to_pylist()
    shards = {s["sha256"]: shard_images(store.read_bytes(s["key"])) for s in manifest["shards"]}
    return np.stack([shards[r["shard"]][r["row"]] for r in rows]) if rows else np.zeros((0,)), [r["audio"] for r in rows]


def synth_images(store: Store, tables: dict, piece_id: int, config: R.HilbertConfig) -> np.ndarray:
    notes = T.load_tables(store, tables, ["notes"])["notes"]
    notes = notes.filter(pc.equal(notes["piece_id"], piece_id))
    cols = {c: notes[c].to_numpy() for c in R.NOTE_COLUMNS[1:]}
    images, _ = R._hilbert_images(cols, config)
    return images


@pytest.fixture(scope="module")
def midi(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("midi")
    generate_corpus(folder, n=3, seed=11, minutes=0.05)
    return folder


@pytest.fixture
def corpus(tmp_path, midi) -> Path:
    """Three MIDI files: 00000 with a 16 kHz stereo WAV, 00001 with an 8 kHz mono FLAC, 00002 with none."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for p in midi.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    write_sound(folder / "gen-s11-00000.wav", tone(2.3, 16000, 440.0), 16000)
    write_sound(folder / "gen-s11-00001.flac", tone(1.7, 8000, 330.0, channels=1, seed=1), 8000)
    return folder


# -- reading and resampling ---------------------------------------------------------------------------


def test_stereo_is_folded_to_mono_by_the_channel_mean_block_by_block(tmp_path):
    data = tone(0.5, 8000, 440.0, channels=2)
    path = write_sound(tmp_path / "x.wav", data, 8000, subtype="FLOAT")
    mono, sr = read_audio(str(path), block_frames=333)  # blocks that do not divide the length
    assert sr == 8000 and mono.dtype == np.float32 and mono.shape == (data.shape[0],)
    np.testing.assert_array_equal(mono, ((data[:, 0].astype(np.float64) + data[:, 1]) / 2).astype(np.float32))
    whole, _ = read_audio(str(path))
    np.testing.assert_array_equal(mono, whole)
    four = np.concatenate([data, data[:, ::-1]], axis=1)  # more channels: still their mean
    mono4, _ = read_audio(str(write_sound(tmp_path / "y.flac", four, 8000)))
    np.testing.assert_allclose(mono4, four.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize("sr_in, sr_out, freq", [(48000, 44100, 1000.0), (44100, 48000, 3000.0),
                                                 (44100, 8000, 440.0), (8000, 44100, 440.0), (22050, 16000, 5000.0)])
def test_resampling_keeps_a_sines_frequency_and_phase_and_has_the_right_length(sr_in, sr_out, freq):
    n = int(0.25 * sr_in) + 7
    x = (0.8 * np.sin(2 * np.pi * freq * np.arange(n) / sr_in)).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert y.shape[0] == resampled_length(n, sr_in, sr_out) == -(-n * sr_out // sr_in)
    want = 0.8 * np.sin(2 * np.pi * freq * np.arange(y.shape[0]) / sr_out)
    edge = int(0.02 * sr_out)  # the filter's reach at the ends, where the input is taken as zero
    assert np.abs(y[edge:-edge] - want[edge:-edge]).max() < 1e-4
    spectrum = np.abs(np.fft.rfft(y[edge:-edge] * np.hanning(y.shape[0] - 2 * edge)))
    peak_hz = np.argmax(spectrum) * sr_out / (y.shape[0] - 2 * edge)
    assert abs(peak_hz - freq) <= sr_out / (y.shape[0] - 2 * edge)


def test_resampling_rejects_what_the_lower_rate_cannot_hold_and_matches_its_reference():
    n = 12000
    t = np.arange(n) / 48000
    above = np.sin(2 * np.pi * 23000.0 * t).astype(np.float32)  # above 44.1 kHz's Nyquist: would alias
    y = resample(above, 48000, 44100)
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 1e-4  # below −77 dB of the input's RMS
    x = np.random.default_rng(0).standard_normal(1500).astype(np.float32)
    for sr_in, sr_out in [(48000, 44100), (44100, 8000), (8000, 11025)]:
        np.testing.assert_allclose(resample(x, sr_in, sr_out), resample_reference(x, sr_in, sr_out), atol=2e-5)
    assert resample(x, 8000, 8000) is not None and np.array_equal(resample(x, 8000, 8000), x)
    assert resample(x[:0], 48000, 44100).shape == (0,)
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((4, 2)), 8000, 16000)


def test_unreadable_sound_files_raise_audio_errors_with_a_kind(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not a wave file")
    with pytest.raises(AudioError) as e:
        read_audio(str(bad))
    assert e.value.kind == "audio_unreadable"
    with pytest.raises(AudioError, match="audio_unreadable"):
        read_audio(str(tmp_path / "missing.wav"))
    empty = write_sound(tmp_path / "empty.wav", np.zeros((0, 2), np.float32), 8000)
    with pytest.raises(AudioError, match="audio_empty"):
        read_audio(str(empty))
    nan = write_sound(tmp_path / "nan.wav", np.full((10, 1), np.nan, np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="audio_invalid"):
        read_audio(str(nan))


# -- sources and tables -------------------------------------------------------------------------------


def test_midi_files_are_paired_with_same_stem_sound_files_and_the_tables_record_them(tmp_path, corpus):
    (corpus / "gen-s11-00001.WAV").write_bytes((corpus / "gen-s11-00001.flac").read_bytes())  # .wav is preferred
    (corpus / "gen-s11-00002-other.wav").write_bytes(b"not this piece's stem")
    src = list_files(str(corpus))
    assert src.audio == {"gen-s11-00000.mid": str(corpus / "gen-s11-00000.wav"),
                         "gen-s11-00001.mid": str(corpus / "gen-s11-00001.WAV")}
    assert list_files(str(corpus / "*.mid")).audio == src.audio  # a glob of MIDI files looks beside them
    (corpus / "gen-s11-00001.WAV").unlink()
    files, errors = fingerprint(list_files(str(corpus)))
    assert errors == []
    by_name = {f.relpath: f for f in files}
    wav = (corpus / "gen-s11-00000.wav").read_bytes()
    assert by_name["gen-s11-00000.mid"].audio_sha256 == hashlib.sha256(wav).hexdigest()
    assert by_name["gen-s11-00000.mid"].audio_size == len(wav)
    assert by_name["gen-s11-00001.mid"].audio_uri == str(corpus / "gen-s11-00001.flac")
    assert by_name["gen-s11-00002.mid"].audio_uri is None

    store = Store(str(tmp_path / "store"))
    tables, _ = build_tables(store, corpus)
    pieces = pieces_by_relpath(store, tables)
    assert pieces["gen-s11-00000.mid"]["audio_source"] == str(corpus / "gen-s11-00000.wav")
    assert pieces["gen-s11-00000.mid"]["audio_size_bytes"] == len(wav)
    assert pieces["gen-s11-00002.mid"]["audio_source"] is None
    assert tables["schema_version"] == S.TABLES_SCHEMA_VERSION == 2


def pieces_by_relpath(store: Store, tables: dict) -> dict[str, dict]:
    """Rows of the pieces table by relpath (plain pyarrow)."""
    return {r["relpath"]: r for rec in T.table_files(tables, "pieces")
            for r in pq.read_table(io.BytesIO(store.read_bytes(rec["key"]))).to_pylist()}


# -- rendering ----------------------------------------------------------------------------------------


def test_auto_takes_each_recording_as_read_and_falls_back_to_the_synthesizer(tmp_path, corpus):
    store = Store(str(tmp_path / "store"))
    tables, _ = build_tables(store, corpus)
    ids = piece_ids(store, tables)
    manifest, stats = R.build_image_dataset(store, TABLES, tables, HILBERT)
    assert manifest["config"]["audio"] == "auto"
    assert manifest["audio"] == {"recorded": 2, "synth": 1, "rejected": 0} and manifest["rejects"] == []
    assert (stats.recorded_pieces, stats.synth_pieces) == (2, 1)

    for stem, sound in (("gen-s11-00000", "gen-s11-00000.wav"), ("gen-s11-00001", "gen-s11-00001.flac")):
        got, labels = piece_rows(store, manifest, ids[f"{stem}.mid"])
        want = expected_images(corpus / sound, HILBERT)
        assert labels == ["recorded"] * want.shape[0]
        np.testing.assert_array_equal(got[:, 0], want)  # exactly the read samples, resampled, on the curve
    # 2.3 s at 16 kHz → 18,400 samples at 8 kHz → 5 blocks of 4,096 (the last one zero-padded)
    assert piece_rows(store, manifest, ids["gen-s11-00000.mid"])[0].shape[0] == 5

    got, labels = piece_rows(store, manifest, ids["gen-s11-00002.mid"])  # no recording: the synthesizer
    assert set(labels) == {"synth"}
    np.testing.assert_array_equal(got, synth_images(store, tables, ids["gen-s11-00002.mid"], HILBERT))

    # synth ignores the recordings; the guitar dataset is always synthesized
    synth = dataclasses.replace(HILBERT, audio="synth")
    m2, _ = R.build_image_dataset(store, TABLES, tables, synth)
    assert m2["version"] != manifest["version"] and m2["audio"] == {"recorded": 0, "synth": 3, "rejected": 0}
    got, labels = piece_rows(store, m2, ids["gen-s11-00000.mid"])
    assert set(labels) == {"synth"}
    np.testing.assert_array_equal(got, synth_images(store, tables, ids["gen-s11-00000.mid"], HILBERT))
    assert R.image_config("hilbert-guitar", None, HILBERT).audio == "synth"


def test_recorded_mode_and_a_corrupt_recording_leave_out_pieces_and_the_rest_goes_on(tmp_path, corpus):
    (corpus / "gen-s11-00001.flac").write_bytes(b"fLaC\x00\x00\x00\x22 truncated, not a real FLAC stream")
    store = Store(str(tmp_path / "store"))
    tables, _ = build_tables(store, corpus)
    ids = piece_ids(store, tables)
    recorded = dataclasses.replace(HILBERT, audio="recorded")
    manifest, stats = R.build_image_dataset(store, TABLES, tables, recorded)
    rejects = {r["relpath"]: r for r in manifest["rejects"]}
    assert set(rejects) == {"gen-s11-00001.mid", "gen-s11-00002.mid"}
    assert rejects["gen-s11-00001.mid"]["error_kind"] == "audio_unreadable"
    assert "gen-s11-00001.flac" in rejects["gen-s11-00001.mid"]["message"]
    assert rejects["gen-s11-00001.mid"]["piece_id"] == ids["gen-s11-00001.mid"]
    assert rejects["gen-s11-00002.mid"]["error_kind"] == "audio_missing"
    assert all(set(r) == set(SH.REJECT_FIELDS) for r in manifest["rejects"])
    assert manifest["audio"] == {"recorded": 1, "synth": 0, "rejected": 2} and len(stats.rejects) == 2
    index = R.read_images_table(store, NAME, manifest["version"])
    assert set(index["piece_id"].to_pylist()) == {ids["gen-s11-00000.mid"]}  # the rest went on
    assert set(index["audio"].to_pylist()) == {"recorded"}

    # auto: the corrupt recording is still a reject (never silently replaced by the synthesizer)
    auto, _ = R.build_image_dataset(store, TABLES, tables, HILBERT)
    assert [r["relpath"] for r in auto["rejects"]] == ["gen-s11-00001.mid"]
    assert auto["audio"] == {"recorded": 1, "synth": 1, "rejected": 1}

    # what a user sees: `midipix build` / `midipix show` print the dataset's stats
    R.publish_dataset(store, NAME, auto["version"])
    text = format_datasets([dataset_stats(store, NAME)])
    assert "1 pieces recorded, 1 synthesized, 1 left out" in text
    assert "left out gen-s11-00001.mid: audio_unreadable:" in text


def test_a_group_whose_pieces_are_all_left_out_writes_no_shard_and_is_reused(tmp_path, midi):
    store = Store(str(tmp_path / "store"))
    tables, _ = build_tables(store, midi)  # no recordings at all
    recorded = dataclasses.replace(HILBERT, audio="recorded")
    first, stats = R.build_image_dataset(store, TABLES, tables, recorded)
    assert first["shards"] == [] and first["images"] == 0 and stats.rendered_pieces == 3
    assert [g["rows"] for g in first["empty_groups"]] == [0] * len(first["empty_groups"])
    assert sorted(r["error_kind"] for r in first["rejects"]) == ["audio_missing"] * 3
    assert not any(k.endswith(".arrow") for k in store.list(f"datasets/{NAME}"))
    again, stats = R.build_image_dataset(store, TABLES, tables, recorded, previous=first,
                                         previous_images=R.read_images_table(store, NAME, first["version"]))
    assert stats.rendered_pieces == 0 and again == first


def test_augmented_variants_of_a_recording_are_skipped_not_synthesized(tmp_path, corpus):
    from tasks.kernels.augment import AugmentConfig

    store = Store(str(tmp_path / "store"))
    tables, _ = build_tables(store, corpus)
    ids = piece_ids(store, tables)
    manifest, stats = R.build_image_dataset(store, TABLES, tables, HILBERT,
                                            augment=AugmentConfig(transpositions=(2,)))
    index = R.read_images_table(store, NAME, manifest["version"])
    for name, k_values in (("gen-s11-00000.mid", {0}), ("gen-s11-00002.mid", {0, 2})):
        mine = index.filter(pc.equal(index["piece_id"], ids[name]))
        assert set(mine["transposition"].to_pylist()) == k_values
    assert stats.skipped_variants == 2  # the two recorded pieces' transposed twins


def test_a_changed_recording_changes_the_versions_and_rerenders_only_its_shard(tmp_path, midipix_env):
    folder = tmp_path / "corpus"
    generate_corpus(folder, n=20, seed=20, minutes=0.02)  # 4 shards
    stems = sorted(p.stem for p in folder.glob("*.mid"))
    for i, stem in enumerate(stems[:6]):
        write_sound(folder / f"{stem}.wav", tone(0.6, 8000, 200.0 + 50 * i, channels=1, seed=i), 8000)
    store = Store(str(tmp_path / "store"))
    tables, files = build_tables(store, folder)
    old, _ = R.build_image_dataset(store, TABLES, tables, HILBERT)
    R.publish_dataset(store, NAME, old["version"])
    assert len(old["shards"]) >= 2  # the test means something only with several shards

    victim = folder / f"{stems[3]}.wav"
    before = victim.stat()
    write_sound(victim, tone(0.6, 8000, 999.0, channels=1, seed=99), 8000)  # same size, other samples
    assert victim.stat().st_size == before.st_size
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # coarse clocks: a visible touch
    new_tables, new_files = build_tables(store, folder)
    assert new_tables["version"] != tables["version"]  # the recording is part of the table set's identity
    changed = {f.relpath for f in new_files} - {f.relpath for f in new_files if f in set(files)}
    assert changed == {f"{stems[3]}.mid"}
    # the MIDI rows are reused from the previous table set; only the audio columns change
    result = T.build_tables(new_files, lambda f: read_file_bytes(f.uri), None, ALL_TRAIN,
                            previous=T.PreviousTables(T.load_tables(store, tables)))
    assert (result.parsed, result.reused) == (0, 20)

    old_index = R.read_images_table(store, NAME, old["version"])
    new, stats = R.build_image_dataset(store, TABLES, new_tables, HILBERT, previous=old,
                                       previous_images=old_index)
    assert new["version"] != old["version"]
    assert R.dataset_version(new_tables["version"], config_from_dict(new["config"]), R.AugmentConfig()) == new["version"]
    assert (stats.rendered_shards, stats.reused_shards) == (1, len(new["shards"]) - 1)
    assert sorted(s["recipe"] for s in new["shards"]) != sorted(s["recipe"] for s in old["shards"])
    assert len({s["recipe"] for s in new["shards"]} - {s["recipe"] for s in old["shards"]}) == 1
    pid = piece_ids(store, new_tables)[f"{stems[3]}.mid"]
    got, labels = piece_rows(store, new, pid)
    np.testing.assert_array_equal(got[:, 0], expected_images(victim, HILBERT))
    assert set(labels) == {"recorded"}
    # the same table set rendered from scratch gives the same dataset
    scratch = Store(str(tmp_path / "scratch"))
    full, _ = R.build_image_dataset(scratch, TABLES, build_tables(scratch, folder)[0], HILBERT)
    assert full["shards"] == new["shards"] and full["version"] == new["version"]


def test_a_table_set_of_schema_version_1_renders_without_recordings(tmp_path, corpus):
    files, _ = fingerprint(list_files(str(corpus)))
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, ALL_TRAIN)
    for split, t in result.tables["pieces"].items():  # what a version-1 writer wrote: no audio columns
        result.tables["pieces"][split] = t.drop_columns(list(S.AUDIO_COLUMNS))
    store = Store(str(tmp_path / "store"))
    T.write_table_set(store, TABLES, "v1-old", result, {})
    manifest, _ = R.build_image_dataset(store, TABLES, T.read_manifest(store, TABLES, "v1-old"), HILBERT)
    assert manifest["audio"] == {"recorded": 0, "synth": 3, "rejected": 0}


def test_read_recording_reads_remote_uris_through_fsspec(tmp_path):
    pytest.importorskip("fsspec")
    path = write_sound(tmp_path / "r.flac", tone(0.3, 16000, 500.0), 16000)
    local = read_recording(str(path), 8000)
    np.testing.assert_array_equal(read_recording(f"file://{path}", 8000), local)
    assert local.shape == (resampled_length(int(0.3 * 16000), 16000, 8000),)


@pytest.mark.s3
def test_recordings_beside_midi_in_s3_are_paired_hashed_and_rendered(s3_env, corpus, tmp_path, midipix_env):
    src = Store(f"{s3_env}-src")
    for p in sorted(corpus.iterdir()):
        src.write_bytes(f"midi/{p.name}", p.read_bytes())
    listing = list_files(f"{src.uri}/midi/")
    assert sorted(listing.audio) == ["gen-s11-00000.mid", "gen-s11-00001.mid"]
    assert all(u.startswith("s3://") for u in listing.audio.values())
    files, _ = fingerprint(listing)
    wav = (corpus / "gen-s11-00000.wav").read_bytes()
    first = {f.relpath: f for f in files}["gen-s11-00000.mid"]
    assert (first.audio_size, first.audio_sha256) == (len(wav), hashlib.sha256(wav).hexdigest())
    assert fingerprint(listing)[0] == files  # the second time from the cache (ETag), same identity
    store = Store(s3_env)
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, ALL_TRAIN)
    T.write_table_set(store, TABLES, "v-s3", result, {})
    tables = T.read_manifest(store, TABLES, "v-s3")
    manifest, _ = R.build_image_dataset(store, TABLES, tables, HILBERT)
    assert manifest["audio"] == {"recorded": 2, "synth": 1, "rejected": 0}
    got, labels = piece_rows(store, manifest, piece_ids(store, tables)["gen-s11-00000.mid"])
    np.testing.assert_array_equal(got[:, 0], expected_images(corpus / "gen-s11-00000.wav", HILBERT))


# -- MAESTRO's full archive and the parameters ------------------------------------------------------


def test_the_full_maestro_archive_is_declared_and_its_recordings_are_paired(tmp_path, midi, midipix_env):
    from storage_schemas.datasets import MAESTRO_V3, MAESTRO_V3_FULL, get_dataset

    assert maestro_spec("maestro") == MAESTRO_V3.name and maestro_spec("maestro-full") == MAESTRO_V3_FULL.name
    assert maestro_spec("generated:3") is None and maestro_spec("/data/midi") is None
    assert get_dataset("maestro-v3.0.0-full").url.endswith("/v3.0.0/maestro-v3.0.0.zip")
    assert MAESTRO_V3_FULL.filename == "maestro-v3.0.0.zip" != MAESTRO_V3.filename

    served = tmp_path / "served"
    served.mkdir()
    meta = {c: {} for c in ("canonical_composer", "canonical_title", "split", "year", "midi_filename",
                            "audio_filename", "duration")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, f in enumerate(sorted(midi.iterdir())):
            rel = f"2018/{f.stem}.midi"
            z.writestr(f"maestro-v3.0.0/{rel}", f.read_bytes())
            wav = io.BytesIO()
            sf.write(wav, tone(0.2, 44100, 440.0), 44100, format="WAV", subtype="PCM_16")
            z.writestr(f"maestro-v3.0.0/{rel[:-5]}.wav", wav.getvalue())
            for col, val in (("canonical_composer", "C"), ("canonical_title", f"T{i}"), ("split", "train"),
                             ("year", 2018), ("midi_filename", rel), ("audio_filename", rel[:-5] + ".wav"),
                             ("duration", 1.0)):
                meta[col][str(i)] = val
        z.writestr("maestro-v3.0.0/maestro-v3.0.0.json", json.dumps(meta))
    data = buf.getvalue()
    (served / "maestro-v3.0.0.zip").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        archive = maestro_archive(name="maestro-v3.0.0-full", url=f"http://127.0.0.1:{server.server_address[1]}/"
                                  "maestro-v3.0.0.zip", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        src = maestro_source(archive)
    finally:
        server.shutdown()
    assert src.default_name == "maestro-v3.0.0-full" and len(src.files) == 3
    assert sorted(src.audio) == sorted(rel for _, rel in src.files)
    assert all(uri.endswith(".wav") and os.path.isfile(uri) for uri in src.audio.values())
    assert src.metadata_uri is not None


def test_the_audio_option_reaches_the_config_through_the_flow_params_and_the_cli():
    from flows.build import BuildParams, HilbertParams
    from flows.cli import _parser

    args = _parser().parse_args(["build", "--encodings", "hilbert", "--audio", "recorded"])
    assert args.audio == "recorded"
    assert HilbertParams(audio=args.audio).config().audio == "recorded"
    assert BuildParams().hilbert.config().audio == "auto"
    with pytest.raises(ValueError):
        HilbertParams(audio="tape")
    with pytest.raises(ValueError, match="audio"):
        R.HilbertConfig(audio="tape")
    assert pa.types.is_string(SH.IMAGES.field("audio").type)
