"""Training flows: one model (the deployment target for GPU workers) and a models × encodings grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field, field_validator, model_validator

from storage_schemas.training import TrainConfig
from tasks.steps.prefect_tasks import fit_model, generate_samples
from tasks.steps.train import TrainRequest
from tasks.storage.settings import get_settings
from tasks.storage.store import Store


class GanTrainingParams(BaseModel):
    """How the GANs (gan, dcgan, wgan-gp) train; empty fields keep the model's defaults (wgan-gp: 5 critic
    updates per generator update, Adam 1e-4, betas 0/0.9; gan, dcgan: 1 and the run's lr and betas). Other
    models ignore this section. They are ``GanConfig`` fields: set here or in ``model_overrides``."""

    n_critic: int | None = Field(None, ge=1, description="Critic updates per generator update")
    lr: float | None = Field(None, gt=0, description="Learning rate of the GAN optimizers (instead of the "
                                                       "run's lr)")
    betas: tuple[float, float] | None = Field(None, description="Adam betas of the GAN optimizers, e.g. [0, 0.9]")

    def overrides(self) -> dict[str, Any]:
        """The fields given, as model config overrides."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_dump().items() if v is not None}


class TrainOneParams(BaseModel):
    """One training run, as the Prefect UI's form shows it; ``train`` is the one :class:`TrainConfig`."""

    model: str = Field("lstm", description="A registry name: `midipix models` lists them")
    encoding: str = Field("enc2", description="enc1 | enc2 | enc3 | hilbert (the model must accept it)")
    tables_name: str = Field("generated-24", description="Table set whose image dataset to train on")
    store: str | None = Field(None, description="Folder or s3://bucket/prefix (default: MIDIPIX_STORE)")
    data: str | None = Field(None, description="Where to read shards from (a pulled local cache); default the store")
    dataset_version: str | None = None
    train: TrainConfig = Field(default_factory=TrainConfig, description="How to train: epochs, batch size, "
                               "learning rate, seed, early stopping, loss-spike recovery, …")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="Model config fields to change "
                                            "(`midipix models` shows each model's; fields another model has are "
                                            "ignored), e.g. {\"hidden\": 64} or, for the GANs, n_critic, lr, betas")
    gan: GanTrainingParams = Field(default_factory=GanTrainingParams, description="GANs only: critic updates per "
                                   "generator update and the GAN optimizers' learning rate and betas")
    preset: Literal["paper"] | None = Field(None, description="paper: the paper's settings (unweighted losses, "
                                            "checkpoint by validation loss, seq2seq on the first horizon fed its "
                                            "own outputs; GANs: one critic step per generator step, Adam 1e-3, "
                                            "betas 0.9/0.999); empty: the improved defaults. Model config fields "
                                            "given above win over it")
    samples: int = Field(4, ge=0, description="Samples to generate and decode after training")
    sampling: Literal["threshold", "sample"] = Field("sample", description="How samples are decoded: seeded "
                                                     "draws, or the run's calibrated per-key thresholds")
    temperature: float = Field(1.0, gt=0, description="sample: 1 draws as densely as the training data (the "
                                                      "run's calibration), towards 0 the thresholded output, "
                                                      "above 1 flatter")
    loader_workers: int | None = Field(None, ge=0, description="Data-loader worker processes (default: 2 on a "
                                                                "GPU host, 0 on CPU)")

    @field_validator("train", mode="before")
    @classmethod
    def _train_config(cls, value: Any) -> Any:
        return TrainConfig.from_dict(value) if isinstance(value, Mapping) else value  # unknown keys are an error

    @model_validator(mode="after")
    def _one_value_per_field(self) -> TrainOneParams:
        clash = sorted(k for k, v in self.gan.overrides().items()
                       if k in self.model_overrides and self.model_overrides[k] != v)
        if clash:
            raise ValueError(f"{', '.join(clash)} given twice (gan and model_overrides) with different values; "
                             f"give them once")
        return self

    def request(self) -> TrainRequest:
        overrides = {**self.model_overrides, **self.gan.overrides()}
        return TrainRequest(model=self.model, encoding=self.encoding, tables_name=self.tables_name, train=self.train,
                            dataset_version=self.dataset_version, model_overrides=tuple(sorted(overrides.items())),
                            preset=self.preset)


class TrainGridParams(BaseModel):
    """A models × encodings grid; pairs a model does not accept are left out."""

    models: list[str] = Field(default_factory=lambda: ["lstm", "lstm-custom", "seq2seq", "dcgan"])
    encodings: list[str] = Field(default_factory=lambda: ["enc2"])
    run: TrainOneParams = TrainOneParams()
    deployment: str | None = Field(None, description="Submit each run to this deployment of the train-model "
                                                     "flow (e.g. one served on a GPU work pool) instead of locally")
    concurrency: int = Field(1, ge=1, description="Runs at once (one per GPU)")


@flow(name="train-model", description="Train one model on one image dataset, then generate samples")
async def train_one(params: TrainOneParams = TrainOneParams()) -> dict:
    store_uri = Store(params.store or get_settings().store).uri
    result = fit_model(store_uri, params.request(), params.data, params.loader_workers)
    if params.samples:
        result["samples"] = generate_samples(store_uri, result["prefix"], params.samples, params.data,
                                             params.sampling, params.temperature, params.train.seed)
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
        futures = [fit_model.submit(store_uri, r.request(), r.data, r.loader_workers)
                   for r in runs[i:i + params.concurrency]]
        for run, fut in zip(runs[i:i + params.concurrency], futures):
            result = fut.result()
            if run.samples:
                result["samples"] = generate_samples(store_uri, result["prefix"], run.samples, run.data,
                                                     run.sampling, run.temperature, run.train.seed)
            results.append(result)
    return results


def run_train_one(params: TrainOneParams, return_state: bool = False):
    import asyncio

    return asyncio.run(train_one(params, return_state=return_state))


def run_train_grid(params: TrainGridParams, return_state: bool = False):
    import asyncio

    return asyncio.run(train_grid(params, return_state=return_state))
