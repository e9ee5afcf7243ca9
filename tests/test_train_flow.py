"""End to end on CPU: generated corpus → dataset → short training of each model → generate → decode."""

from __future__ import annotations

import dataclasses
import io
import json

import mido
import pytest

from flows.build import BuildParams, HilbertParams, RollParams, run_build
from flows.train import TrainGridParams, TrainOneParams, run_train_grid, run_train_one
from models.registry import MODEL_NAMES
from storage_schemas.training import TrainConfig
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
    run = TrainOneParams(tables_name="tiny", store=store, train=TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=2),
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
            assert {k.rsplit("/", 1)[1] for k in r["samples"]} == {"sample-00.png", "sample-00.mid"}
            assert mido.MidiFile(file=io.BytesIO(s.read_bytes(f"{r['prefix']}/samples/sample-00.mid"))).tracks


def test_rerun_resumes_from_the_last_checkpoint(tmp_path, built):
    store = built
    run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2"], previews=0))
    params = TrainOneParams(model="lstm", tables_name="tiny", store=store, samples=0,
                            train=TrainConfig(epochs=2, batch_size=4, max_steps_per_epoch=2))
    first = run_train_one(params)
    again = run_train_one(params)  # same request: the run finished, nothing is trained twice
    assert again["run"] == first["run"]
    assert again["history"] == first["history"]
    longer = run_train_one(params.model_copy(update={"train": dataclasses.replace(params.train, epochs=3)}))
    assert longer["run"] != first["run"]  # a different request is a different run


def test_a_killed_training_resumes_from_its_checkpoint_in_the_store(tmp_path, built):
    from models.trainer import Callback, load_checkpoint
    from tasks.steps.train import StoreCheckpoints, TrainRequest, train_model

    store = built
    run_build(BuildParams(source="generated:4:0.4", store=store, name="tiny", encodings=["enc2"], previews=0))
    request = TrainRequest(model="seq2seq", encoding="enc2", tables_name="tiny",
                           train=TrainConfig(epochs=3, batch_size=4, max_steps_per_epoch=2, seed=5))

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
    request = TrainRequest(model="lstm", encoding="enc2", tables_name="tiny",
                           train=TrainConfig(epochs=2, batch_size=4, seed=3))
    with pytest.raises(ValueError, match="num_workers"):
        train_model(store, request, num_workers=-1)
    result = train_model(store, request, num_workers=2)
    assert result["epochs"] == 2 and all(h["train"] for h in result["history"])
    n_train = ShardDataset(store, "tiny.enc2", "train", batch_size=4).num_images
    assert [h["samples"] for h in result["history"]] == [n_train, n_train]


# -- one configuration from the build to the decoded samples ------------------------------------------

OTHER_ROLLS = RollParams(resolution_s=0.1, columns=64, hop_columns=64, pitch_lo=36, pitch_hi=96)
ROLL_MODELS = ["dcgan", "wgan-gp", "lstm", "seq2seq", "lstm-classes3"]  # one of each family that takes rolls
TINY = {"conv_channels": [8, 4, 2], "hidden": 8}


@pytest.fixture(scope="module")
def other_rolls(tmp_path_factory, prefect_api):
    """A store with one table set, ``other``, whose enc2 images are 61 pitches (36..96) × 64 columns of 0.1 s."""
    from tasks.storage.settings import reload_settings

    store = str(tmp_path_factory.mktemp("other-rolls"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIDIPIX_CACHE_DIR", str(tmp_path_factory.mktemp("other-rolls-cache")))
        reload_settings()
        state = run_build(BuildParams(source="generated:6:0.3", store=store, name="other", encodings=["enc2"],
                                      roll=OTHER_ROLLS, previews=0), return_state=True)
    reload_settings()
    assert state.is_completed(), state.message
    return store


def _notes(data: bytes) -> list[int]:
    """Pitches of the note-ons of a MIDI file, as mido reads it."""
    return [m.note for t in mido.MidiFile(file=io.BytesIO(data)).tracks for m in t
            if m.type == "note_on" and m.velocity > 0]


def test_models_are_sized_by_the_dataset_and_every_sample_decodes_with_its_config(other_rolls, midipix_env):
    from models.trainer import load_checkpoint

    store = other_rolls
    run = TrainOneParams(tables_name="other", store=store, model_overrides=TINY, samples=3,
                         train=TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=2))
    results = run_train_grid(TrainGridParams(models=ROLL_MODELS, encodings=["enc2"], run=run))
    assert sorted(r["model"] for r in results) == sorted(ROLL_MODELS)
    s = Store(store)
    for r in results:
        meta = load_checkpoint(s.read_bytes(f"{r['prefix']}/best.ckpt"))["run_meta"]
        config = meta["dataset"]["config"]
        assert (config["columns"], config["pitch_lo"], config["pitch_hi"], config["resolution_s"]) == (64, 36, 96, 0.1)
        sized = {k: meta["model_config"].get(k) for k in ("height", "width", "features")}
        assert sized in ({"height": 61, "width": 64, "features": None}, {"height": None, "width": None, "features": 61})
        names = sorted(k.rsplit("/", 1)[1] for k in r["samples"])
        assert names == [f"sample-{i:02d}.{ext}" for i in range(3) for ext in ("mid", "png")], r["model"]
        for i in range(3):
            pitches = _notes(s.read_bytes(f"{r['prefix']}/samples/sample-{i:02d}.mid"))
            assert all(36 <= p <= 96 for p in pitches), (r["model"], i, sorted(set(pitches)))
        if r["model"] in ("lstm", "seq2seq"):  # they continue real seed columns: their samples hold notes
            assert _notes(s.read_bytes(f"{r['prefix']}/samples/sample-00.mid"))


def test_a_sample_without_notes_is_a_midi_file_without_notes(other_rolls, midipix_env, tmp_path):
    """A generator whose every pixel is dark: its samples are written, as MIDI files with no notes."""
    import torch

    from models.trainer import load_checkpoint
    from tasks.steps.sample import generate
    from tasks.steps.train import StoreCheckpoints, TrainRequest, train_model

    store = other_rolls
    request = TrainRequest(model="dcgan", encoding="enc2", tables_name="other", model_overrides=tuple(TINY.items()),
                           train=TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=1, seed=7))
    prefix = train_model(store, request)["prefix"]
    checkpoints = StoreCheckpoints(Store(store), prefix)
    ck = load_checkpoint(checkpoints.load("best"))
    ck["modules"]["generator"]["to_image.bias"].fill_(-100.0)  # sigmoid(-100): every pixel 0
    buf = io.BytesIO()
    torch.save(ck, buf)
    checkpoints.save("best", buf.getvalue())
    keys = generate(store, prefix, n=2)
    mids = [k for k in keys if k.endswith(".mid")]
    assert len(mids) == 2
    for key in mids:
        assert _notes(Store(store).read_bytes(key)) == []


# -- the command line ---------------------------------------------------------------------------------


def test_cli_train_takes_the_stores_only_table_set_and_generate_takes_any_name_of_a_run(other_rolls, midipix_env,
                                                                                       capsys):
    from flows.cli import main

    store = other_rolls  # holds only "other", not the demo's generated-24
    assert main(["train", "--store", store, "--model", "lstm", "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "4", "--set", "hidden=8", "--samples", "0", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    run, folder = result["run"], Store(store).uri + "/" + result["prefix"]
    for name in (run, f"models/{run}", folder, folder + "/", f"{folder}/last.ckpt", f"{folder}/best.ckpt"):
        assert main(["generate", "--store", store, "--model", name, "--n", "1"]) == 0, name
        printed = capsys.readouterr().out.split()
        assert printed == [f"{folder}/samples/sample-00.png", f"{folder}/samples/sample-00.mid"], name
    # calibrations stored with both checkpoints; the generate options reach the sampling
    assert Store(store).exists(f"{result['prefix']}/calibration-best.json")
    assert Store(store).exists(f"{result['prefix']}/calibration-last.json")
    assert main(["generate", "--store", store, "--model", run, "--n", "1", "--sampling", "sample",
                 "--temperature", "0.5", "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["generate", "--store", store, "--model", run, "--n", "1", "--sampling", "sample",
                 "--temperature", "0"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err
    # the paper preset: another run, with the paper's settings, and --set winning over it
    assert main(["train", "--store", store, "--model", "lstm", "--epochs", "1", "--max-steps", "1", "--preset",
                 "paper", "--batch-size", "4", "--set", "hidden=8", "--set", "select=\"onset_f1\"", "--samples", "0",
                 "--json"]) == 0
    (paper,) = json.loads(capsys.readouterr().out)
    assert paper["run"] != run
    from models.trainer import load_checkpoint
    meta = load_checkpoint(Store(store).read_bytes(f"{paper['prefix']}/last.ckpt"))["run_meta"]
    assert meta["request"]["preset"] == "paper"
    assert (meta["model_config"]["pos_weight"], meta["model_config"]["select"]) == (1.0, "onset_f1")
    assert main(["generate", "--store", store, "--model", "/somewhere/else/models/x", "--n", "1"]) == 2
    assert "is not inside the store" in capsys.readouterr().err
    assert main(["train", "--store", store, "--epochs", "-1"]) == 2
    assert "epochs must be an int >= 0" in capsys.readouterr().err


def test_cli_train_without_tables_in_a_store_of_several_names_them(tmp_path, midipix_env, capsys):
    from flows.cli import main

    store = str(tmp_path / "two")
    for name in ("alpha", "beta"):
        run_build(BuildParams(source="generated:2:0.1", store=store, name=name, encodings=[], previews=0))
    capsys.readouterr()
    assert main(["train", "--store", store, "--model", "lstm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"midipix train: {Store(store).uri} holds table sets alpha, beta; pick one with --tables"]
    assert main(["train", "--store", str(tmp_path / "empty"), "--model", "lstm"]) == 2
    assert "no table sets (build one: midipix build)" in capsys.readouterr().err


def test_the_train_form_validates_into_the_one_train_config():
    from pydantic import ValidationError

    from flows.build import build_dataset
    from flows.train import train_grid, train_one
    from tasks.steps import prefect_tasks

    params = TrainOneParams.model_validate({"train": {"epochs": 3, "batch_size": 8}})
    assert params.train == TrainConfig(epochs=3, batch_size=8)  # every other field: TrainConfig's default
    assert TrainOneParams.model_validate(params.model_dump(mode="json")) == params  # JSON-friendly for the UI
    assert TrainOneParams.model_validate({"train": TrainConfig(epochs=3).to_dict()}).train.epochs == 3
    with pytest.raises(ValidationError, match=r"unknown TrainConfig keys \['epoch'\]"):
        TrainOneParams.model_validate({"train": {"epoch": 3}})
    flows = {f.name for f in (build_dataset, train_one, train_grid)}
    tasks = {t.name for t in vars(prefect_tasks).values() if hasattr(t, "submit") and hasattr(t, "name")}
    assert {"fit-model", "generate-samples"} <= tasks and not flows & tasks


def test_cli_gan_options_become_the_gan_section_and_model_overrides(monkeypatch, capsys):
    import flows.train
    from flows.cli import main

    seen = []
    monkeypatch.setattr(flows.train, "run_train_one", lambda params: seen.append(params) or [])
    assert main(["train", "--tables", "t", "--model", "wgan-gp", "--n-critic", "3", "--gan-lr", "2e-4",
                 "--gan-betas", "0.5,0.9", "--set", "latent_dim=16", "--json"]) == 0
    (params,) = seen
    assert dict(params.request().model_overrides) == {"n_critic": 3, "lr": 2e-4, "betas": [0.5, 0.9],
                                                      "latent_dim": 16}
    assert main(["train", "--tables", "t", "--model", "wgan-gp", "--json"]) == 0
    assert dict(seen[-1].request().model_overrides) == {}  # not given: the model's defaults
    assert main(["train", "--tables", "t", "--n-critic", "0"]) == 2
    assert "n_critic" in capsys.readouterr().err
    assert main(["train", "--tables", "t", "--gan-lr", "1e-4", "--set", "lr=0.001"]) == 2
    assert "given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--tables", "t", "--gan-betas", "0.5"])
