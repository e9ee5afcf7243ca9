"""The dataset build flow: source → fingerprints → tables (cached) → publish → summary."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from tasks.pipeline import (fetch_source, fingerprint_files, midi_to_tables, publish_tables, result_storage,
                            summarize_tables)
from tasks.settings import get_settings
from tasks.store import Store
from tasks.tables import SplitConfig


class MaestroOverrides(BaseModel):
    """Use another copy of the MAESTRO archive (a mirror, a test server); unset fields keep the declared values."""

    url: str | None = None
    size: int | None = Field(None, ge=1)
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")


class BuildParams(BaseModel):
    """Parameters of a dataset build, as the Prefect UI's form shows them. Never secrets."""

    source: str = Field("generated", description="maestro | generated[:N[:MINUTES]] | folder | fsspec URI/glob")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    name: str | None = Field(None, description="Table set name (default: derived from the source)")
    split: SplitConfig = SplitConfig()
    strict: bool = Field(False, description="Fail the run on the first unreadable file instead of recording it")
    workers: int = Field(2, ge=1, le=256, description="Threads parsing and writing")
    maestro: MaestroOverrides = MaestroOverrides()


@flow(name="build-dataset", description="MIDI corpus → Parquet tables in the store, cached and published atomically")
async def build_dataset(params: BuildParams = BuildParams()) -> dict:
    # An async flow: Prefect's sync engine joins its heartbeat thread on exit, which costs up to a
    # second per run; the async engine does not wait for it. The tasks themselves are plain sync code.
    store_uri = Store(params.store or get_settings().store).uri
    source = fetch_source(params.source, params.maestro.model_dump())
    files, read_errors = fingerprint_files(source)
    name = params.name or source.default_name
    tables = midi_to_tables.with_options(result_storage=result_storage())(
        store_uri, name, files, read_errors, source.metadata_uri, params.split,
        strict=params.strict, workers=params.workers)
    publish_tables(store_uri, name, tables["version"])
    summary = summarize_tables(store_uri, name)
    return {"store": store_uri, "name": name, "version": tables["version"], "parsed": tables["parsed"],
            "reused": tables["reused"], "rows": tables["rows"], "splits": summary["splits"]}


def run_build(params: BuildParams, return_state: bool = False):
    """Run :func:`build_dataset` from synchronous code (the CLI, tests, benchmarks)."""
    import asyncio

    return asyncio.run(build_dataset(params, return_state=return_state))
