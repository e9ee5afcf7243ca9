"""The dataset build flow: source → fingerprints → tables (cached) → publish → summary."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field, field_validator

from tasks.steps.prefect_tasks import (describe_images, fetch_source, midi_to_tables, publish_images,
                            publish_tables, render_images, result_storage, summarize_tables)
from tasks.storage.settings import get_settings
from tasks.storage.store import Store
from tasks.steps.tables import SplitConfig


class MaestroOverrides(BaseModel):
    """Use another copy of the MAESTRO archive (a mirror, a test server); unset fields keep the declared values."""

    url: str | None = None
    size: int | None = Field(None, ge=1)
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")


class RollParams(BaseModel):
    """Piano-roll rendering (the paper's defaults: 88 × 200 images of 0.05 s columns, 10 s windows)."""

    resolution_s: float = Field(0.05, gt=0, description="Seconds per column")
    columns: int = Field(200, ge=1, le=100_000, description="Columns per image")
    hop_columns: int = Field(200, ge=1, description="Columns between window starts (< columns: overlap)")
    pitch_lo: int = Field(21, ge=0, le=127)
    pitch_hi: int = Field(108, ge=0, le=127)
    pedal: bool = Field(False, description="Draw notes for as long as the sustain pedal holds them")
    convention: Literal["midipix", "pretty_midi"] = "midipix"

    def config(self, encoding: str):
        from storage_schemas.encodings import RollConfig

        return RollConfig(encoding=encoding, **self.model_dump())


class AugmentParams(BaseModel):
    """Seeded augmentation, recorded per image in the manifest; by default for the train split only."""

    transpositions: list[int] = Field(default_factory=list, description="Semitone shifts, e.g. [-2, 2]")
    noise_fraction: float = Field(0.0, ge=0, le=1, description="Fraction of notes given pitch noise")
    noise_sigma: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)
    apply_to_splits: list[Literal["train", "validation", "test"]] = Field(default_factory=lambda: ["train"])

    def config(self):
        from tasks.kernels.augment import AugmentConfig

        return AugmentConfig(transpositions=tuple(self.transpositions), noise_fraction=self.noise_fraction,
                             noise_sigma=self.noise_sigma, seed=self.seed, apply_to_splits=tuple(self.apply_to_splits))


class HilbertParams(BaseModel):
    """Audio images: a piece's recording or its synthesised notes (44.1 kHz mono) on an order-k Hilbert curve."""

    order: int = Field(8, ge=1, le=12, description="8 → 256 × 256 images of 65,536 samples")
    sample_rate: int = Field(44100, ge=8000)
    timbre: Literal["piano", "guitar"] = Field("piano", description="Synthesizer timbre")
    pedal: bool = Field(True, description="Synthesizer: sound notes as long as the sustain pedal holds them")
    audio: Literal["auto", "recorded", "synth"] = Field(
        "auto", description="auto: a piece's recording (same-stem WAV/FLAC/… beside the MIDI) when it has one, "
                            "else the synthesizer; recorded: recordings only (pieces without one are rejects); "
                            "synth: the synthesizer only")

    def config(self):
        from tasks.steps.render import HilbertConfig

        return HilbertConfig(**self.model_dump())


ENCODINGS = ("enc1", "enc2", "enc3", "hilbert", "hilbert-guitar")


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
    encodings: list[str] = Field(default_factory=lambda: ["enc1", "enc2", "enc3"],
                                 description="Image datasets to render: enc1, enc2, enc3, hilbert, hilbert-guitar "
                                             "([] = tables only)")
    roll: RollParams = RollParams()
    augment: AugmentParams = AugmentParams()
    hilbert: HilbertParams = HilbertParams()
    previews: int = Field(2, ge=0, le=20, description="Preview images per dataset attached to the run")

    @field_validator("encodings")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in ENCODINGS]
        if unknown:
            raise ValueError(f"unknown encodings {unknown}; choose from {list(ENCODINGS)}")
        return list(dict.fromkeys(v))


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
    for encoding in params.encodings:
        roll = None if encoding.startswith("hilbert") else params.roll.config(encoding)
        hilbert = params.hilbert.config() if encoding.startswith("hilbert") else None
        images = render_images.with_options(result_storage=result_storage())(
            store_uri, name, tables["version"], encoding, roll, hilbert, augment, workers=params.workers)
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
