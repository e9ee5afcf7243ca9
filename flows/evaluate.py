"""The evaluation flow: every run of a table set and the baselines, scored on its test split, as a report."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from tasks.steps.prefect_tasks import publish_report, score_runs
from tasks.storage.settings import get_settings
from tasks.storage.store import Store


class EvaluateParams(BaseModel):
    """What to score and how much of the test split, as the Prefect UI's form shows it."""

    tables_name: str = Field("generated-24", description="Table set whose runs and image datasets to score")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    data: str | None = Field(None, description="Where to read shards from (a pulled local cache); default the store")
    out: str | None = Field(None, description="Also write report.md / .html / .json into this local folder")
    max_windows: int = Field(1000, ge=1, description="Test windows scored teacher-forced (a seeded subsample)")
    free_windows: int = Field(128, ge=1, description="Of those, windows each model and baseline continues "
                                                     "free-running (generation is the slow part)")
    train_windows: int = Field(2000, ge=1, description="Training windows the baselines are fitted on")
    seed: int = Field(0, description="Seeds the subsamples, the baselines' draws and the runs' sampling")
    sampling: Literal["threshold", "sample"] = Field(
        "sample", description="How runs turn scores into notes when they run free: seeded draws, or the "
                              "calibrated thresholds (teacher-forced scores always use the thresholds)")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (sampling = sample)")

    def settings(self) -> dict:
        return self.model_dump(include={"max_windows", "free_windows", "train_windows", "seed", "sampling",
                                        "temperature"})


@flow(name="evaluate-runs", description="Score every run of a table set and the baselines on its test split")
async def evaluate_runs(params: EvaluateParams = EvaluateParams()) -> dict:
    # async like the other flows: the async engine does not wait for the heartbeat thread on exit
    store_uri = Store(params.store or get_settings().store).uri
    rows = score_runs(store_uri, params.tables_name, params.settings(), params.data)
    runs = sorted({r["name"] for r in rows if r["kind"] == "run"})
    notes = [f"store {store_uri}, table set {params.tables_name}; {len(runs)} run(s) scored",
             "settings: " + ", ".join(f"{k} {v}" for k, v in params.settings().items())]
    report = publish_report(store_uri, params.tables_name, rows, notes, params.out)
    return {"rows": rows, "runs": runs, "report": report}


def run_evaluate(params: EvaluateParams, return_state: bool = False):
    """Run :func:`evaluate_runs` from synchronous code (the CLI, tests)."""
    import asyncio

    return asyncio.run(evaluate_runs(params, return_state=return_state))
