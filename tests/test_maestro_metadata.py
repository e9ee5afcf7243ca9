"""MAESTRO metadata: v2 JSON (records), v3 JSON (columns) and CSV must read to the same DataFrame."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.storage.fetch import MAESTRO_COLUMNS, find_maestro_metadata, read_maestro_metadata

SHARED_SUBSET = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "midi"
    / "maestro-v3.0.0"
    / "maestro-v3.0.0-subset.csv"
)

QUOTED_TITLE = 'Transcendental Etude No. 1 "Prelude"'
ROWS = [
    {
        "canonical_composer": "Franz Liszt",
        "canonical_title": QUOTED_TITLE,
        "split": "validation",
        "year": 2008,
        "midi_filename": "2008/MIDI-Unprocessed_04_R3_2008_01-07_ORIG_MID--AUDIO_04_R3_2008_wav--2.midi",
        "audio_filename": "2008/MIDI-Unprocessed_04_R3_2008_01-07_ORIG_MID--AUDIO_04_R3_2008_wav--2.wav",
        "duration": 53.936911875,
    },
    {
        "canonical_composer": "Frédéric Chopin",
        "canonical_title": 'Sonata No. 2 "Funeral March", Op. 35',
        "split": "train",
        "year": 2004,
        "midi_filename": "2004/chopin.midi",
        "audio_filename": "2004/chopin.wav",
        "duration": 540.25,
    },
    {
        "canonical_composer": "Alban Berg",
        "canonical_title": "NA",  # must stay a string, not become a missing value
        "split": "test",
        "year": 2018,
        "midi_filename": "2018/berg.midi",
        "audio_filename": "2018/berg.wav",
        "duration": 1.5,
    },
    {
        "canonical_composer": "Johann Sebastian Bach",
        "canonical_title": "Prelude and Fugue in E Major, WTC I, BWV 854",
        "split": "train",
        "year": 2013,
        "midi_filename": "2013/bach.midi",
        "audio_filename": "2013/bach.wav",
        "duration": 157.071157031,
    },
]
# File column order as in MAESTRO v3 (differs from the returned order on purpose).
FILE_COLUMNS = [
    "canonical_composer",
    "canonical_title",
    "split",
    "year",
    "midi_filename",
    "audio_filename",
    "duration",
]


def write_v2_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_v3_json(path: Path, rows: list[dict]) -> Path:
    # Row keys inserted in reverse so that "10"-before-"2" style string ordering would be caught.
    keys = [str(i) for i in range(len(rows))]
    data = {c: {k: rows[int(k)][c] for k in reversed(keys)} for c in FILE_COLUMNS}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FILE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def three_files(tmp_path):
    return (
        write_v2_json(tmp_path / "maestro-v2.0.0.json", ROWS),
        write_v3_json(tmp_path / "maestro-v3.0.0.json", ROWS),
        write_csv(tmp_path / "maestro-v3.0.0.csv", ROWS),
    )


def test_three_formats_read_identically(three_files):
    v2, v3, csv_path = three_files
    assert '\\"Prelude\\"' in v3.read_text(encoding="utf-8")  # JSON escapes the quote
    assert '""Prelude""' in csv_path.read_text(encoding="utf-8")  # CSV doubles it
    frames = [read_maestro_metadata(p) for p in three_files]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)
    df = frames[0]
    assert list(df.columns) == list(MAESTRO_COLUMNS)
    assert df["year"].dtype == "int64" and df["duration"].dtype == "float64"
    expected = [{c: r[c] for c in MAESTRO_COLUMNS} for r in ROWS]
    assert df.to_dict("records") == expected
    assert df.loc[0, "canonical_title"] == QUOTED_TITLE
    assert df.loc[2, "canonical_title"] == "NA"


def test_v3_rows_follow_integer_keys(tmp_path):
    rows = [dict(ROWS[3], midi_filename=f"2013/p{i}.midi", duration=float(i)) for i in range(12)]
    df = read_maestro_metadata(write_v3_json(tmp_path / "maestro-v3.0.0.json", rows))
    assert df["duration"].tolist() == [float(i) for i in range(12)]


def test_backslashes_become_slashes(tmp_path):
    rows = [dict(ROWS[0], midi_filename="2008\\a.midi", audio_filename="2008\\a.wav")]
    df = read_maestro_metadata(write_v2_json(tmp_path / "m.json", rows))
    assert df.loc[0, "midi_filename"] == "2008/a.midi"
    assert df.loc[0, "audio_filename"] == "2008/a.wav"


@pytest.mark.parametrize(
    "change",
    [
        {"midi_filename": "../outside.midi"},
        {"midi_filename": "/abs/x.midi"},
        {"split": "holdout"},
        {"year": "20x8"},
    ],
    ids=["dotdot", "absolute", "split", "year"],
)
def test_bad_values_are_refused(tmp_path, change):
    with pytest.raises(ValueError):
        read_maestro_metadata(write_csv(tmp_path / "m.csv", [dict(ROWS[0], **change)]))


def test_missing_column_is_refused(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "duration"} for r in ROWS]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(ValueError, match="duration"):
        read_maestro_metadata(path)


def test_find_prefers_newest_version_then_json(tmp_path, three_files):
    assert find_maestro_metadata(tmp_path) == tmp_path / "maestro-v3.0.0.json"
    (tmp_path / "maestro-v3.0.0.json").unlink()
    assert find_maestro_metadata(tmp_path) == tmp_path / "maestro-v3.0.0.csv"
    nested = tmp_path / "deep" / "maestro-v10.0.0"
    nested.mkdir(parents=True)
    write_csv(nested / "maestro-v10.0.0.csv", ROWS)  # numeric, not string, version order
    assert find_maestro_metadata(tmp_path) == nested / "maestro-v10.0.0.csv"


def test_find_returns_none_without_metadata(tmp_path):
    (tmp_path / "2018").mkdir()
    (tmp_path / "2018" / "a.midi").write_bytes(b"MThd")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    assert find_maestro_metadata(tmp_path) is None
    with pytest.raises(NotADirectoryError):
        find_maestro_metadata(tmp_path / "missing")


@pytest.mark.skipif(not SHARED_SUBSET.is_file(), reason="shared MAESTRO subset not present")
def test_real_subset_csv():
    folder = SHARED_SUBSET.parent
    assert find_maestro_metadata(folder) == SHARED_SUBSET
    df = read_maestro_metadata(SHARED_SUBSET)
    assert list(df.columns) == list(MAESTRO_COLUMNS)
    assert len(df) > 0
    assert set(df["split"]) <= {"train", "validation", "test"}
    assert QUOTED_TITLE in set(df["canonical_title"])
    assert (df["duration"] > 0).all()
    assert df["year"].between(2004, 2018).all()
    for rel in df["midi_filename"]:
        assert (folder / rel).is_file(), rel
