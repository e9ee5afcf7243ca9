"""The dataset build flow: source → fingerprints → tables (cached) → publish → summary."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field, field_validator

from flows.params import form_of
from storage_schemas.encodings import ENCODINGS, AugmentConfig, HilbertConfig, ImageConfig, RollConfig
from tasks.steps.prefect_tasks import (describe_images, fetch_source, midi_to_tables, publish_images,
                                       publish_tables, render_images, result_storage, summarize_tables)
from tasks.steps.render import image_config
from tasks.steps.tables import SplitConfig
from tasks.storage.settings import get_settings
from tasks.storage.store import Store


class MaestroOverrides(BaseModel):
    """Use another copy of the MAESTRO archive (a mirror, a test server); unset fields keep the declared values."""

    url: str | None = None
    size: int | None = Field(None, ge=1)
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")


RollParams = form_of(
    RollConfig, title="Piano rolls", exclude=("encoding",), probe={"encoding": "enc2"},
    description="How notes become enc1/enc2/enc3 images (the paper: 88 x 200 images of 0.05 s columns)")
HilbertParams = form_of(
    HilbertConfig, title="Audio images", exclude=("encoding",),
    description="hilbert images: a piece's recording or its synthesized notes on a Hilbert curve")
AugmentParams = form_of(
    AugmentConfig, title="Augmentation",
    description="Seeded variants of the train split's pieces, recorded per image in the manifest")
EncodingName = Literal[tuple(ENCODINGS)]  # type: ignore[valid-type]


class BuildParams(BaseModel):
    """Parameters of a dataset build, as the Prefect UI's form shows them. Never secrets."""

    source: str = Field("generated", description="maestro | maestro-full (with audio) | generated[:N[:MINUTES]] | "
                                                 "folder | fsspec URI/glob")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    name: str | None = Field(None, description="Table set name (default: derived from the source)")
    split: SplitConfig = SplitConfig()
    strict: bool = Field(False, description="Fail the run on unreadable files (MIDI, or recordings of audio "
                                            "images) and on pieces an image dataset leaves out, instead of "
                                            "recording them")
    workers: int = Field(2, ge=1, le=256, description="Threads parsing, rendering and writing")
    maestro: MaestroOverrides = MaestroOverrides()
    encodings: list[EncodingName] = Field(default_factory=lambda: ["enc1", "enc2", "enc3"],
                                          description="Image datasets to render (none: tables only)")
    roll: RollParams = RollParams()
    augment: AugmentParams = AugmentParams()
    hilbert: HilbertParams = HilbertParams()
    previews: int = Field(2, ge=0, le=20, description="Preview images per dataset attached to the run")

    @field_validator("encodings")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    def image_configs(self) -> list[ImageConfig]:
        """The config of every dataset to render, in order."""
        roll, hilbert = self.roll.config(encoding="enc2"), self.hilbert.config()
        return [image_config(e, roll, hilbert) for e in self.encodings]


@flow(name="build-dataset", description="MIDI corpus → Parquet tables in the store, cached and published atomically")
async def build_dataset(params: BuildParams = BuildParams()) -> dict:
    # An async flow: Prefect's sync engine joins its heartbeat thread on exit, which costs up to a
    # second per run; the async engine does not wait for it. The tasks themselves are plain sync code.
    store_uri = Store(params.store or get_settings().store).uri
    source, files, read_errors = fetch_source(params.source, params.maestro.model_dump())
    name = params.name or source.default_name
    # quote(): thousands of file records need no walk through Prefect's parameter resolution
    tables = midi_to_tables.with_options(result_storage=result_storage())(
        store_uri, name, quote(files), read_errors, source.metadata_uri, params.split,
        strict=params.strict, workers=params.workers)
    publish_tables(store_uri, name, tables["version"])
    summary = summarize_tables(store_uri, name)
    datasets = []
    augment = params.augment.config()
    for config in params.image_configs():
        images = render_images.with_options(result_storage=result_storage())(
            store_uri, name, tables["version"], config, augment, workers=params.workers)
        if params.strict and images.get("rejected_pieces"):
            raise ValueError(f"--strict: {images['rejected_pieces']} piece(s) left out of {images['name']}: "
                             + "; ".join(images.get("rejects", []))
                             + " (all listed under 'rejects' in its manifest); fix or remove them, or build "
                               "without --strict to leave them out")
        publish_images(store_uri, images["name"], images["version"])
        datasets.append(images)
    if datasets:
        describe_images(store_uri, [d["name"] for d in datasets], previews=params.previews)
    return {"store": store_uri, "name": name, "version": tables["version"], "parsed": tables["parsed"],
            "reused": tables["reused"], "rows": tables["rows"], "splits": summary["splits"], "datasets": datasets}


def run_build(params: BuildParams, return_state: bool = False):
    """Run :func:`build_dataset` from synchronous code (the CLI, tests, benchmarks)."""
    import asyncio

    return asyncio.run(build_dataset(params, return_state=return_state))
