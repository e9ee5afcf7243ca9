"""Table set → image datasets: render every piece's windows, pack them into shards, write a version.

Pieces of one split are taken in sha256 order and grouped into shards by content-defined boundaries
(``tasks.storage.shards.group_pieces``). A shard's *recipe* — its pieces' hashes, the encoding and augmentation
configs, the rendering code version — decides its bytes; a shard whose recipe the previous version
already holds is reused as it is, so adding one piece renders only the shard that piece falls in.

Audio (Hilbert) images take a piece's own recording when it has one (``HilbertConfig.audio``: ``auto``,
``recorded`` or ``synth``); the recording's hash is part of its shard's recipe, so a changed sound file
renders that shard again. A piece whose recording is missing (``recorded``) or unreadable is left out
and listed in the manifest's ``rejects``; the rest of the dataset goes on. So is a piece that would give
no image worth keeping (:func:`unrenderable`) or whose rendering fails. Drum notes (MIDI channel 10)
are drawn on no roll and given to no synthesizer, only counted. enc1 draws each piece's tempo map (the
``tempos`` table), which therefore enters its shard recipe.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_schemas import shards as SH
from storage_schemas import tables as S
from storage_schemas.encodings import AugmentConfig, HilbertConfig, ImageConfig, RollConfig, get_encoding
from tasks.kernels.augment import apply_variant, plan
from tasks.steps import tables as T
from tasks.storage import publish as P
from tasks.storage.recordings import AudioError
from tasks.storage.shards import encode_shard, group_pieces, recipe_key
from tasks.storage.store import Store

NOTE_COLUMNS = ["piece_id", "pitch", "velocity", "program", "onset_s", "offset_s", "offset_pedal_s"]


def code_version() -> str:
    """Hash of the code that decides an image's pixels."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for mod in ("tasks/steps/render.py", "tasks/kernels/rolls.py", "tasks/kernels/simd.py", "tasks/kernels/augment.py",
                "tasks/kernels/hilbert.py", "tasks/kernels/synth.py", "tasks/kernels/resample.py",
                "tasks/storage/shards.py", "tasks/storage/recordings.py", "storage_schemas/encodings.py",
                "storage_schemas/shards.py"):
        h.update((root / mod).read_bytes())
    return h.hexdigest()[:16]


def image_config(encoding: str, roll: RollConfig | None = None, hilbert: HilbertConfig | None = None) -> ImageConfig:
    """The config ``encoding`` is rendered under: ``roll``'s or ``hilbert``'s settings (whichever its kind
    takes; default the defaults) with the encoding's own name and fixed fields."""
    enc = get_encoding(encoding)
    return enc.config(roll if enc.kind == "roll" else hilbert)


def dataset_version(tables_version: str, config: ImageConfig, augment: AugmentConfig) -> str:
    doc = {"tables": tables_version, "config": config.to_dict(), "augment": augment.to_dict(), "code": code_version(),
           "schema": SH.SHARDS_SCHEMA_VERSION}
    return f"v{SH.SHARDS_SCHEMA_VERSION}-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


# -- one piece ----------------------------------------------------------------------------------------

def render_piece(notes: dict[str, np.ndarray], config: ImageConfig, k: int, seed: int | None, augment: AugmentConfig,
                 tempo: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Images of one variant of one piece: ``(images, window starts, notes lost)``; None if skipped.

    The original (``k == 0``, no noise) is drawn as it is: notes outside the roll's pitch range are
    not drawn and count as lost. A roll's variant is made of the notes the roll shows, and skipped
    when its shift would push one of them off; an audio variant is skipped when any note would leave
    the piano's range. ``tempo`` is the piece's tempo map ``(time_s, bpm)`` (the ``tempos`` table):
    enc1 draws the tempo in force at each onset (120 bpm without one).
    """
    hilbert = config.kind == "audio"
    if k == 0 and seed is None:
        cols, n_lost = notes, 0
    else:
        from tasks.kernels.augment import PIANO_HI, PIANO_LO

        pitch = notes["pitch"]
        lo, hi = (PIANO_LO, PIANO_HI) if hilbert else (config.pitch_lo, config.pitch_hi)
        shown = np.arange(pitch.shape[0]) if hilbert else np.flatnonzero((pitch >= lo) & (pitch <= hi))
        new_pitch, keep, n_lost, _ = apply_variant(pitch[shown], k, seed, augment, lo=lo, hi=hi)
        if new_pitch is None:
            return None  # the transposition would push notes off the keyboard: skipped, never wrapped
        idx = shown[keep]
        cols = {c: v[idx] for c, v in notes.items()}
        cols["pitch"] = np.asarray(new_pitch, np.uint8)
        n_lost += pitch.shape[0] - shown.shape[0]
    if hilbert:
        return (*_hilbert_images(cols, config), n_lost)
    from tasks.kernels.rolls import tempo_at, to_windows

    bpm = None if tempo is None else tempo_at(cols["onset_s"], *tempo)
    w = to_windows(cols["pitch"], cols["velocity"], cols["program"], cols["onset_s"], cols["offset_s"], config,
                   offset_pedal_s=cols["offset_pedal_s"], tempo_bpm=bpm)
    return w.images, w.starts, n_lost + w.n_skipped


def unrenderable(notes: dict[str, np.ndarray], drum_notes: int, config: ImageConfig) -> tuple[str, str] | None:
    """Why a piece would give no image worth keeping, as ``(error kind, message)``; None if it gives one.

    ``notes`` are the piece's notes less its drum notes (``drum_notes`` of them): a piece with no other
    notes, a roll whose notes all lie outside its pitch range, or (pretty_midi convention) whose every
    note is shorter than one column would be silence.
    """
    pitch = notes["pitch"]
    if pitch.shape[0] == 0:
        if drum_notes:
            return "drums_only", f"all {drum_notes} notes are drum notes (MIDI channel 10), which no image draws"
        return "no_notes", "the table set holds no notes for this piece"
    if config.kind == "audio":
        return None
    cfg = config  # a RollConfig from here on
    shown = (pitch >= cfg.pitch_lo) & (pitch <= cfg.pitch_hi)
    if not shown.any():
        return "off_keyboard", (f"all {pitch.shape[0]} notes lie outside pitches {cfg.pitch_lo}..{cfg.pitch_hi} "
                                f"(lowest {int(pitch.min())}, highest {int(pitch.max())}); widen --pitch-range "
                                f"to draw them")
    if cfg.convention == "pretty_midi":
        from tasks.kernels.rolls import note_columns

        offsets = notes["offset_pedal_s"] if cfg.pedal else notes["offset_s"]
        start, stop = note_columns(notes["onset_s"][shown], offsets[shown], cfg)
        if not (stop > start).any():
            return "too_short", (f"every note is shorter than one column ({cfg.resolution_s} s), and the "
                                 f"pretty_midi convention draws no such note")
    return None


def _hilbert_images(cols: dict[str, np.ndarray], config: HilbertConfig) -> tuple[np.ndarray, np.ndarray]:
    from tasks.kernels.synth import render

    offsets = cols["offset_pedal_s"] if config.pedal else cols["offset_s"]
    audio = render(cols["pitch"], cols["velocity"], cols["onset_s"], offsets, sample_rate=config.sample_rate,
                   timbre=config.timbre)
    return audio_images(audio, config)


def audio_images(audio: np.ndarray, config: HilbertConfig) -> tuple[np.ndarray, np.ndarray]:
    """A mono signal at ``config.sample_rate`` as ``(images (N, 1, side, side) float16, block starts)``."""
    from tasks.kernels.hilbert import audio_to_images

    images, _ = audio_to_images(audio, order=config.order, dtype=np.float16)
    images = images.reshape((images.shape[0], 1) + images.shape[1:])
    return images, np.arange(images.shape[0], dtype=np.int64)


def audio_plan(piece: dict, config: HilbertConfig) -> str:
    """Where a piece's sound comes from under ``config``: ``"recorded"``, ``"synth"`` or ``"missing"``."""
    mode = config.audio
    if mode == "synth":
        return "synth"
    if piece.get("audio_source"):
        return "recorded"
    return "synth" if mode == "auto" else "missing"


def recording_images(piece: dict, config: HilbertConfig) -> tuple[np.ndarray, np.ndarray]:
    """Images of a piece's recording (read, folded to mono, resampled); raises :class:`AudioError`."""
    from tasks.storage.recordings import read_recording

    audio = read_recording(piece["audio_source"], config.sample_rate)
    return audio_images(audio, config)


def _reject(piece: dict, kind: str, message: str) -> dict:
    """A piece left out of a dataset, as listed under the manifest's ``rejects``."""
    return {"piece_id": piece["piece_id"], "relpath": piece["relpath"], "error_kind": kind, "message": message}


def _audio_reject(piece: dict, kind: str, message: str) -> dict:
    return {**_reject(piece, kind, message), "audio_source": piece.get("audio_source"),
            "audio_sha256": piece.get("audio_sha256")}


# -- a whole dataset ----------------------------------------------------------------------------------

@dataclass
class RenderStats:
    rendered_shards: int = 0
    reused_shards: int = 0
    rendered_pieces: int = 0
    images: int = 0
    skipped_variants: int = 0
    lost_notes: int = 0
    recorded_pieces: int = 0  # audio datasets: pieces whose images come from their recording
    synth_pieces: int = 0  # … from the synthesizer
    drum_notes: int = 0  # notes on the drum channel of the pieces drawn from their notes: not drawn
    rejects: list[dict] = field(default_factory=list)  # pieces left out, as in the manifest's "rejects"


DRUM_CHANNEL = 9  # MIDI channel 10, General MIDI's percussion: a note number there names a drum, not a pitch


def _piece_rows(pid: np.ndarray) -> tuple[np.ndarray | None, dict[int, tuple[int, int]]]:
    """Row order grouping a table's pieces (None: already grouped) and each piece's row range in it."""
    order = None
    if pid.shape[0] and np.count_nonzero(np.diff(pid)) + 1 != np.unique(pid).shape[0]:
        order = np.argsort(pid, kind="stable")  # not grouped (a table written otherwise): group it
        pid = pid[order]
    bounds = np.flatnonzero(np.diff(pid)) + 1
    starts = np.concatenate(([0], bounds))
    stops = np.concatenate((bounds, [pid.shape[0]]))
    return order, {int(pid[a]): (int(a), int(b)) for a, b in zip(starts, stops) if b > a}


def _load_notes(store: Store, tables_manifest: dict
                ) -> tuple[pa.Table, dict[int, tuple[int, int]], dict[int, int]]:
    """The ``notes`` table less its drum notes, each piece's rows in it, and each piece's drum notes.

    Drum notes (``DRUM_CHANNEL``) are drawn on no roll and given to no synthesizer: they are counted.
    """
    parts = [pq.read_table(io.BytesIO(store.read_bytes(rec["key"])), columns=NOTE_COLUMNS + ["channel"])
             for rec in T.table_files(tables_manifest, "notes")]
    notes = pa.concat_tables(parts)
    drum = pc.equal(notes.column("channel"), DRUM_CHANNEL)
    drums = {}
    if pc.any(drum).as_py():
        ids, counts = np.unique(notes.column("piece_id").filter(drum).to_numpy(), return_counts=True)
        drums = dict(zip(ids.tolist(), counts.tolist()))
        notes = notes.filter(pc.invert(drum))
    notes = notes.drop_columns(["channel"])
    order, slices = _piece_rows(notes.column("piece_id").to_numpy())  # each piece's rows are contiguous
    if order is not None:
        notes = notes.take(pa.array(order))
    return notes, slices, drums


def _load_tempos(store: Store, tables_manifest: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each piece's tempo map ``(time_s, bpm)`` from the ``tempos`` table, in the table's (tick) order."""
    parts = [pq.read_table(io.BytesIO(store.read_bytes(rec["key"])), columns=["piece_id", "time_s", "bpm"])
             for rec in T.table_files(tables_manifest, "tempos")]
    if not parts:
        return {}
    tempos = pa.concat_tables(parts)
    order, slices = _piece_rows(tempos.column("piece_id").to_numpy())
    time_s, bpm = tempos.column("time_s").to_numpy(), tempos.column("bpm").to_numpy()
    if order is not None:
        time_s, bpm = time_s[order], bpm[order]
    return {p: (time_s[a:b], bpm[a:b]) for p, (a, b) in slices.items()}


def _load_pieces(store: Store, tables_manifest: dict) -> list[dict]:
    rows = []
    for split in S.SPLITS:
        for rec in T.table_files(tables_manifest, "pieces", split):
            f = pq.ParquetFile(io.BytesIO(store.read_bytes(rec["key"])))
            # table sets of schema version 1 have no audio columns: their pieces have no recording
            audio = [c for c in S.AUDIO_COLUMNS if c in f.schema_arrow.names]
            t = f.read(columns=["piece_id", "sha256", "relpath"] + audio)
            rows += [{**dict.fromkeys(S.AUDIO_COLUMNS), **r, "split": split} for r in t.to_pylist()]
    return rows


def build_image_dataset(store: Store, tables_name: str, tables_manifest: dict, config: ImageConfig | str,
                        augment: AugmentConfig = AugmentConfig(), previous: dict | None = None,
                        previous_images: pa.Table | None = None, workers: int = 2,
                        progress: Callable[[int, int], None] | None = None) -> tuple[dict, RenderStats]:
    """Render, shard and write one dataset version (unpublished); returns its manifest and what it did.

    ``config`` is the dataset's image config (an encoding's name alone takes that encoding's defaults).
    """
    config = get_encoding(config).config() if isinstance(config, str) else config
    name = SH.dataset_name(tables_name, config.encoding)
    version = dataset_version(tables_manifest["version"], config, augment)
    code = code_version()
    pieces = _load_pieces(store, tables_manifest)
    notes, slices, drums = _load_notes(store, tables_manifest)
    columns = {c: notes.column(c).to_numpy() for c in NOTE_COLUMNS[1:]}
    draws_tempo = "tempo" in config.spec.channel_names  # enc1: the tempo map decides pixels, so its recipe
    tempos = _load_tempos(store, tables_manifest) if draws_tempo else {}
    reuse = ({s["recipe"]: s for s in previous.get("shards", []) + previous.get("empty_groups", [])}
             if previous else {})
    if previous is not None and previous.get("code_version") != code:
        reuse = {}

    def notes_digest(piece_id: int) -> str:
        a, b = slices.get(piece_id, (0, 0))
        h = hashlib.sha256()
        for c in NOTE_COLUMNS[1:]:
            h.update(np.ascontiguousarray(columns[c][a:b]).tobytes())
        return h.hexdigest()[:16]

    def tempo_digest(piece_id: int) -> str:
        times, bpm = tempos.get(piece_id, (np.zeros(0), np.zeros(0)))
        return hashlib.sha256(np.ascontiguousarray(times).tobytes() + np.ascontiguousarray(bpm).tobytes()
                              ).hexdigest()[:16]

    hilbert = config.kind == "audio"

    def audio_key(p: dict) -> str:
        # audio images depend on where the sound comes from: a recording enters by its bytes' hash
        source = audio_plan(p, config)
        return f"recorded:{p['audio_sha256']}" if source == "recorded" else source

    jobs = []
    for split in S.SPLITS:
        mine = sorted((p for p in pieces if p["split"] == split), key=lambda p: p["sha256"])
        for group in group_pieces([p["sha256"] for p in mine]):
            members = [mine[i] for i in group]
            # a piece enters the recipe by the notes the table set holds for it, not only its file's hash:
            # a changed reader gives the same file other notes, and its shard must be rendered again
            keys = [f"{p['sha256']}:{notes_digest(p['piece_id'])}"
                    + (f":{audio_key(p)}" if hilbert else "")
                    + (f":{tempo_digest(p['piece_id'])}" if draws_tempo else "") for p in members]
            recipe = recipe_key([json.dumps(config.to_dict(), sort_keys=True),
                                 json.dumps(augment.to_dict(), sort_keys=True), code, split] + keys)
            jobs.append((split, members, recipe))

    stats = RenderStats()

    def run(job):
        split, members, recipe = job
        if recipe in reuse:
            return split, recipe, reuse[recipe], None, None, 0, 0
        imgs, meta, labels, skipped, lost, drum_notes = [], [], [], 0, 0, 0
        rejects, sources = [], {"recorded": 0, "synth": 0}
        for p in members:
            variants = plan(augment, split, p["piece_id"])
            source = audio_plan(p, config) if hilbert else None
            if source == "missing":
                rejects.append(_audio_reject(p, "audio_missing", "audio='recorded' but no sound file with the "
                                             "stem of this MIDI file lies next to it"))
                continue
            if source == "recorded":
                try:
                    images, starts = recording_images(p, config)
                except AudioError as e:
                    rejects.append(_audio_reject(p, e.kind, f"{p['audio_source']}: {e.message}"))
                    continue
                # a recording cannot be transposed or given pitch noise: only the original is rendered
                outs = [(0, None, images, starts, 0)]
                skipped += len(variants) - 1
            else:
                a, b = slices.get(p["piece_id"], (0, 0))
                piece_notes = {c: v[a:b] for c, v in columns.items()}
                why = unrenderable(piece_notes, drums.get(p["piece_id"], 0), config)
                if why is not None:
                    rejects.append(_reject(p, *why))
                    continue
                try:
                    outs = [(k, seed, render_piece(piece_notes, config, k, seed, augment, tempos.get(p["piece_id"])))
                            for k, seed in variants]
                except Exception as e:  # one piece never fails a dataset: it is left out, and says why
                    rejects.append(_reject(p, "render_failed", f"{type(e).__name__}: {e}"))
                    continue
                skipped += sum(out is None for _, _, out in outs)
                outs = [(k, seed, *out) for k, seed, out in outs if out is not None]
                drum_notes += drums.get(p["piece_id"], 0)
            if source is not None:
                sources[source] += 1
            for k, seed, images, starts, n_lost in outs:
                lost += n_lost
                n = images.shape[0]
                imgs.append(images)
                labels += [source] * n
                meta.append((np.full(n, p["piece_id"], np.int64), starts.astype(np.int32), np.full(n, k, np.int8),
                             np.full(n, -1 if seed is None else seed, np.int64)))
        images = np.concatenate(imgs) if imgs else np.zeros((0,) + config.shape, config.spec.dtype)
        cols = [np.concatenate([m[i] for m in meta]) if meta else np.zeros(0) for i in range(4)]
        # carried with the group's record: a reused shard brings its pieces' rejects (and sources) along
        rec = {"split": split, "rows": int(images.shape[0]), "recipe": recipe, "pieces": len(members),
               "rejects": rejects, "drum_notes": drum_notes}
        if hilbert:
            rec["audio"] = sources
        if images.shape[0] == 0:
            # every piece of the group was left out: no shard (readers expect shards with rows), only the
            # record, so that a later build can reuse it and its rejects stay listed
            return split, recipe, rec, cols, labels, skipped, lost
        data = encode_shard(images, *cols)
        sha = hashlib.sha256(data).hexdigest()
        store.put_if_absent(SH.shard_key(name, sha), data)
        rec = {"sha256": sha, "key": SH.shard_key(name, sha), **rec, "bytes": len(data),
               "raw_bytes": int(images.nbytes)}
        return split, recipe, rec, cols, labels, skipped, lost

    results = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, r in enumerate(pool.map(run, jobs)):
            results.append(r)
            if progress is not None:
                progress(i + 1, len(jobs))

    shards, empty_groups, image_tables = [], [], []
    for split, recipe, rec, cols, labels, skipped, lost in results:
        if "sha256" in rec:
            shards.append(rec)
        else:
            empty_groups.append(rec)
        stats.skipped_variants += skipped
        stats.lost_notes += lost
        stats.images += rec["rows"]
        stats.recorded_pieces += rec.get("audio", {}).get("recorded", 0)
        stats.synth_pieces += rec.get("audio", {}).get("synth", 0)
        stats.rejects += rec.get("rejects", [])
        stats.drum_notes += rec.get("drum_notes", 0)
        if "sha256" not in rec:
            stats.rendered_pieces += 0 if cols is None else rec["pieces"]
            continue
        if cols is None:
            stats.reused_shards += 1
            prev = previous_images.filter(pc.equal(previous_images["shard"], rec["sha256"]))
            if "audio" not in prev.column_names:  # an index written before the column existed
                prev = prev.append_column("audio", pa.nulls(prev.num_rows, pa.string()))
            image_tables.append(prev.select(SH.IMAGES.names))
            continue
        stats.rendered_shards += 1
        stats.rendered_pieces += rec["pieces"]
        n = rec["rows"]
        start_s = cols[1] * (4 ** config.order / config.sample_rate if hilbert else config.resolution_s)
        image_tables.append(pa.Table.from_arrays([
            pa.array(cols[0].astype(np.int64)), pa.array([split] * n, pa.string()),
            pa.array([config.encoding] * n, pa.string()),
            pa.array(cols[1].astype(np.int32)), pa.array(np.asarray(start_s, np.float64)),
            pa.array(cols[2].astype(np.int8)), pa.array(cols[3].astype(np.int64)),
            pa.array([rec["sha256"]] * n, pa.string()), pa.array(np.arange(n, dtype=np.int32)),
            pa.array(labels, pa.string())], schema=SH.IMAGES))
    images_table = pa.concat_tables(image_tables) if image_tables else SH.IMAGES.empty_table()
    sink = io.BytesIO()
    pq.write_table(images_table.cast(SH.IMAGES), sink, compression="zstd")
    images_bytes = sink.getvalue()
    store.write_bytes(SH.images_key(name, version), images_bytes)
    manifest = {
        "kind": "midipix.dataset", "schema_version": SH.SHARDS_SCHEMA_VERSION, "name": name, "version": version,
        "encoding": config.encoding, "config": config.to_dict(), "augment": augment.to_dict(), "code_version": code,
        "tables": {"name": tables_name, "version": tables_manifest["version"]},
        "shape": list(config.shape), "dtype": config.spec.dtype,
        "shards": shards, "images": int(images_table.num_rows),
        "images_table": {"key": SH.images_key(name, version), "sha256": hashlib.sha256(images_bytes).hexdigest()},
        "bytes": sum(s["bytes"] for s in shards), "raw_bytes": sum(s["raw_bytes"] for s in shards),
        "rejects": stats.rejects, "drum_notes": stats.drum_notes,
    }
    if empty_groups:
        manifest["empty_groups"] = empty_groups
    if hilbert:
        manifest["audio"] = {"recorded": stats.recorded_pieces, "synth": stats.synth_pieces,
                             "rejected": len(stats.rejects)}
    store.write_bytes(SH.manifest_key(name, version), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest, stats


def publish_dataset(store: Store, name: str, version: str) -> bool:
    return P.publish(store, SH.pointer_key(name), SH.manifest_key(name, version), version)


def read_images_table(store: Store, name: str, version: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.read_bytes(SH.images_key(name, version))))
