"""Training flows: one model (the deployment target for GPU workers) and a models × encodings grid."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from tasks.storage.settings import get_settings
from tasks.storage.store import Store


class TrainOneParams(BaseModel):
    """One training run, as the Prefect UI's form shows it."""

    model: str = Field("lstm", description="A registry name: `midipix models` lists them")
    encoding: str = Field("enc2", description="enc1 | enc2 | enc3 | hilbert (the model must accept it)")
    tables_name: str = Field("generated-24", description="Table set whose image dataset to train on")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    data: str | None = Field(None, description="Where to read shards from (a pulled local cache); default the store")
    dataset_version: str | None = None
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    max_steps_per_epoch: int | None = Field(None, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    spike_factor: float | None = Field(None, gt=1, description="Loss spike → reload best, continue with SGD")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="Model config fields to change")
    samples: int = Field(4, ge=0, description="Samples to generate and decode after training")
    loader_workers: int | None = Field(None, ge=0, description="Data-loader worker processes (default: 2 on a "
                                                                "GPU host, 0 on CPU)")

    def request(self):
        from tasks.steps.train import TrainRequest

        return TrainRequest(model=self.model, encoding=self.encoding, tables_name=self.tables_name, epochs=self.epochs,
                            batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                            max_steps_per_epoch=self.max_steps_per_epoch,
                            early_stopping_patience=self.early_stopping_patience, spike_factor=self.spike_factor,
                            dataset_version=self.dataset_version,
                            model_overrides=tuple(sorted(self.model_overrides.items())))


class TrainGridParams(BaseModel):
    """A models × encodings grid; pairs a model does not accept are left out."""

    models: list[str] = Field(default_factory=lambda: ["lstm", "lstm-custom", "seq2seq", "dcgan"])
    encodings: list[str] = Field(default_factory=lambda: ["enc2"])
    run: TrainOneParams = TrainOneParams()
    deployment: str | None = Field(None, description="Submit each run to this deployment of the train-model "
                                                     "flow (e.g. one served on a GPU work pool) instead of locally")
    concurrency: int = Field(1, ge=1, description="Runs at once (one per GPU)")


@task(name="train-model")
def train_model_task(store_uri: str, params: TrainOneParams) -> dict:
    """Train (or resume) one run; attaches its loss curve and history to the Prefect run."""
    import base64

    from tasks.steps.train import train_model

    result = train_model(store_uri, params.request(), data_uri=params.data, num_workers=params.loader_workers)
    logger = get_run_logger()
    logger.info("%s: %d parameters, %d epochs, best epoch %s", result["run"], result["parameters"], result["epochs"],
                result["best_epoch"])
    rows = [{"epoch": h.get("epoch"), "train_loss": (h.get("train") or {}).get("loss"),
             "val_loss": (h.get("val") or {}).get("loss"), "samples_per_s": h.get("samples_per_s"),
             "data_wait_share": h.get("data_wait_share")} for h in result["history"]]
    key = result["run"].lower().replace("_", "-")
    create_table_artifact(key=f"history-{key}", table=rows, description=f"Training history of {result['run']}")
    png = Store(store_uri).read_bytes(f"{result['prefix']}/loss.png")
    create_markdown_artifact(key=f"loss-{key}", markdown=f"![loss](data:image/png;base64,{base64.b64encode(png).decode()})",
                             description=f"Loss curve of {result['run']}")
    return {k: v for k, v in result.items() if k != "history"} | {"history": rows}


@task(name="generate-samples")
def generate_task(store_uri: str, prefix: str, n: int, data: str | None = None) -> list[str]:
    """Samples of a trained run decoded to PNG / MIDI / WAV next to its checkpoint."""
    from tasks.steps.train import generate

    keys = generate(store_uri, prefix, n=n, data_uri=data)
    get_run_logger().info("%d sample files under %s/samples", len(keys), prefix)
    return keys


@flow(name="train-model", description="Train one model on one image dataset, then generate samples")
async def train_one(params: TrainOneParams = TrainOneParams()) -> dict:
    store_uri = Store(params.store or get_settings().store).uri
    result = train_model_task(store_uri, params)
    if params.samples:
        result["samples"] = generate_task(store_uri, result["prefix"], params.samples, params.data)
    return result


@flow(name="train-grid", description="Fan a models × encodings grid out to local runs or a GPU deployment")
async def train_grid(params: TrainGridParams = TrainGridParams()) -> list[dict]:
    import asyncio

    from models.registry import get_spec

    logger = get_run_logger()
    runs = []
    for model in params.models:
        spec = get_spec(model)
        for encoding in params.encodings:
            if encoding in spec.encodings:
                runs.append(params.run.model_copy(update={"model": model, "encoding": encoding}))
            else:
                logger.info("skipping %s × %s: the model takes %s", model, encoding, ", ".join(spec.encodings))
    limit = asyncio.Semaphore(params.concurrency)

    async def remote(run: TrainOneParams) -> dict:
        from prefect.deployments import run_deployment

        async with limit:
            flow_run = await run_deployment(params.deployment, parameters={"params": run.model_dump(mode="json")},
                                            timeout=None)
            return {"model": run.model, "encoding": run.encoding, "flow_run": str(flow_run.id),
                    "state": flow_run.state.name if flow_run.state else None}

    if params.deployment:
        return list(await asyncio.gather(*(remote(r) for r in runs)))
    store_uri = Store(params.run.store or get_settings().store).uri
    results = []
    for i in range(0, len(runs), params.concurrency):
        futures = [train_model_task.submit(store_uri, r) for r in runs[i:i + params.concurrency]]
        for run, fut in zip(runs[i:i + params.concurrency], futures):
            result = fut.result()
            if run.samples:
                result["samples"] = generate_task(store_uri, result["prefix"], run.samples, run.data)
            results.append(result)
    return results


def run_train_one(params: TrainOneParams, return_state: bool = False):
    import asyncio

    return asyncio.run(train_one(params, return_state=return_state))


def run_train_grid(params: TrainGridParams, return_state: bool = False):
    import asyncio

    return asyncio.run(train_grid(params, return_state=return_state))
