"""Thin Prefect tasks around the pure pipeline steps.

Caching: ``midi_to_tables`` and ``render_images`` are keyed by the content hashes of their inputs,
their parameters and the code version (``tables.version_id``, ``render.dataset_version``), persisted
as small JSON results under the local cache, so a rerun with nothing changed shows them as *Cached* in
the Prefect UI. Before trusting a cache hit the key function checks that the artifact still exists in
the store; if it does not, the stale record is dropped and the task runs again. Heavy imports happen
inside the tasks.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from storage_schemas import tables as S
from storage_schemas.encodings import AugmentConfig, ImageConfig, get_encoding
from tasks.steps import tables as T
from tasks.steps.train import TrainRequest
from tasks.storage.settings import get_settings
from tasks.storage.sources import (ResolvedSource, SourceFile, fingerprint, generated_source, list_files,
                                   maestro_archive, maestro_source, maestro_spec, read_file_bytes)
from tasks.storage.store import Store


def result_storage() -> Path:
    """Where Prefect keeps task results (small JSON documents: never data, never credentials)."""
    path = Path(get_settings().cache_dir).resolve() / "prefect-results"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Progress:
    """Progress shown twice: a Prefect progress artifact (the UI) and a log line (the terminal), each
    updated at most ``steps`` times."""

    def __init__(self, description: str, steps: int = 10):
        self.id = create_progress_artifact(progress=0.0, description=description)
        self.description = description
        self.steps = steps
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        step = int(self.steps * done / total)
        if step != self.last:
            self.last = step
            update_progress_artifact(self.id, progress=100.0 * done / total)
            get_run_logger().info("%s: %3.0f %% (%s of %s)", self.description, 100.0 * done / total, done, total)


def _transient(task, task_run, state) -> bool:
    """Retry network hiccups, not verdicts: a wrong checksum or an unsafe archive will not improve."""
    from tasks.storage.fetch import ChecksumError, UnsafeArchiveError

    try:
        state.result()
    except (ChecksumError, UnsafeArchiveError, FileNotFoundError, ValueError):
        return False
    except Exception:
        return True
    return False


@task(name="fetch-source", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient)
def fetch_source(spec: str, maestro_overrides: dict | None = None
                 ) -> tuple[ResolvedSource, list[SourceFile], list[dict]]:
    """Resolve a source (download MAESTRO, generate the built-in corpus, or list a folder/URI) and hash
    every file's bytes: the hashes are what the cache keys of the later steps are made of."""
    logger = get_run_logger()
    archive_name = maestro_spec(spec)
    if archive_name is not None:
        archive = maestro_archive(name=archive_name, **(maestro_overrides or {}))
        logger.info("MAESTRO archive %s (%d bytes, sha256 %s…)", archive.name, archive.size, archive.sha256[:12])
        src = maestro_source(archive, progress=_Progress(f"download {archive.filename}", steps=20))
    elif spec == "generated" or spec.startswith("generated:"):
        src = generated_source(spec)
    else:
        src = list_files(spec)
    files, errors = fingerprint(src)
    logger.info("source %s: %d MIDI files (%d unreadable, %d with a recording), metadata: %s", spec,
                len(src.files), len(errors), len(src.audio), src.metadata_uri or "none")
    return src, files, errors


def _tables_params(split: T.SplitConfig, metadata_uri: str | None) -> dict:
    return {"split": split.model_dump(mode="json"), "metadata": metadata_uri is not None}


def _tables_cache_key(ctx: TaskRunContext, p: dict[str, Any]) -> str:
    version = T.version_id(p["files"], _tables_params(p["split"], p["metadata_uri"]))
    store_tag = hashlib.sha256(p["store_uri"].encode()).hexdigest()[:12]
    key = f"midi-to-tables-{store_tag}-{p['name']}-{version}"
    if not Store(p["store_uri"]).exists(S.manifest_key(p["name"], version)):
        # the table set is not (or no longer) in the store: drop any old record so the task runs
        (result_storage() / key).unlink(missing_ok=True)
    return key


@task(name="midi-to-tables", cache_key_fn=_tables_cache_key, persist_result=True, result_serializer="json")
def midi_to_tables(store_uri: str, name: str, files: list[SourceFile], read_errors: list[dict],
                   metadata_uri: str | None, split: T.SplitConfig, strict: bool = False,
                   workers: int = 2) -> dict:
    """Parse new files, reuse rows of unchanged ones, and write an immutable table set (unpublished)."""
    from tasks.storage.fetch import read_maestro_metadata

    logger = get_run_logger()
    store = Store(store_uri)
    version = T.version_id(files, _tables_params(split, metadata_uri))
    if store.exists(S.manifest_key(name, version)):
        logger.info("table set %s/%s already in the store", name, version)
        m = T.read_manifest(store, name, version)
        return {"version": version, "rows": m["rows"], "parsed": 0, "reused": m["rows"]["pieces"],
                "rejected": m["rows"]["rejects"]}

    previous = None
    current, _ = T.read_pointer(store, name)
    if current is not None:
        try:
            old = T.read_manifest(store, name)
            if old.get("code_version") == T.code_version():
                previous = T.PreviousTables(T.load_tables(store, old))
        except (FileNotFoundError, ValueError) as e:
            logger.warning("current version of %s is unreadable (%s): parsing every file", name, e)
    metadata = read_maestro_metadata(metadata_uri) if metadata_uri else None
    t0 = time.perf_counter()
    result = T.build_tables(files, lambda f: read_file_bytes(f.uri), metadata, split,
                            previous=previous, workers=workers, progress=_Progress(f"parse {len(files)} files"))
    result.tables["rejects"][None] = _with_read_errors(result, read_errors)
    logger.info("parsed %d files, reused %d from the previous version, rejected %d (%.2f s)",
                result.parsed, result.reused, result.tables["rejects"][None].num_rows, time.perf_counter() - t0)
    if strict and result.tables["rejects"][None].num_rows:
        rows = result.tables["rejects"][None].to_pylist()
        listing = "; ".join(f"{r['relpath']}: {r['error_kind']}: {r['message']}" for r in rows[:10])
        raise ValueError(f"--strict: {len(rows)} file(s) rejected: {listing}")
    manifest = T.write_table_set(store, name, version, result, {
        "params": _tables_params(split, metadata_uri), "parsed": result.parsed, "reused": result.reused,
    }, workers=workers)
    return {"version": version, "rows": manifest["rows"], "parsed": result.parsed, "reused": result.reused,
            "rejected": manifest["rows"]["rejects"]}


def _with_read_errors(result: T.BuildResult, read_errors: list[dict]):
    import pyarrow as pa

    rejects = result.tables["rejects"][None]
    if not read_errors:
        return rejects
    return pa.concat_tables([rejects, pa.Table.from_pylist(read_errors, schema=S.REJECTS)])


@task(name="publish-tables", retries=2, retry_delay_seconds=[1, 5])
def publish_tables(store_uri: str, name: str, version: str) -> bool:
    """Make ``version`` the current table set by compare-and-swap of its pointer."""
    changed = T.publish(Store(store_uri), name, version)
    get_run_logger().info("%s %s/%s", "published" if changed else "already current:", name, version)
    return changed


@task(name="summarize-tables")
def summarize_tables(store_uri: str, name: str) -> dict:
    """Dataset statistics, attached to the run as a table artifact."""
    from tasks.steps.summary import summarize

    summary = summarize(Store(store_uri), name)
    create_table_artifact(key=f"tables-{_artifact_key(name)}", table=summary["splits"],
                          description=f"Table set **{name}** version `{summary['version']}`")
    if summary["rejects"]:
        create_table_artifact(key=f"rejects-{_artifact_key(name)}", table=summary["rejects"][:200],
                              description=f"Files of **{name}** that could not be read")
    return summary


def _artifact_key(name: str) -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only
    import re

    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "corpus"


# -- images -------------------------------------------------------------------------------------------

def _dataset_cache_key(ctx: TaskRunContext, p: dict[str, Any]) -> str:
    from storage_schemas import shards as SH
    from tasks.steps.render import dataset_version

    config = p["config"]
    version = dataset_version(p["tables_version"], config, p["augment"])
    name = SH.dataset_name(p["tables_name"], config.encoding)
    store_tag = hashlib.sha256(p["store_uri"].encode()).hexdigest()[:12]
    key = f"render-images-{store_tag}-{name}-{version}"
    if not Store(p["store_uri"]).exists(SH.manifest_key(name, version)):
        (result_storage() / key).unlink(missing_ok=True)
    return key


@task(name="render-images", cache_key_fn=_dataset_cache_key, persist_result=True, result_serializer="json")
def render_images(store_uri: str, tables_name: str, tables_version: str, config: ImageConfig, augment: AugmentConfig,
                  workers: int = 2) -> dict:
    """Render one image dataset of a table set into shards (reusing unchanged shards); unpublished."""
    from storage_schemas import shards as SH
    from tasks.steps import loader, render

    logger = get_run_logger()
    store = Store(store_uri)
    name = SH.dataset_name(tables_name, config.encoding)
    version = render.dataset_version(tables_version, config, augment)
    if store.exists(SH.manifest_key(name, version)):
        m = loader.read_dataset_manifest(store, name, version)
        logger.info("dataset %s/%s already in the store", name, version)
        return {"name": name, "version": version, "images": m["images"], "rendered_shards": 0,
                "reused_shards": len(m["shards"]), "rejected_pieces": len(m.get("rejects", [])),
                "rejects": _reject_lines(m.get("rejects", []))}
    previous = previous_images = None
    try:
        previous = loader.read_dataset_manifest(store, name)
        previous_images = render.read_images_table(store, name, previous["version"])
    except (FileNotFoundError, ValueError):
        previous = None
    tables_manifest = T.read_manifest(store, tables_name, tables_version)
    t0 = time.perf_counter()
    manifest, stats = render.build_image_dataset(store, tables_name, tables_manifest, config, augment,
                                                 previous=previous, previous_images=previous_images, workers=workers,
                                                 progress=_Progress(f"render {name}"))
    logger.info("%s: %d images in %d shards (%d rendered, %d reused), %d augmented variants skipped, "
                "%d notes off the keyboard, %d drum notes left out (%.2f s)", name, manifest["images"],
                len(manifest["shards"]), stats.rendered_shards, stats.reused_shards, stats.skipped_variants,
                stats.lost_notes, stats.drum_notes, time.perf_counter() - t0)
    if "audio" in manifest:
        logger.info("%s: sound of %d pieces from their recordings, %d from the synthesizer, %d pieces left out",
                    name, stats.recorded_pieces, stats.synth_pieces, len(stats.rejects))
    if stats.rejects:
        for line in _reject_lines(stats.rejects):
            logger.warning("%s: left out %s", name, line)
        audio = "audio" in manifest
        create_table_artifact(key=f"{'audio' if audio else 'roll'}-rejects-{_artifact_key(name)}",
                              table=stats.rejects[:200],
                              description=f"Pieces left out of **{name}**: "
                                          + ("no usable recording, or no notes to synthesize" if audio
                                             else "nothing a roll can draw, or rendering failed"))
    return {"name": name, "version": version, "images": manifest["images"],
            "rendered_shards": stats.rendered_shards, "reused_shards": stats.reused_shards,
            "rejected_pieces": len(stats.rejects), "rejects": _reject_lines(stats.rejects)}


def _reject_lines(rejects: list[dict], n: int = 10) -> list[str]:
    """The first ``n`` pieces left out of a dataset, one ``relpath: kind: message`` line each."""
    return [f"{r['relpath']}: {r['error_kind']}: {r['message']}" for r in rejects[:n]]


@task(name="publish-images", retries=2, retry_delay_seconds=[1, 5])
def publish_images(store_uri: str, name: str, version: str) -> bool:
    from tasks.steps.render import publish_dataset

    changed = publish_dataset(Store(store_uri), name, version)
    get_run_logger().info("%s %s/%s", "published" if changed else "already current:", name, version)
    return changed


@task(name="describe-images")
def describe_images(store_uri: str, names: list[str], previews: int = 3) -> list[dict]:
    """Dataset statistics as a table artifact, and a few previews as a markdown artifact."""
    from tasks.steps.summary import dataset_stats

    store = Store(store_uri)
    stats = [dataset_stats(store, n) for n in names]
    rows = [{k: v for k, v in s.items() if k not in ("splits", "rejects")} for s in stats]
    if rows:
        create_table_artifact(key="image-datasets", table=rows, description="Image datasets of this build")
    if previews:
        from prefect.artifacts import create_markdown_artifact

        from tasks.steps.preview import preview_markdown

        md = preview_markdown(store, [n for n in names if get_encoding(n.rsplit(".", 1)[1]).kind == "roll"],
                              per_dataset=previews)
        if md:
            create_markdown_artifact(key="image-previews", markdown=md, description="A few windows of each encoding")
    return stats


# -- training and sampling ----------------------------------------------------------------------------

@task(name="fit-model")
def fit_model(store_uri: str, request: TrainRequest, data: str | None = None,
              loader_workers: int | None = None) -> dict:
    """Train (or resume) one run; attaches its loss curve and history to the Prefect run."""
    import base64

    from prefect.artifacts import create_markdown_artifact

    from tasks.steps.train import train_model

    result = train_model(store_uri, request, data_uri=data, num_workers=loader_workers)
    get_run_logger().info("%s: %d parameters, %d epochs, best epoch %s", result["run"], result["parameters"],
                          result["epochs"], result["best_epoch"])
    rows = [{"epoch": h.get("epoch"), "train_loss": (h.get("train") or {}).get("loss"),
             "val_loss": (h.get("val") or {}).get("loss"), "val_onset_f1": (h.get("val") or {}).get("onset_f1"),
             "samples_per_s": h.get("samples_per_s"),
             "data_wait_share": h.get("data_wait_share")} for h in result["history"]]
    key = _artifact_key(result["run"])
    create_table_artifact(key=f"history-{key}", table=rows, description=f"Training history of {result['run']}")
    png = Store(store_uri).read_bytes(f"{result['prefix']}/loss.png")
    create_markdown_artifact(key=f"loss-{key}", markdown=f"![loss](data:image/png;base64,{base64.b64encode(png).decode()})",
                             description=f"Loss curve of {result['run']}")
    return {k: v for k, v in result.items() if k != "history"} | {"history": rows}


@task(name="generate-samples")
def generate_samples(store_uri: str, prefix: str, n: int, data: str | None = None,
                     sampling: Literal["threshold", "sample"] = "sample", temperature: float = 1.0,
                     seed: int = 0) -> list[str]:
    """Samples of a trained run decoded to PNG / MIDI / WAV next to its checkpoint; ``sampling``: the run's
    calibrated thresholds or seeded draws at ``temperature`` (``seed`` also picks the seed windows)."""
    from models.decoding import Sampling
    from tasks.steps.sample import generate

    keys = generate(store_uri, prefix, n=n, data_uri=data, seed=seed,
                    sampling=Sampling(mode=sampling, temperature=temperature, seed=seed))
    get_run_logger().info("%d sample files under %s/samples", len(keys), prefix)
    return keys


@task(name="score-runs")
def score_runs(store_uri: str, tables: str, settings: dict, data: str | None = None) -> list[dict]:
    """Score every run of a table set and the baselines on its test split (:mod:`tasks.steps.evaluate`)."""
    from tasks.steps.evaluate import EvalSettings, evaluate

    logger = get_run_logger()
    return evaluate(store_uri, tables, EvalSettings(**settings), data_uri=data, log=logger.info)


@task(name="publish-report", retries=2, retry_delay_seconds=[1, 5])
def publish_report(store_uri: str, tables: str, rows: list[dict], notes: list[str], out: str | None = None) -> dict:
    """Write ``report.{json,md,html}`` under ``reports/<tables>/`` in the store (and into ``out``), and
    attach the Markdown report and the rows to the Prefect run as artifacts."""
    import tempfile

    from prefect.artifacts import create_markdown_artifact

    from tasks.steps.evaluate import write_report

    store = Store(store_uri)
    title = f"midipix evaluation of {tables}"
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(rows, out or tmp, title, notes)
        keys = {}
        for kind, path in paths.items():
            key = f"reports/{tables}/report.{kind}"
            store.write_bytes(key, Path(path).read_bytes())
            keys[kind] = store.url(key)
        markdown = Path(paths["md"]).read_text()
    key = _artifact_key(tables)
    create_markdown_artifact(key=f"report-{key}", markdown=markdown, description=title)
    create_table_artifact(key=f"scores-{key}", table=rows, description=f"Every score of {tables}")
    return {"store": keys, "files": paths if out else {}}
