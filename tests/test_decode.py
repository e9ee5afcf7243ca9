"""Images back to music: dataset rows → MIDI and WAV, the CLI's decode / preview / pull."""

from __future__ import annotations

import numpy as np
import pytest

from storage_schemas.encodings import RollConfig
from tasks.steps import tables as T
from tasks.kernels.augment import AugmentConfig
from tasks.steps.decode import hilbert_to_audio, piece_images, rolls_to_midi
from tasks.kernels.rolls import from_windows, tempo_at, to_windows
from tasks.kernels.midi import read_midi
from tasks.steps.render import HilbertConfig, build_image_dataset, publish_dataset
from tasks.storage.sources import fingerprint, generate_corpus, list_files, read_file_bytes
from tasks.storage.store import Store


@pytest.fixture
def built(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=11, minutes=0.25)
    store = Store(str(tmp_path / "store"))
    files, _ = fingerprint(list_files(str(corpus)))
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), None, T.SplitConfig())
    version = T.version_id(files, {})
    T.write_table_set(store, "c", version, result, {})
    T.publish(store, "c", version)
    manifest = T.read_manifest(store, "c")
    notes = T.load_tables(store, manifest, ["notes"])["notes"].to_pandas()
    return store, manifest, notes


@pytest.mark.parametrize("encoding", ["enc1", "enc2", "enc3"])
def test_dataset_rows_decode_to_the_quantised_piece(built, encoding):
    store, manifest, notes = built
    m, _ = build_image_dataset(store, "c", manifest, encoding, augment=AugmentConfig())
    publish_dataset(store, m["name"], m["version"])
    pid = int(notes.piece_id.iloc[0])
    piece = notes[notes.piece_id == pid]
    images, starts, _ = piece_images(store, m["name"], pid)
    cfg = RollConfig(encoding=encoding)
    # what the renderer drew, decoded straight from a fresh rendering of the notes (and tempos) table
    tempos = T.load_tables(store, manifest, ["tempos"])["tempos"].to_pandas()
    tempos = tempos[tempos.piece_id == pid]
    bpm = tempo_at(piece.onset_s.to_numpy(), tempos.time_s.to_numpy(), tempos.bpm.to_numpy())
    direct = to_windows(piece.pitch.to_numpy(), piece.velocity.to_numpy(), piece.program.to_numpy(),
                        piece.onset_s.to_numpy(), piece.offset_s.to_numpy(), cfg, tempo_bpm=bpm)
    assert np.array_equal(images, direct.images)
    want = from_windows(direct.images, cfg, starts=direct.starts)
    data, n = rolls_to_midi(images, cfg, starts)
    back = read_midi(data)
    assert n == len(want) == back.n_notes
    order = np.lexsort((want.pitch, want.start_col))
    assert np.array_equal(back.pitch, want.pitch[order])
    np.testing.assert_allclose(back.onset_s, want.onset_s[order], atol=1e-3)
    np.testing.assert_allclose(back.offset_s, want.offset_s[order], atol=1e-3)
    if encoding != "enc3":
        assert np.array_equal(back.velocity, want.velocity[order])


def test_hilbert_rows_decode_to_the_synthesised_audio(built):
    from tasks.kernels.synth import render

    store, manifest, notes = built
    cfg = HilbertConfig(order=6, sample_rate=8000)
    m, _ = build_image_dataset(store, "c", manifest, cfg, augment=AugmentConfig())
    publish_dataset(store, m["name"], m["version"])
    pid = int(notes.piece_id.iloc[0])
    piece = notes[notes.piece_id == pid]
    images, _, _ = piece_images(store, m["name"], pid)
    audio = hilbert_to_audio(images, cfg)
    want = render(piece.pitch.to_numpy(), piece.velocity.to_numpy(), piece.onset_s.to_numpy(),
                  piece.offset_pedal_s.to_numpy(), sample_rate=8000)
    n = min(len(want), len(audio))
    assert len(audio) >= len(want) and len(audio) - len(want) < 4 ** 6
    # float16 pixels in [0, 1]: about 3 decimal digits
    np.testing.assert_allclose(audio[:n], want[:n], atol=2e-3)


def test_cli_decode_preview_and_pull(built, tmp_path):
    from flows.cli import main

    store, manifest, notes = built
    m, _ = build_image_dataset(store, "c", manifest, "enc2", augment=AugmentConfig())
    publish_dataset(store, m["name"], m["version"])
    pid = int(notes.piece_id.iloc[0])
    assert main(["decode", "--store", store.uri, "--dataset", "c.enc2", "--piece", str(pid),
                 "--out", str(tmp_path / "out" / "piece")]) == 0
    assert read_midi((tmp_path / "out" / "piece.mid").read_bytes()).n_notes > 0
    images, _, _ = piece_images(store, "c.enc2", pid)
    np.save(tmp_path / "one.npy", images[0])
    assert main(["decode", str(tmp_path / "one.npy"), "--encoding", "enc2", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one.mid").stat().st_size > 0
    assert main(["preview", "--store", store.uri, "--dataset", "c.enc2", "-n", "2", "--out",
                 str(tmp_path / "png")]) == 0
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert main(["pull", store.uri, "c.enc2", "--to", str(tmp_path / "cache")]) == 0
    assert Store(str(tmp_path / "cache")).exists("datasets/c.enc2/CURRENT")


def test_cli_decodes_and_previews_a_dataset_of_another_window_and_keyboard(built, tmp_path):
    """Columns, pitch range and resolution come from the dataset's config, not the paper's defaults."""
    from flows.cli import main

    store, manifest, notes = built
    cfg = RollConfig("enc2", columns=64, pitch_lo=36, pitch_hi=96, resolution_s=0.1)
    m, _ = build_image_dataset(store, "c", manifest, cfg, augment=AugmentConfig())
    publish_dataset(store, m["name"], m["version"])
    pid = int(notes.piece_id.iloc[0])
    assert main(["decode", "--store", store.uri, "--dataset", "c.enc2", "--piece", str(pid),
                 "--out", str(tmp_path / "piece")]) == 0
    back = read_midi((tmp_path / "piece.mid").read_bytes())
    piece = notes[(notes.piece_id == pid) & notes.pitch.between(36, 96)]
    assert back.n_notes == len(piece) and back.pitch.min() >= 36 and back.pitch.max() <= 96
    assert main(["preview", "--store", store.uri, "--dataset", "c.enc2", "-n", "1", "--out", str(tmp_path / "png")]) == 0
    images, _, _ = piece_images(store, "c.enc2", pid)
    assert images.shape[1:] == (3, 61, 64)
    np.save(tmp_path / "one.npy", images[0])
    assert main(["preview", str(tmp_path / "one.npy"), "--encoding", "enc2", "--out", str(tmp_path / "png1")]) == 0
    assert main(["decode", str(tmp_path / "one.npy"), "--encoding", "enc2", "--out", str(tmp_path / "one")]) == 0
    assert read_midi((tmp_path / "one.mid").read_bytes()).n_notes > 0
