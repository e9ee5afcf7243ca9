"""Deployments of midipix's flows, for a long-running Prefect server.

Each deployment exposes its flow's typed parameters as a form in the Prefect UI; the dataset rebuild
also runs on a cron schedule. Two ways to run them:

- ``midipix serve`` runs them in its own process (no work pool needed): one host, or a quick try.
- ``midipix deploy`` (the team set-up, ``docker-compose.yml``) registers them in two Prefect *process*
  work pools: the rebuild on :data:`CPU_POOL`, training (which also decodes its samples) and the
  evaluation (which runs the models) on :data:`GPU_POOL`; ``prefect worker start --pool ...`` on each host runs them. The entrypoints are
  module paths (``flows.build.build_dataset``), so a worker imports the flow from the installed package:
  no Docker registry, no git clone, no shared code folder.
"""

from __future__ import annotations

from flows.build import BuildParams, build_dataset
from flows.evaluate import EvaluateParams, evaluate_runs
from flows.train import TrainOneParams, train_one

REBUILD_CRON = "0 3 * * *"  # daily, 03:00 UTC
CPU_POOL = "midipix-cpu"  # dataset rebuilds
GPU_POOL = "midipix-gpu"  # training and the decoded samples that follow it


def deployments(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None,
                module_path: bool = False) -> list:
    """The deployment objects; ``cron=None`` leaves the rebuild unscheduled (manual runs only).

    ``module_path=True`` gives entrypoints such as ``flows.build.build_dataset`` (imported from the
    installed package by a work-pool worker) instead of a file path relative to the current folder.
    """
    from prefect.deployments.runner import EntrypointType

    kind = EntrypointType.MODULE_PATH if module_path else EntrypointType.FILE_PATH
    rebuild = build_dataset.to_deployment(
        name="rebuild-dataset",
        cron=cron,
        parameters={"params": BuildParams(source=source, store=store).model_dump(mode="json")},
        description="Rebuild a corpus's tables (cached: unchanged files are not parsed again)",
        tags=["midipix", "dataset"],
        entrypoint_type=kind,
    )
    train = train_one.to_deployment(
        name="train-model",
        parameters={"params": TrainOneParams(store=store).model_dump(mode="json")},
        description="Train one model on one image dataset and decode samples (serve it on a GPU host)",
        tags=["midipix", "training"],
        entrypoint_type=kind,
    )
    evaluate = evaluate_runs.to_deployment(
        name="evaluate-runs",
        parameters={"params": EvaluateParams(store=store).model_dump(mode="json")},
        description="Score every run of a table set and the baselines on its test split; report as artifacts",
        tags=["midipix", "evaluation"],
        entrypoint_type=kind,
    )
    return [rebuild, train, evaluate]


def serve_deployments(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None,
                      limit: int | None = None) -> None:
    """Register the deployments with the API in ``PREFECT_API_URL`` and run their flow runs here."""
    from prefect import serve

    serve(*deployments(cron=cron, source=source, store=store), limit=limit)


def pool_deployments(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None,
                     cpu_pool: str = CPU_POOL, gpu_pool: str = GPU_POOL) -> dict[str, list]:
    """The deployments grouped by the work pool they go to (module-path entrypoints)."""
    rebuild, train, evaluate = deployments(cron=cron, source=source, store=store, module_path=True)
    if cpu_pool == gpu_pool:
        return {cpu_pool: [rebuild, train, evaluate]}
    return {cpu_pool: [rebuild], gpu_pool: [train, evaluate]}


def deploy_to_pools(cron: str | None = REBUILD_CRON, source: str = "generated", store: str | None = None,
                    cpu_pool: str = CPU_POOL, gpu_pool: str = GPU_POOL) -> dict[str, list[str]]:
    """Create the process work pools (when missing) and register the deployments in them (``midipix deploy``).

    Idempotent: run it again after changing the code or the schedule. Returns ``{pool: [flow/deployment]}``.
    """
    import asyncio

    # built here, outside the event loop: to_deployment returns a coroutine when called from async code
    groups = pool_deployments(cron=cron, source=source, store=store, cpu_pool=cpu_pool, gpu_pool=gpu_pool)
    asyncio.run(_register(groups))
    return {pool: [f"{d.flow_name}/{d.name}" for d in group] for pool, group in groups.items()}


async def _register(groups: dict[str, list]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import adeploy
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        for pool in groups:
            try:
                await client.create_work_pool(WorkPoolCreate(
                    name=pool, type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template()))
            except ObjectAlreadyExists:
                pass
    for pool, group in groups.items():
        await adeploy(*group, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
                      ignore_warnings=True)
