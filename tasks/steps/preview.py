"""Pictures of rolls a person wants to look at: pitch axis labelled, onsets told apart from sustain."""

from __future__ import annotations

import base64
import io

import numpy as np

from storage_schemas.encodings import ONSET, RollConfig, config_from_dict
from tasks.storage.store import Store

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def roll_rgb(image: np.ndarray, config: RollConfig) -> np.ndarray:
    """An (rows, columns, 3) float picture of one roll rendered under ``config``, high notes on top.

    Sustained columns are blue with brightness from velocity (when the encoding has it), onset pixels
    orange; an encoding that paints only onset pixels with a length (enc1) draws each note's length from
    its onset as a faint bar. A state channel is painted as the MIDI decoder reads it
    (:func:`tasks.kernels.rolls.decode_runs_kernel`): every non-zero pixel sounds, and the first pixel of a
    run of them, or an ``ONSET`` pixel, starts a note; off-level values (neither ``ONSET`` nor ``SUSTAIN``)
    included.
    """
    rows, cols = image.shape[1], image.shape[2]
    rgb = np.ones((rows, cols, 3))
    state = image[0]
    names = config.spec.channel_names
    vel = image[names.index("velocity")] / 127.0 if "velocity" in names else np.ones_like(state, dtype=float)
    if names[0] == "length":
        for r, c in zip(*np.nonzero(state)):
            end = min(cols, c + int(state[r, c]))
            rgb[r, c:end] = (0.75, 0.82, 0.95)
        onset = state > 0
        sustain = np.zeros_like(onset)
    else:
        lit = state != 0
        before = np.zeros_like(lit)
        before[:, 1:] = lit[:, :-1]
        onset = lit & (~before | (state == ONSET))  # where the decoder starts a note
        sustain = lit & ~onset
    shade = 0.35 + 0.65 * vel
    rgb[sustain] = np.stack([0.15 * shade, 0.35 * shade, 0.9 * shade], axis=-1)[sustain]
    rgb[onset] = (0.95, 0.45, 0.05)
    return rgb[::-1]


def roll_png(image: np.ndarray, config: RollConfig, start_s: float = 0.0, title: str | None = None) -> bytes:
    """PNG bytes of one roll rendered under ``config``, with labelled axes (pitch names, seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if image.shape != config.shape:
        raise ValueError(f"a {config.encoding} image of {config.rows} x {config.columns} has shape {config.shape}, "
                         f"got {image.shape}")
    rows, cols = image.shape[1], image.shape[2]
    pitch_lo, resolution_s = config.pitch_lo, config.resolution_s
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    ax.imshow(roll_rgb(image, config), aspect="auto", interpolation="nearest",
              extent=(start_s, start_s + cols * resolution_s, pitch_lo - 0.5, pitch_lo + rows - 0.5))
    ticks = [p for p in range(pitch_lo, pitch_lo + rows) if p % 12 == 0]
    ax.set_yticks(ticks, [note_name(p) for p in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    ax.set_title(title or f"{config.encoding}: orange = onset, blue = sustained (darker = softer)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def dataset_previews(store: Store, name: str, n: int = 3, split: str | None = None) -> list[tuple[str, bytes]]:
    """PNGs of the ``n`` busiest windows of the first shard of a dataset: ``(caption, png)``."""
    from tasks.steps.loader import read_dataset_manifest
    from tasks.storage.shards import read_shard

    manifest = read_dataset_manifest(store, name)
    shards = [s for s in manifest["shards"] if s["rows"] and (split is None or s["split"] == split)]
    if not shards:
        return []
    table = read_shard(store.read_bytes(shards[0]["key"]))
    images = table.column("image").combine_chunks().to_numpy_ndarray()
    busiest = np.argsort(-(images[:, 0] > 0).reshape(len(images), -1).sum(axis=1), kind="stable")[:n]
    cfg = config_from_dict(manifest["config"])
    out = []
    for i in sorted(busiest):
        pid = table.column("piece_id")[int(i)].as_py()
        start = table.column("window_start")[int(i)].as_py()
        caption = f"{name} piece {pid} window at column {start}"
        out.append((caption, roll_png(images[i], cfg, start * cfg.resolution_s, caption)))
    return out


def preview_markdown(store: Store, names: list[str], per_dataset: int = 2) -> str:
    """Markdown with inline PNG previews (data URIs) of each dataset, for a Prefect artifact."""
    parts = []
    for name in names:
        for caption, png in dataset_previews(store, name, per_dataset):
            b64 = base64.b64encode(png).decode()
            parts.append(f"**{caption}**\n\n![{caption}](data:image/png;base64,{b64})\n")
    return "\n".join(parts)
