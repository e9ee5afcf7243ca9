"""The reference grid: a MAESTRO subset that keeps the published split, and the build-train-evaluate flow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tasks.storage.sources import generate_corpus, subset_corpus


def fake_maestro(root: Path, per_split: dict[str, int]) -> Path:
    """A folder laid out like MAESTRO: year folders of .midi files and a metadata CSV naming their split."""
    n = sum(per_split.values())
    files = generate_corpus(root / "gen", n, seed=3, minutes=0.05)
    rows, i = [], 0
    for split, count in per_split.items():
        for _ in range(count):
            rel = f"{2004 + i % 3}/piece-{i:03d}.midi"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(files[i].read_bytes())
            rows.append({"canonical_composer": "c", "canonical_title": f"t{i}", "split": split, "year": 2004 + i % 3,
                         "midi_filename": rel, "audio_filename": rel.replace(".midi", ".wav"), "duration": 3.0})
            i += 1
    rows.append({**rows[0], "midi_filename": "2004/missing.midi"})  # listed, absent: never chosen
    with open(root / "maestro-v2.0.0.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_subset_keeps_the_split_proportions_and_links_the_files(tmp_path):
    src = fake_maestro(tmp_path / "maestro", {"train": 14, "validation": 4, "test": 2})
    dest = subset_corpus(src, 10, tmp_path / "cache" / "subsets" / "m-10", seed=1)
    with open(dest / "maestro-v2.0.0.csv", newline="") as fh:
        chosen = list(csv.DictReader(fh))
    splits = [r["split"] for r in chosen]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (7, 2, 1)
    for r in chosen:
        link = dest / r["midi_filename"]
        assert link.is_symlink() and link.read_bytes() == (src / r["midi_filename"]).read_bytes()
    assert "2004/missing.midi" not in {r["midi_filename"] for r in chosen}
    again = subset_corpus(src, 10, tmp_path / "other", seed=1)
    with open(again / "maestro-v2.0.0.csv", newline="") as fh:
        assert [r["midi_filename"] for r in csv.DictReader(fh)] == [r["midi_filename"] for r in chosen]  # seeded
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_subset_refuses_a_folder_without_metadata_in_one_line(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="no MAESTRO metadata"):
        subset_corpus(tmp_path / "x", 3, tmp_path / "out")
    with pytest.raises(ValueError, match="pieces must be >= 1"):
        subset_corpus(fake_maestro(tmp_path / "m", {"train": 2}), 0, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api", "midipix_env")
def test_grid_builds_trains_within_the_budget_and_evaluates(tmp_path, capsys):
    from flows.cli import main

    src = fake_maestro(tmp_path / "maestro", {"train": 6, "validation": 2, "test": 2})
    out = tmp_path / "report"
    code = main(["grid", "--source", str(src), "--pieces", "10", "--store", str(tmp_path / "store"),
                 "--models", "lstm,dcgan", "--encodings", "enc3", "--budget", "1", "--batch-size", "4",
                 "--set", "hidden=8", "--set", "conv_channels=[8,4,2]", "--max-windows", "20", "--free-windows", "4",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "report.json").read_text())
    assert {r["model"] for r in rows if r["kind"] == "run"} == {"lstm", "dcgan"}
    assert {r["encoding"] for r in rows} == {"enc3"}
    for history in (tmp_path / "store" / "models").glob("*/history.json"):
        entries = json.loads(history.read_text())["history"]
        assert sum(e["train_seconds"] for e in entries[:-1]) < 1.0  # the budget ended the run
    assert "report.html" in capsys.readouterr().out
