"""Deployments of midipix's flows, for a long-running Prefect server (``midipix serve``).

Each deployment exposes its flow's typed parameters as a form in the Prefect UI; the dataset rebuild
also runs on a cron schedule. ``serve`` runs them in this process (no work pool needed); the team
set-up can instead ``.deploy()`` the same objects to a work pool.
"""

from __future__ import annotations

from flows.build import BuildParams, build_dataset
from flows.train import TrainOneParams, train_one

REBUILD_CRON = "0 3 * * *"  # daily, 03:00 UTC


def deployments(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None) -> list:
    """The deployment objects; ``cron=None`` leaves the rebuild unscheduled (manual runs only)."""
    rebuild = build_dataset.to_deployment(
        name="rebuild-dataset",
        cron=cron,
        parameters={"params": BuildParams(source=source, store=store).model_dump(mode="json")},
        description="Rebuild a corpus's tables (cached: unchanged files are not parsed again)",
        tags=["midipix", "dataset"],
    )
    train = train_one.to_deployment(
        name="train-model",
        parameters={"params": TrainOneParams(store=store).model_dump(mode="json")},
        description="Train one model on one image dataset and decode samples (serve it on a GPU host)",
        tags=["midipix", "training"],
    )
    return [rebuild, train]


def serve_deployments(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None,
                      limit: int | None = None) -> None:
    """Register the deployments with the API in ``PREFECT_API_URL`` and run their flow runs here."""
    from prefect import serve

    serve(*deployments(cron=cron, source=source, store=store), limit=limit)
