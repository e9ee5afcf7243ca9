"""The reference grid: build a corpus, train every network on every encoding within a CPU budget, evaluate.

One flow run answers the paper's question on one corpus: the dataset rebuild (cached), one training run per
model x encoding (each stopped by its time budget), then the evaluation of every run beside the baselines,
whose report lands under ``reports/<tables>/`` in the store (and in ``out``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from flows.build import BuildParams, build_dataset
from flows.evaluate import EvaluateParams, evaluate_runs
from flows.train import TrainGridParams, TrainOneParams, train_grid
from storage_schemas.training import TrainConfig
from tasks.storage.settings import get_settings
from tasks.storage.store import Store

PAPER_ROLL_MODELS = ["gan", "dcgan", "wgan-gp", "lstm", "lstm-custom", "lstm-classes3", "seq2seq",
                     "seq2seq-classes3", "seq2seq-bidir"]


class GridParams(BaseModel):
    """A reference grid, as the Prefect UI's form shows it."""

    source: str = Field("generated:24", description="Corpus to build from: generated[:N[:MINUTES]], maestro, "
                                                    "or a folder (../shared/data/maestro-v2)")
    pieces: int | None = Field(None, ge=1, description="A local MAESTRO folder: build from a seeded subset of "
                                                       "this many pieces, in the published split's proportions")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    name: str | None = Field(None, description="Table set name (default: from the source)")
    encodings: list[str] = Field(default_factory=lambda: ["enc2", "enc3"], description="Image encodings to build")
    models: list[str] = Field(default_factory=lambda: [*PAPER_ROLL_MODELS, "transformer"],
                              description="Models to train on each encoding that takes them")
    budget_s: float = Field(240.0, gt=0, description="Seconds of training steps per model (the CPU budget)")
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    model_overrides: dict = Field(default_factory=dict, description="Model config fields changed in every "
                                                                    "model that has them")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="How much of the test split to "
                                     "score (its table set and store are the grid's)")
    out: str | None = Field(None, description="Also write the report files into this local folder")


def _source(params: GridParams) -> str:
    if params.pieces is None:
        return params.source
    from tasks.storage.sources import subset_corpus

    src = Path(params.source)
    dest = Path(get_settings().cache_dir) / "subsets" / f"{src.resolve().name}-{params.pieces}-s{params.seed}"
    return str(subset_corpus(src, params.pieces, dest, seed=params.seed))


@flow(name="reference-grid", description="Build, train every model x encoding within a budget, evaluate")
async def reference_grid(params: GridParams = GridParams()) -> dict:
    logger = get_run_logger()
    store_uri = Store(params.store or get_settings().store).uri
    name = params.name
    if name is None and params.pieces is not None:
        name = f"{Path(params.source).resolve().name}-{params.pieces}"
    built = await build_dataset(BuildParams(source=_source(params), store=store_uri, name=name,
                                            encodings=params.encodings, previews=0))
    tables = built["name"]
    train = TrainConfig(epochs=1000, batch_size=params.batch_size, seed=params.seed, time_budget_s=params.budget_s)
    run = TrainOneParams(tables_name=tables, store=store_uri, train=train, model_overrides=params.model_overrides,
                         samples=0)
    results = await train_grid(TrainGridParams(models=params.models, encodings=params.encodings, run=run))
    for r in results:
        logger.info("%s on %s: %d epochs, best %s, %.0f s", r["model"], r["encoding"], r["epochs"],
                    r["best_epoch"], r["seconds"])
    report = await evaluate_runs(params.evaluate.model_copy(update={"tables_name": tables, "store": store_uri,
                                                                   "out": params.out}))
    return {"tables": tables, "runs": [{k: r[k] for k in ("run", "model", "encoding", "epochs", "seconds")}
                                       for r in results], "report": report["report"]}


def run_grid(params: GridParams, return_state: bool = False):
    """Run :func:`reference_grid` from synchronous code (the CLI)."""
    import asyncio

    return asyncio.run(reference_grid(params, return_state=return_state))
