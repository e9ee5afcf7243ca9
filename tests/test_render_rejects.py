"""Rendering never fails a whole dataset for one piece; enc1's tempo channel is the piece's tempo map.

A piece that gives no image worth keeping (all its notes off the keyboard, only drums, nothing a
column long) is a reject of the dataset with a kind and a message, as unusable recordings are; drum
notes (MIDI channel 10) are drawn on no roll and counted. The files are built with mido.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pyarrow as pa
import pytest

import midi_fixtures as fx
from storage_schemas import shards as SH
from storage_schemas.encodings import RollConfig
from tasks.kernels import rolls as E
from tasks.kernels.augment import AugmentConfig
from tasks.storage.sources import generate_corpus
from tasks.steps import render as R
from tasks.steps import tables as T
from tasks.storage.shards import shard_images
from tasks.storage.store import Store
from tasks.storage.sources import read_file_bytes
from test_images import (ALL_TRAIN, TABLES, _files, assert_complete, build, decoded_onsets, expected_onsets,
                         publish_tables)

DRUMS = 9  # channel 10


# -- files --------------------------------------------------------------------------------------------


def folder(tmp_path: Path) -> Path:
    (tmp_path / "corpus").mkdir()
    return tmp_path / "corpus"


def write_midi(path: Path, *tracks, ticks_per_beat: int = 480) -> Path:
    path.write_bytes(fx.mido_smf(*tracks, ticks_per_beat=ticks_per_beat))
    return path


def general_midi(path: Path, per_track: int = 400) -> Path:
    """A 16-track General MIDI file: a conductor track, then 15 instruments on channels 0..14 (drums on
    channel 9, the others with programs 0, 8, 16, …), pitches 0..112, 6,000 notes over about 50 s."""
    tracks = [[(0, mido.MetaMessage("track_name", name="conductor")), (0, mido.MetaMessage("set_tempo", tempo=500000))]]
    for ch in range(15):
        events = [] if ch == DRUMS else [(0, mido.Message("program_change", channel=ch, program=8 * ch))]
        for i in range(per_track):
            tick, pitch = i * 120 + 7 * ch, (7 * i + 11 * ch) % 113
            events += [fx.on(tick, pitch, 80, ch), fx.off(tick + 100, pitch, ch)]
        tracks.append(events)
    return write_midi(path, *tracks)


def notes_file(path: Path, pitches, channel: int = 0, length: int = 200, step: int = 240) -> Path:
    """One track of notes ``length`` ticks long, one every ``step`` ticks (120 bpm, 480 ticks a beat)."""
    events = []
    for i, p in enumerate(pitches):
        events += [fx.on(i * step, p, 90, channel), fx.off(i * step + length, p, channel)]
    return write_midi(path, events)


def mido_notes(path: Path) -> list[tuple[int, int, int]]:
    """(channel, pitch, onset tick) of every note mido reads."""
    out = []
    for track in mido.MidiFile(str(path)).tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                out.append((msg.channel, msg.note, tick))
    return out


# -- reading a dataset back ---------------------------------------------------------------------------


def table_notes(store: Store, tables: dict) -> dict[int, dict[str, np.ndarray]]:
    """Each piece's rows of the notes table (drums included), channel and ticks too."""
    notes = T.load_tables(store, tables, ["notes"])["notes"]
    pid = notes["piece_id"].to_numpy()
    cols = {c: notes[c].to_numpy() for c in ("channel", "pitch", "velocity", "program", "onset_tick", "onset_s",
                                             "offset_s", "offset_pedal_s")}
    return {int(p): {c: v[pid == p] for c, v in cols.items()} for p in np.unique(pid)}


def relpaths(store: Store, tables: dict) -> dict[str, int]:
    pieces = T.load_tables(store, tables, ["pieces"])["pieces"]
    return dict(zip(pieces["relpath"].to_pylist(), pieces["piece_id"].to_pylist()))


def images_by_piece(store: Store, manifest: dict) -> dict[int, list[tuple[int, int, np.ndarray]]]:
    """piece -> [(transposition, window start, image)] of a built dataset."""
    index = R.read_images_table(store, manifest["name"], manifest["version"])
    out: dict[int, list] = {}
    for rec in manifest["shards"]:
        pixels = shard_images(store.read_bytes(rec["key"]))
        rows = index.filter(pa.compute.equal(index["shard"], rec["sha256"])).to_pylist()
        for row in rows:
            out.setdefault(row["piece_id"], []).append((row["transposition"], row["window_start"], pixels[row["row"]]))
    return out


def drawn(notes: dict[str, np.ndarray], cfg: RollConfig) -> dict[str, np.ndarray]:
    """The notes a roll draws: not drums, within its pitch range."""
    keep = (notes["channel"] != DRUMS) & (notes["pitch"] >= cfg.pitch_lo) & (notes["pitch"] <= cfg.pitch_hi)
    return {c: v[keep] for c, v in notes.items()}


def kinds(manifest: dict) -> dict[str, str]:
    return {r["relpath"]: r["error_kind"] for r in manifest["rejects"]}


# -- rejects ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3"])
def test_a_lone_general_midi_file_gets_its_images_without_its_drums(tmp_path, encoding):
    # the user's file: 16 tracks, drums on channel 10, pitches 0..112, alone in its folder
    path = general_midi(folder(tmp_path) / "gm.mid")
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, tmp_path / "corpus")
    manifest, stats = build(store, tables, encoding)
    assert manifest["rejects"] == [] and "empty_groups" not in manifest

    (pid, notes), = table_notes(store, tables).items()
    read = mido_notes(path)
    assert len(notes["pitch"]) == len(read) == 6000
    n_drums = sum(ch == DRUMS for ch, _, _ in read)
    assert manifest["drum_notes"] == stats.drum_notes == n_drums == 400
    cfg = RollConfig(encoding=encoding)
    shown = drawn(notes, cfg)
    melodic = notes["channel"] != DRUMS
    assert stats.lost_notes == np.count_nonzero(melodic) - len(shown["pitch"]) > 0  # off the keyboard, counted
    windows = images_by_piece(store, manifest)[pid]
    assert len(windows) == manifest["images"] == 6  # 50.1 s
    for _, ws, image in windows:  # exactly the melodic notes on the keyboard: no drum is drawn
        assert decoded_onsets(image, ws, cfg) == expected_onsets(shown, ws, cfg)


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3", "hilbert"])
def test_pieces_that_give_no_image_are_rejects_and_the_rest_goes_on(tmp_path, encoding):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=4, seed=7, minutes=0.1)
    general_midi(corpus / "gm.mid", per_track=60)
    notes_file(corpus / "low.mid", range(0, 21))  # every note below the piano's lowest key
    notes_file(corpus / "drums.mid", [36, 38, 42, 46] * 5, channel=DRUMS)
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, corpus, ALL_TRAIN)
    ids = relpaths(store, tables)
    manifest, stats = build(store, tables, encoding)

    want = {"drums.mid": "drums_only"} if encoding == "hilbert" else {"low.mid": "off_keyboard",
                                                                     "drums.mid": "drums_only"}
    assert kinds(manifest) == want
    assert stats.rejects == manifest["rejects"]
    by_kind = {r["error_kind"]: r for r in manifest["rejects"]}
    assert by_kind["drums_only"]["piece_id"] == ids["drums.mid"]
    assert "20 notes are drum notes (MIDI channel 10)" in by_kind["drums_only"]["message"]
    if encoding != "hilbert":
        assert "all 21 notes lie outside pitches 21..108" in by_kind["off_keyboard"]["message"]
        assert "--pitch-range" in by_kind["off_keyboard"]["message"]
    assert manifest["drum_notes"] == 60  # the drum notes of gm.mid: drums.mid is left out
    images = images_by_piece(store, manifest)
    assert set(images) == {p for r, p in ids.items() if r not in want}  # every other piece has its images
    R.publish_dataset(store, manifest["name"], manifest["version"])
    assert_complete(store, manifest["name"])
    if encoding == "hilbert":
        return
    cfg = RollConfig(encoding=encoding)
    notes = table_notes(store, tables)
    for pid, windows in images.items():
        for _, ws, image in windows:
            assert decoded_onsets(image, ws, cfg) == expected_onsets(drawn(notes[pid], cfg), ws, cfg)


def test_a_group_of_rejects_is_recorded_without_a_shard_and_reused(tmp_path):
    notes_file(folder(tmp_path) / "low.mid", range(0, 21))
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, tmp_path / "corpus")
    first, stats = build(store, tables, "enc2")
    assert first["shards"] == [] and first["images"] == 0
    assert kinds(first) == {"low.mid": "off_keyboard"}
    (group,) = first["empty_groups"]
    assert (group["rows"], group["pieces"], group["rejects"]) == (0, 1, first["rejects"])
    assert stats.rendered_pieces == 1
    R.publish_dataset(store, first["name"], first["version"])
    assert_complete(store, first["name"])

    again, stats = build(store, tables, "enc2", previous=first,
                         previous_images=R.read_images_table(store, first["name"], first["version"]))
    assert (stats.rendered_pieces, stats.rendered_shards) == (0, 0)  # the group's record was reused
    assert again["rejects"] == first["rejects"] and again["empty_groups"] == first["empty_groups"]


def test_a_wider_pitch_range_draws_what_the_keyboard_leaves_out(tmp_path):
    notes_file(folder(tmp_path) / "low.mid", range(0, 21))
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, tmp_path / "corpus")
    cfg = RollConfig(encoding="enc2", pitch_lo=0, pitch_hi=127)
    manifest, stats = build(store, tables, cfg)
    assert manifest["rejects"] == [] and stats.lost_notes == 0
    ((pid, notes),) = table_notes(store, tables).items()
    ((_, ws, image),) = images_by_piece(store, manifest)[pid]
    assert decoded_onsets(image, ws, cfg) == expected_onsets(notes, ws, cfg)


def test_notes_off_the_keyboard_do_not_block_a_transposition(tmp_path):
    notes_file(folder(tmp_path) / "low.mid", range(10, 61))  # 11 notes below the keyboard, 40 on it
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, tmp_path / "corpus")
    manifest, stats = build(store, tables, "enc2", augment=AugmentConfig(transpositions=(3, -1)))
    cfg = RollConfig(encoding="enc2")
    ((pid, notes),) = table_notes(store, tables).items()
    shown = drawn(notes, cfg)
    windows = images_by_piece(store, manifest)[pid]
    assert {k for k, _, _ in windows} == {0, 3}  # -1 would push key 21 off: skipped, never wrapped
    assert stats.skipped_variants == 1 and stats.lost_notes == 2 * 11  # the low notes, in both variants
    for k, ws, image in windows:
        assert decoded_onsets(image, ws, cfg) == expected_onsets(shown, ws, cfg, k)


@pytest.mark.parametrize("convention", ["midipix", "pretty_midi"])
def test_a_piece_shorter_than_one_column(tmp_path, convention):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=2, seed=8, minutes=0.1)
    notes_file(corpus / "blip.mid", [60], length=10)  # 10 ticks at 120 bpm: 0.0104 s, a fifth of a column
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, corpus, ALL_TRAIN)
    ids = relpaths(store, tables)
    cfg = RollConfig(encoding="enc1", convention=convention)
    manifest, _ = build(store, tables, cfg)
    images = images_by_piece(store, manifest)
    if convention == "midipix":  # every note is at least one column long: one image, one pixel of length 1
        assert manifest["rejects"] == []
        ((_, ws, image),) = images[ids["blip.mid"]]
        assert ws == 0 and np.count_nonzero(image[0]) == 1 and image[0, 60 - cfg.pitch_lo, 0] == 1
    else:  # pretty_midi's convention drops such a note: a blank image is no image
        assert kinds(manifest) == {"blip.mid": "too_short"}
        assert "shorter than one column" in manifest["rejects"][0]["message"]
        assert ids["blip.mid"] not in images
    assert {ids[r] for r in ids if r != "blip.mid"} <= set(images)


def test_a_piece_that_fails_to_render_is_a_reject(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=6, minutes=0.1)
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, corpus, ALL_TRAIN)
    ids = relpaths(store, tables)
    bad = ids["gen-s6-00001.mid"]
    lengths = {pid: len(n["pitch"]) for pid, n in table_notes(store, tables).items()}
    assert len(set(lengths.values())) == 3  # the pieces are told apart by their number of notes
    render_piece = R.render_piece

    def failing(notes, *args):  # the one piece's rendering fails as a huge allocation would
        if notes["pitch"].shape[0] == lengths[bad]:
            raise MemoryError("cannot allocate 1 TiB")
        return render_piece(notes, *args)

    monkeypatch.setattr(R, "render_piece", failing)
    manifest, _ = build(store, tables, "enc2")
    assert manifest["rejects"] == [{"piece_id": bad, "relpath": "gen-s6-00001.mid", "error_kind": "render_failed",
                                    "message": "MemoryError: cannot allocate 1 TiB"}]
    assert set(images_by_piece(store, manifest)) == set(ids.values()) - {bad}


# -- through the flow ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_api", "midipix_env")
def test_cli_build_lists_rejects_and_strict_fails(tmp_path, capsys):
    from flows.build import BuildParams, run_build
    from flows.cli import main
    from tasks.steps.loader import read_dataset_manifest

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=12, minutes=0.05)
    general_midi(corpus / "gm.mid", per_track=40)
    notes_file(corpus / "low.mid", range(0, 21))
    store = Store(str(tmp_path / "store"))
    # every piece in train: validation and test have no pieces at all
    args = ["build", "--source", str(corpus), "--store", store.uri, "--name", "c", "--split", "random",
            "--split-ratios", "1,0,0", "--encodings", "enc1,enc2,enc3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for enc in ("enc1", "enc2", "enc3"):
        manifest = read_dataset_manifest(store, SH.dataset_name("c", enc))
        assert kinds(manifest) == {"low.mid": "off_keyboard"}
        assert {s["split"] for s in manifest["shards"]} == {"train"}
        assert len(set(R.read_images_table(store, manifest["name"], manifest["version"])["piece_id"].to_pylist())) == 4
    assert out.count("left out low.mid: off_keyboard: all 21 notes lie outside pitches 21..108") == 3
    assert out.count("40 drum notes (MIDI channel 10) left out of the images") == 3
    assert main(["show", store.uri]) == 0
    assert capsys.readouterr().out.count("left out low.mid: off_keyboard:") == 3

    published = read_dataset_manifest(store, SH.dataset_name("c", "enc2"))["version"]
    state = run_build(BuildParams(source=str(corpus), store=store.uri, name="c", strict=True, encodings=["enc2"],
                                  roll={"pitch_lo": 24}), return_state=True)
    assert state.is_failed()
    message = str(state.message)
    assert "1 piece(s) left out of c.enc2: low.mid: off_keyboard: all 21 notes lie outside pitches 24..108" in message
    assert "build without --strict" in message and "recordings" not in message
    assert read_dataset_manifest(store, SH.dataset_name("c", "enc2"))["version"] == published


# -- enc1's tempo channel -----------------------------------------------------------------------------


def tempo_map_file(path: Path) -> Path:
    """Notes every half beat; no tempo at first (120 bpm), then 90 (on a note's tick), 150 (between
    notes), 120 again and 200 bpm."""
    conductor = [(960, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90))),
                 (2000, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(150))),
                 (3360, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))),
                 (4100, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(200)))]
    events = []
    for i in range(40):
        pitch = 48 + (5 * i) % 37
        events += [fx.on(240 * i, pitch, 70), fx.off(240 * i + 200, pitch)]
    return write_midi(path, conductor, events)


def mido_bpm_at(path: Path) -> dict[tuple[int, int], float]:
    """(pitch, onset tick) -> the bpm in force at that tick, from mido's own reading of the tempo events."""
    mid = mido.MidiFile(str(path))
    tempos = []
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
    out = {}
    for _, pitch, tick in mido_notes(path):
        before = [tempo for t, tempo in sorted(tempos) if t <= tick]
        out[(pitch, tick)] = mido.tempo2bpm(before[-1]) if before else 120.0
    return out


def test_enc1_draws_the_tempo_in_force_at_each_onset(tmp_path):
    path = tempo_map_file(folder(tmp_path) / "tempo.mid")
    store = Store(str(tmp_path / "store"))
    tables = publish_tables(store, tmp_path / "corpus")
    augment = AugmentConfig(transpositions=(3,))  # variants carry the tempo map too
    manifest, _ = build(store, tables, "enc1", augment=augment)
    cfg = RollConfig(encoding="enc1")
    ((pid, notes),) = table_notes(store, tables).items()
    bpm = mido_bpm_at(path)
    assert sorted(set(round(b) for b in bpm.values())) == [90, 120, 150, 200]
    start, _ = E.note_columns(notes["onset_s"], notes["offset_s"], cfg)
    windows = images_by_piece(store, manifest)[pid]
    assert {k for k, _, _ in windows} == {0, 3}
    checked = 0
    for k, ws, image in windows:
        for pitch, tick, col in zip(notes["pitch"], notes["onset_tick"], start):
            if ws <= col < ws + cfg.columns:
                row, c = int(pitch) + k - cfg.pitch_lo, int(col - ws)
                assert image[0, row, c] > 0  # the onset pixel
                assert image[3, row, c] == round(bpm[(int(pitch), int(tick))]), (pitch, tick)
                checked += 1
    assert checked == 2 * len(bpm) == 80

    # the kernel and its reference twin draw the same from the piece's tempo map
    tempos = T.load_tables(store, tables, ["tempos"])["tempos"]
    at = E.tempo_at(notes["onset_s"], tempos["time_s"].to_numpy(), tempos["bpm"].to_numpy())
    tempo = np.clip(np.rint(at), 0, 255).astype(np.uint8)
    _, stop = E.note_columns(notes["onset_s"], notes["offset_s"], cfg)
    n_win = len([w for w in windows if w[0] == 0])
    args = (notes["pitch"], notes["velocity"], notes["program"], tempo, start, stop, cfg.pitch_lo, cfg.hop_columns)
    kernel = np.zeros((n_win, *cfg.shape), np.uint8)
    reference = np.zeros_like(kernel)
    assert E.render_enc1_kernel(*args, kernel) == E.render_enc1_reference(*args, reference) == 0
    np.testing.assert_array_equal(kernel, reference)
    originals = sorted((ws, image) for k, ws, image in windows if k == 0)
    np.testing.assert_array_equal(kernel, np.stack([image for _, image in originals]))


def onset_tempos(store: Store, manifest: dict, tables: dict) -> set[int]:
    """The tempo channel's values at every onset pixel of a one-piece enc1 dataset."""
    cfg = RollConfig(encoding="enc1")
    ((pid, notes),) = table_notes(store, tables).items()
    start, _ = E.note_columns(notes["onset_s"], notes["offset_s"], cfg)
    out = set()
    for _, ws, image in images_by_piece(store, manifest)[pid]:
        inside = (start >= ws) & (start < ws + cfg.columns)
        out |= set(image[3, notes["pitch"][inside].astype(int) - cfg.pitch_lo, start[inside] - ws].tolist())
    return out


def test_changed_tempos_render_enc1_again_and_leave_enc2_alone(tmp_path):
    # the same file read by a changed reader (tables.code_version() differs): same notes, other tempos
    tempo_map_file(folder(tmp_path) / "tempo.mid")
    result = T.build_tables(_files(tmp_path / "corpus"), lambda f: read_file_bytes(f.uri), None, ALL_TRAIN)
    store = Store(str(tmp_path / "store"))
    T.write_table_set(store, TABLES, "v1-reader-a", result, {})
    tables_a = T.read_manifest(store, TABLES, "v1-reader-a")
    old = {enc: build(store, tables_a, enc)[0] for enc in ("enc1", "enc2")}
    assert onset_tempos(store, old["enc1"], tables_a) == {120, 90, 150, 200}
    for split, tempos in result.tables["tempos"].items():
        i = tempos.schema.get_field_index("bpm")
        result.tables["tempos"][split] = tempos.set_column(i, tempos.schema.field(i),
                                                           pa.array(tempos["bpm"].to_numpy() / 2))
    T.write_table_set(store, TABLES, "v1-reader-b", result, {})
    tables_b = T.read_manifest(store, TABLES, "v1-reader-b")
    new = {}
    for enc in ("enc1", "enc2"):
        previous_images = R.read_images_table(store, old[enc]["name"], old[enc]["version"])
        new[enc], stats = build(store, tables_b, enc, previous=old[enc], previous_images=previous_images)
        if enc == "enc1":  # the tempo map decides enc1's pixels: its shard is rendered again
            assert (stats.rendered_shards, stats.reused_shards) == (1, 0)
        else:  # and nothing of enc2's
            assert (stats.rendered_shards, stats.reused_shards) == (0, 1)
            assert new[enc]["shards"] == old[enc]["shards"]
    assert onset_tempos(store, new["enc1"], tables_b) == {120, 45, 75, 60, 100}  # 120 before the first event
