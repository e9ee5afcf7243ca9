"""Images back to music: rolls → MIDI (midiutil, as the paper), Hilbert images → WAV (soundfile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storage_schemas import shards as SH
from storage_schemas.encodings import HilbertConfig, ImageConfig, RollConfig
from tasks.storage.files import atomic_write
from tasks.storage.store import Store


def rolls_to_midi(images: np.ndarray, config: RollConfig, starts: np.ndarray | None = None) -> tuple[bytes, int]:
    """MIDI bytes of a piece's roll windows ``(N, C, rows, columns)`` (or one ``(C, rows, columns)`` image).

    Returns ``(midi bytes, number of notes)``. Windows are stitched by their start columns (default:
    consecutive); velocity and program come from the image where the encoding has them. Images without
    notes give a valid MIDI file without notes.
    """
    from tasks.kernels.rolls import from_windows
    from tasks.kernels.midiwrite import notes_to_midi

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    notes = from_windows(images, config, starts=starts)
    programs = np.bincount(notes.program, minlength=128)
    data = notes_to_midi(notes.pitch, notes.velocity, notes.onset_s, notes.offset_s, program=int(programs.argmax()))
    return data, len(notes)


def hilbert_to_audio(images: np.ndarray, config: HilbertConfig) -> np.ndarray:
    """Mono float32 audio of Hilbert images ``(N, 1, side, side)`` or ``(N, side, side)``."""
    from tasks.kernels.hilbert import images_to_audio

    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[:, 0]
    if images.ndim == 2:
        images = images[None]
    return images_to_audio(images, order=config.order)


def piece_images(store: Store, name: str, piece_id: int, transposition: int = 0, noise_seed: int = -1
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """All windows of one piece's variant in a dataset, in time order: ``(images, starts, manifest)``."""
    import pyarrow.compute as pc

    from tasks.steps.loader import read_dataset_manifest
    from tasks.steps.render import read_images_table
    from tasks.storage.shards import shard_images

    manifest = read_dataset_manifest(store, name)
    rows = read_images_table(store, name, manifest["version"])
    mask = pc.and_(pc.and_(pc.equal(rows["piece_id"], piece_id), pc.equal(rows["transposition"], transposition)),
                   pc.equal(rows["noise_seed"], noise_seed))
    rows = rows.filter(mask).sort_by("window_start")
    if rows.num_rows == 0:
        raise KeyError(f"piece {piece_id} (transposition {transposition}, noise {noise_seed}) is not in {name}")
    images, starts = [], []
    shards: dict[str, np.ndarray] = {}
    for r in rows.to_pylist():
        if r["shard"] not in shards:
            shards[r["shard"]] = shard_images(store.read_bytes(SH.shard_key(name, r["shard"])))
        images.append(shards[r["shard"]][r["row"]])
        starts.append(r["window_start"])
    return np.stack(images), np.asarray(starts, np.int64), manifest


def decode_to_files(images: np.ndarray, config: ImageConfig, out: Path, starts: np.ndarray | None = None
                    ) -> list[Path]:
    """Write ``out.mid`` (rolls) or ``out.wav`` (Hilbert images) of images rendered under ``config``, each
    whole or not at all; returns the paths written."""
    out = Path(out)
    if config.kind == "audio":
        from tasks.kernels.wav import wav_bytes

        audio = hilbert_to_audio(images, config)
        return [atomic_write(out.with_suffix(".wav"), wav_bytes(audio, config.sample_rate))]
    data, _ = rolls_to_midi(images, config, starts)
    return [atomic_write(out.with_suffix(".mid"), data)]
