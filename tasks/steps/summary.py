"""What a store holds, in a few numbers: per-split pieces, notes, hours; rejects with reasons."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from storage_schemas import tables as S
from tasks.steps import tables as T
from tasks.storage.store import Store


def summarize(store: Store, name: str) -> dict:
    """Summary of the current version of table set ``name`` (reads only ``pieces`` and ``rejects``)."""
    manifest = T.read_manifest(store, name)
    splits = []
    for split in S.SPLITS:
        recs = T.table_files(manifest, "pieces", split)
        pieces = pa.concat_tables([pq.read_table(io.BytesIO(store.read_bytes(rec["key"])),
                                                 columns=["note_count", "duration_s"]) for rec in recs]) if recs else None
        notes = int(pieces.column("note_count").to_numpy().sum()) if pieces is not None else 0
        hours = float(pieces.column("duration_s").to_numpy().sum()) / 3600 if pieces is not None else 0.0
        splits.append({"split": split, "pieces": pieces.num_rows if pieces is not None else 0, "notes": notes,
                       "hours": round(hours, 3)})
    rejects = [row for rec in T.table_files(manifest, "rejects")
               for row in pq.read_table(io.BytesIO(store.read_bytes(rec["key"]))).to_pylist()]
    total_bytes = sum(r["bytes"] for t in manifest["files"] for r in T.table_files(manifest, t))
    return {"name": name, "version": manifest["version"], "splits": splits, "rejects": rejects,
            "rows": manifest["rows"], "bytes": total_bytes,
            "parsed": manifest.get("parsed"), "reused": manifest.get("reused")}


def format_summary(s: dict, store_uri: str) -> str:
    """Human-readable text of :func:`summarize`'s result."""
    lines = [f"{s['name']}  version {s['version']}  ({s['bytes'] / 1e6:.2f} MB of Parquet)",
             f"  read with: pandas.read_parquet('{store_uri.rstrip('/')}/{S.version_root(s['name'], s['version'])}/notes')",
             f"  {'split':<11}{'pieces':>8}{'notes':>12}{'hours':>9}"]
    for r in s["splits"]:
        lines.append(f"  {r['split']:<11}{r['pieces']:>8}{r['notes']:>12,}{r['hours']:>9.2f}")
    tot_p = sum(r["pieces"] for r in s["splits"])
    tot_n = sum(r["notes"] for r in s["splits"])
    tot_h = sum(r["hours"] for r in s["splits"])
    lines.append(f"  {'total':<11}{tot_p:>8}{tot_n:>12,}{tot_h:>9.2f}")
    lines.append(f"  controls {s['rows']['controls']:,}  tempo events {s['rows']['tempos']:,}  "
                 f"rejects {len(s['rejects'])}")
    for r in s["rejects"]:
        lines.append(f"    rejected {r['relpath']}: {r['error_kind']}: {r['message']}")
    return "\n".join(lines)


def dataset_stats(store: Store, name: str) -> dict:
    """Counts, bytes and compression ratio of the current version of an image dataset."""
    from tasks.steps.loader import read_dataset_manifest

    m = read_dataset_manifest(store, name)
    splits = {}
    for s in m["shards"]:
        d = splits.setdefault(s["split"], {"images": 0, "shards": 0, "bytes": 0})
        d["images"] += s["rows"]
        d["shards"] += 1
        d["bytes"] += s["bytes"]
    ratio = m["raw_bytes"] / m["bytes"] if m["bytes"] else 0.0
    out = {"name": name, "version": m["version"], "encoding": m["encoding"], "shape": "×".join(map(str, m["shape"])),
           "images": m["images"], "shards": len(m["shards"]), "bytes": m["bytes"], "raw_bytes": m["raw_bytes"],
           "compression": round(ratio, 1), "tables_version": m["tables"]["version"], "splits": splits}
    if "audio" in m:  # audio datasets: where the pieces' sound came from
        out.update({"recorded_pieces": m["audio"]["recorded"], "synth_pieces": m["audio"]["synth"]})
    out.update({"rejected_pieces": len(m.get("rejects", [])), "rejects": m.get("rejects", []),
                "drum_notes": m.get("drum_notes", 0)})
    return out


def list_datasets(store: Store) -> list[str]:
    """Names of the image datasets in a store that have a published pointer."""
    return sorted({k.split("/")[1] for k in store.list("datasets") if k.endswith("/CURRENT")})


def format_datasets(stats: list[dict]) -> str:
    if not stats:
        return "no image datasets"
    lines = [f"  {'dataset':<34}{'images':>8}{'shards':>7}{'MB':>9}{'ratio':>7}  per split"]
    for s in stats:
        per = ", ".join(f"{k} {v['images']}" for k, v in sorted(s["splits"].items()))
        ratio = f"{s['compression']:>6.1f}×" if s["bytes"] else f"{'—':>7}"  # nothing stored: no ratio
        lines.append(f"  {s['name']:<34}{s['images']:>8}{s['shards']:>7}{s['bytes'] / 1e6:>9.2f}{ratio}  {per}")
        if "recorded_pieces" in s:
            lines.append(f"    sound: {s['recorded_pieces']} pieces recorded, {s['synth_pieces']} synthesized, "
                         f"{s['rejected_pieces']} left out")
        if s.get("drum_notes"):
            lines.append(f"    {s['drum_notes']} drum notes (MIDI channel 10) left out of the images")
        for r in s.get("rejects", [])[:20]:
            lines.append(f"    left out {r['relpath']}: {r['error_kind']}: {r['message']}")
        if len(s.get("rejects", [])) > 20:
            lines.append(f"    … {len(s['rejects']) - 20} more left out (all under 'rejects' in the manifest)")
    return "image datasets (shape, version):\n" + "\n".join(lines)
