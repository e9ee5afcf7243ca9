"""End to end on CPU: generated corpus → dataset → short training of each model → generate → decode."""

from __future__ import annotations

import json

import pytest

from flows.build import BuildParams, HilbertParams, run_build
from flows.train import TrainGridParams, TrainOneParams, run_train_grid, run_train_one
from models.registry import MODEL_NAMES
from tasks.kernels.midi import read_midi
from tasks.storage.store import Store

pytestmark = pytest.mark.usefixtures("prefect_api", "midipix_env")

SMALL = {"conv_channels": [16, 8, 4], "dense_generator": [32, 64], "dense_discriminator": [64, 32]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store"))
    return store


def test_every_model_trains_generates_and_decodes(tmp_path, built):
    store = built
    state = run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2", "hilbert", "hilbert-guitar"],
                                  hilbert=HilbertParams(order=6, sample_rate=8000), previews=0), return_state=True)
    assert state.is_completed(), state.message
    run = TrainOneParams(tables_name="tiny", store=store, epochs=1, batch_size=4, max_steps_per_epoch=2,
                         model_overrides=SMALL, samples=1)
    results = run_train_grid(TrainGridParams(models=list(MODEL_NAMES), encodings=["enc2", "hilbert"], run=run))
    trained = {r["model"] for r in results}
    assert trained == set(MODEL_NAMES)  # every model, each on the encoding it accepts
    s = Store(store)
    for r in results:
        assert s.exists(f"{r['prefix']}/last.ckpt") and s.exists(f"{r['prefix']}/loss.png")
        assert r["epochs"] == 1 and r["history"][0]["train_loss"] is not None
        suffixes = {k.rsplit(".", 1)[1] for k in r["samples"]}
        if r["model"] == "autoencoder":
            assert suffixes == {"wav", "json"}
            metrics = json.loads(s.read_bytes(f"{r['prefix']}/samples/style-transfer.json"))
            assert metrics["windows"] > 0 and metrics["mse_guitar_vs_piano"] > 0  # the timbres differ
        else:
            assert "png" in suffixes
        for key in r["samples"]:
            if key.endswith(".mid"):
                assert read_midi(s.read_bytes(key)).n_notes > 0


def test_rerun_resumes_from_the_last_checkpoint(tmp_path, built):
    store = built
    run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2"], previews=0))
    params = TrainOneParams(model="lstm", tables_name="tiny", store=store, epochs=2, batch_size=4,
                            max_steps_per_epoch=2, samples=0)
    first = run_train_one(params)
    again = run_train_one(params)  # same request: the run finished, nothing is trained twice
    assert again["run"] == first["run"]
    assert again["history"] == first["history"]
    longer = run_train_one(params.model_copy(update={"epochs": 3}))
    assert longer["run"] != first["run"]  # a different request is a different run


def test_a_killed_training_resumes_from_its_checkpoint_in_the_store(tmp_path, built):
    from models.trainer import Callback, load_checkpoint
    from tasks.steps.train import StoreCheckpoints, TrainRequest, train_model

    store = built
    run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2"], previews=0))
    request = TrainRequest(model="seq2seq", encoding="enc2", tables_name="tiny", epochs=3, batch_size=4,
                           max_steps_per_epoch=2, seed=5)

    class Crash(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                raise RuntimeError("killed after epoch 1")

    with pytest.raises(RuntimeError, match="killed"):
        train_model(store, request, callbacks=(Crash(),))
    resumed = train_model(store, request)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    ck = load_checkpoint(StoreCheckpoints(Store(store), resumed["prefix"]).load("last"))
    assert ck["epoch"] == 3 and ck["run_meta"]["dataset"]["name"] == "tiny.enc2"
    # an uninterrupted run of the same request, elsewhere, ends with the same weights (CPU, seeded)
    other = str(tmp_path / "other")
    run_build(BuildParams(source="generated:4:0.4", store=other, name="tiny", encodings=["enc2"], previews=0))
    straight = train_model(other, request)
    ck2 = load_checkpoint(StoreCheckpoints(Store(other), straight["prefix"]).load("last"))
    for name, state in ck["modules"]["model"].items():
        assert (state == ck2["modules"]["model"][name]).all(), name


def test_training_through_loader_workers_sees_every_image_each_epoch(tmp_path, built):
    """With worker processes (the default on a GPU host) an epoch still covers the whole training split."""
    from tasks.steps.loader import ShardDataset
    from tasks.steps.train import TrainRequest, train_model

    store = built
    run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2"], previews=0))
    request = TrainRequest(model="lstm", encoding="enc2", tables_name="tiny", epochs=2, batch_size=4, seed=3)
    with pytest.raises(ValueError, match="num_workers"):
        train_model(store, request, num_workers=-1)
    result = train_model(store, request, num_workers=2)
    assert result["epochs"] == 2 and all(h["train"] for h in result["history"])
    n_train = ShardDataset(store, "tiny.enc2", "train", batch_size=4).num_images
    assert [h["samples"] for h in result["history"]] == [n_train, n_train]
