"""The generic trainer (models/trainer.py) on tiny models defined here, on the CPU.

The networks are a 2-layer MLP regression and a toy 2-network adversarial module, so these tests do not
depend on the real model families in models/.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from models.trainer import (
    CHECKPOINT_FORMAT,
    Callback,
    CheckpointError,
    MemoryCheckpoints,
    StepContext,
    StopTraining,
    SupervisedModule,
    TrainConfig,
    Trainer,
    load_checkpoint,
    make_optimizer,
    rebuild_meta,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from tasks.steps.train import StoreCheckpoints
from tasks.storage.store import Store

REPO = Path(__file__).resolve().parents[1]
RUN_META = {"model": "mlp", "model_config": {"hidden": 32, "dropout": 0.1}, "dataset_version": "toy-v1"}


# -- tiny models and data ----------------------------------------------------------------------------



def on_disk(folder) -> StoreCheckpoints:
    """Checkpoints in a local folder, as a pipeline run keeps them in its store (``run/<name>.ckpt``)."""
    return StoreCheckpoints(Store(str(folder)), "run")

def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 1))


def regression_data(n: int = 256):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 4, generator=g)  # (N, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.sin(3 * x[:, :1])  # (N, 1)
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=48, shuffle=True)  # 4 steps per epoch
    val = [(x[192:224], y[192:224]), (x[224:], y[224:])]
    return train, val


def cpu_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 5, "lr": 1e-2, "device": "cpu", "seed": 0, "log_every": 0, **kw})


def mlp_trainer(cfg, store=None, callbacks=(), module_cls=SupervisedModule, init_seed=None, **module_kw):
    seed_everything(cfg.seed if init_seed is None else init_seed)
    module = module_cls(mlp(), F.mse_loss, **module_kw)
    train, val = regression_data()
    return Trainer(module, cfg, train, val, store or MemoryCheckpoints(), RUN_META, callbacks)


class ToyGAN:
    """Two networks, two optimizers: a generator mapping noise to 2-D points and a discriminator."""

    def __init__(self) -> None:
        self.G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.ctx = StepContext()

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def modules(self):
        return {"generator": self.G, "discriminator": self.D}

    def optimizers(self, cfg):
        return {"generator": make_optimizer(self.G.parameters(), cfg),
                "discriminator": make_optimizer(self.D.parameters(), cfg)}

    def train_step(self, batch, optimizers, step):
        real = batch  # (B, 2)
        z = torch.randn(real.shape[0], 2, device=self.ctx.device)
        ones = torch.ones(real.shape[0], 1, device=self.ctx.device)
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        opt_d.zero_grad(set_to_none=True)
        with self.ctx.autocast():
            fake = self.G(z)
            loss_d = (F.binary_cross_entropy_with_logits(self.D(real).float(), ones)
                      + F.binary_cross_entropy_with_logits(self.D(fake.detach()).float(), 0 * ones))
        loss_d.backward()
        self.ctx.clip(self.D)
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        with self.ctx.autocast():
            loss_g = F.binary_cross_entropy_with_logits(self.D(fake).float(), ones)
        loss_g.backward()
        self.ctx.clip(self.G)
        opt_g.step()
        return {"loss": loss_g.item(), "loss_d": loss_d.item(), "loss_g": loss_g.item()}

    def val_step(self, batch):
        fake = self.G(torch.randn(batch.shape[0], 2, device=self.ctx.device))
        return {"loss": float((fake.mean(0) - batch.mean(0)).pow(2).sum())}


def gan_trainer(cfg, store, callbacks=(), init_seed=None):
    seed_everything(cfg.seed if init_seed is None else init_seed)
    g = torch.Generator().manual_seed(5)
    points = torch.randn(160, 2, generator=g) * 0.5 + torch.tensor([2.0, -1.0])
    train = DataLoader(points[:128], batch_size=64, shuffle=True)
    return Trainer(ToyGAN(), cfg, train, [points[128:]], store, {"model": "toy-gan"}, callbacks)


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m, net in trainer.nets.items() for k, v in net.state_dict().items()}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class KillAfter(Callback):
    """Simulated kill: an exception (not StopTraining) at the end of the given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            raise RuntimeError("simulated kill")


# -- config ------------------------------------------------------------------------------------------


def test_config_round_trips_through_json_and_validates():
    cfg = cpu_cfg(grad_clip=1.0, early_stopping_patience=3, spike_factor=3.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    assert cfg.to_dict()["schema_version"] == 1  # versioned: a later layout is refused, not misread
    with pytest.raises(ValueError, match="schema_version"):
        TrainConfig.from_dict({**cfg.to_dict(), "schema_version": 2})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_device_and_precision_fall_back_to_cpu_fp32():
    cfg = TrainConfig()
    assert resolve_device(cfg) == torch.device("cpu")
    assert resolve_precision(cfg, resolve_device(cfg)) == "fp32"


# -- learning, validation, early stopping ------------------------------------------------------------


def test_loss_falls_with_validation_every_epoch():
    trainer = mlp_trainer(cpu_cfg(epochs=6, lr=3e-2))
    result = trainer.fit()
    h = result.history
    assert [e["epoch"] for e in h] == list(range(1, 7))
    assert all(math.isfinite(e["val"]["loss"]) for e in h)
    assert h[-1]["train"]["loss"] < 0.3 * h[0]["train"]["loss"]
    assert h[-1]["val"]["loss"] < 0.3 * h[0]["val"]["loss"]
    assert result.best_metric == min(e["val"]["loss"] for e in h)
    assert not result.stopped_early and result.recovered_from_spike == 0
    assert all(e["steps"] == 4 and e["samples"] == 192 and e["samples_per_s"] > 0 for e in h)
    assert trainer.checkpoints.load("best") is not None


def test_max_steps_per_epoch_caps_the_epoch():
    result = mlp_trainer(cpu_cfg(epochs=2, max_steps_per_epoch=2)).fit()
    assert [e["steps"] for e in result.history] == [2, 2]
    assert result.global_step == 4


class ScoredModule(SupervisedModule):
    """Picks ``best`` by a whole-pass validation score: the epoch chosen in advance scores lowest."""

    monitor = "rank"

    def __init__(self, *a, favourite: int, **kw):
        super().__init__(*a, **kw)
        self.favourite, self.passes, self.batches = favourite, 0, 0

    def val_step(self, batch):
        self.batches += 1
        return super().val_step(batch)

    def val_epoch_end(self):
        self.passes += 1
        seen, self.batches = self.batches, 0  # reset for the next pass
        return {"rank": abs(self.passes - self.favourite), "batches": seen}


def test_best_follows_the_modules_monitor_and_whole_pass_metrics():
    result = mlp_trainer(cpu_cfg(epochs=4, lr=3e-2), module_cls=ScoredModule, favourite=1).fit()
    h = result.history
    assert [e["val"]["rank"] for e in h] == [0, 1, 2, 3]
    assert all(e["val"]["batches"] == 2 for e in h)  # gathered over the whole pass, not a batch mean
    assert min(e["val"]["loss"] for e in h[1:]) < h[0]["val"]["loss"]  # the loss would have picked a later one
    assert result.best_epoch == 1 and result.best_metric == 0


class SlowModule(SupervisedModule):
    """Each training step takes at least 20 ms."""

    def train_step(self, batch, optimizers, step):
        time.sleep(0.02)
        return super().train_step(batch, optimizers, step)


def test_time_budget_ends_the_epoch_under_way_and_the_run():
    store = MemoryCheckpoints()
    cfg = cpu_cfg(epochs=5, time_budget_s=0.05)  # 4 steps an epoch, >= 20 ms each: the 3rd crosses 50 ms
    result = mlp_trainer(cfg, store, module_cls=SlowModule).fit()
    assert result.stop_reason == "time_budget" and len(result.history) == 1
    entry = result.history[0]
    assert 1 <= entry["steps"] <= 3 and entry["train_seconds"] >= 0.05 and "loss" in entry["val"]
    assert store.load("best") is not None
    again = mlp_trainer(cfg, store, module_cls=SlowModule).fit()  # spent: a rerun trains no further
    assert again.resumed_from_epoch == 1 and len(again.history) == 1 and again.global_step == result.global_step


def test_early_stopping_when_validation_stops_improving():
    store = MemoryCheckpoints()
    cfg = cpu_cfg(epochs=10, lr=0.0, early_stopping_patience=2)  # lr 0: validation never improves on epoch 1
    result = mlp_trainer(cfg, store).fit()
    assert result.stopped_early and result.stop_reason == "early_stopping"
    assert len(result.history) == 3 and result.best_epoch == 1
    again = mlp_trainer(cfg, store).fit()  # a finished run is not trained further
    assert again.resumed_from_epoch == 3 and len(again.history) == 3


def test_stop_training_from_a_callback_stops_cleanly():
    seen: list[str] = []

    class StopAt2(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 2:
                raise StopTraining

        def on_checkpoint(self, name):
            seen.append(name)

    store = MemoryCheckpoints()
    result = mlp_trainer(cpu_cfg(), store, [StopAt2()]).fit()
    assert result.stop_reason == "callback" and len(result.history) == 2
    assert load_checkpoint(store.load("last"))["stop_reason"] == "callback"
    assert seen[:2] == ["last", "best"] and seen.count("last") == 3


# -- reproducibility and resume ----------------------------------------------------------------------


def test_same_seed_bit_identical_different_seed_differs():
    a, b = mlp_trainer(cpu_cfg()), mlp_trainer(cpu_cfg())
    a.fit(), b.fit()
    assert_bit_identical(params(a), params(b))
    c = mlp_trainer(cpu_cfg(seed=1))
    c.fit()
    assert any(not torch.equal(params(a)[k], params(c)[k]) for k in params(a))


def test_resume_after_exception_is_bit_identical(tmp_path):
    cfg = cpu_cfg()
    ref = mlp_trainer(cfg)
    ref.fit()

    store = on_disk(tmp_path)
    with pytest.raises(RuntimeError, match="simulated kill"):
        mlp_trainer(cfg, store, [KillAfter(2)]).fit()
    assert rebuild_meta(store.load("last")).epoch == 2

    resumed = mlp_trainer(cfg, store, init_seed=999)  # different initial weights: they come from `last`
    result = resumed.fit()
    assert result.resumed_from_epoch == 2
    assert [e["epoch"] for e in result.history] == [1, 2, 3, 4, 5]
    assert [e["train"]["loss"] for e in result.history] == [e["train"]["loss"] for e in ref.history]
    assert_bit_identical(params(resumed), params(ref))


def test_gan_two_optimizers_resume_bit_identical(tmp_path):
    cfg = cpu_cfg(epochs=3, lr=2e-3, betas=(0.5, 0.999), grad_clip=5.0)
    ref = gan_trainer(cfg, MemoryCheckpoints())
    result = ref.fit()
    assert {"loss", "loss_d", "loss_g"} <= result.history[0]["train"].keys()

    store = on_disk(tmp_path)
    with pytest.raises(RuntimeError):
        gan_trainer(cfg, store, [KillAfter(1)]).fit()
    assert set(load_checkpoint(store.load("last"))["optimizers"]) == {"generator", "discriminator"}
    resumed = gan_trainer(cfg, store, init_seed=42)
    assert resumed.fit().resumed_from_epoch == 1
    assert_bit_identical(params(resumed), params(ref))


KILL_SCRIPT = """
import json, sys, time
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from models.trainer import Callback, SupervisedModule, TrainConfig, Trainer, seed_everything
from tasks.steps.train import StoreCheckpoints
from tasks.storage.store import Store

folder, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])


class Pause(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        time.sleep(pause)


cfg = TrainConfig(epochs=4, lr=1e-2, device="cpu", seed=7, log_every=0)
seed_everything(cfg.seed)
g = torch.Generator().manual_seed(0)
x = torch.randn(384, 4, generator=g)
y = x.sum(1, keepdim=True)
train = DataLoader(TensorDataset(x[:320], y[:320]), batch_size=64, shuffle=True)
model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 1))
trainer = Trainer(SupervisedModule(model, F.mse_loss), cfg, train, [(x[320:], y[320:])],
                  StoreCheckpoints(Store(folder), "run"), {"model": "mlp"}, [Pause()])
result = trainer.fit()
torch.save(model.state_dict(), out)
print(json.dumps({"resumed_from_epoch": result.resumed_from_epoch, "epochs": [h["epoch"] for h in result.history]}))
"""


def test_sigkill_and_rerun_is_bit_identical(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def start(name: str, pause: float) -> subprocess.Popen:
        argv = [sys.executable, str(script), str(tmp_path / name), str(tmp_path / f"{name}.pt"), str(pause)]
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = start("ref", 0.0)
    victim = start("victim", 0.5)
    store = on_disk(tmp_path / "victim")
    deadline = time.monotonic() + 90
    while True:
        data = store.load("last")
        if data is not None and rebuild_meta(data).epoch >= 1:
            break
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint from the training subprocess"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    killed_at = rebuild_meta(store.load("last")).epoch
    assert 1 <= killed_at < 4 and not (tmp_path / "victim.pt").exists()

    rerun = start("victim", 0.0)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"resumed_from_epoch": killed_at, "epochs": [1, 2, 3, 4]}
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err
    assert_bit_identical(torch.load(tmp_path / "ref.pt", weights_only=True),
                         torch.load(tmp_path / "victim.pt", weights_only=True))


# -- loss spikes -------------------------------------------------------------------------------------


class SpikyModule(SupervisedModule):
    """A supervised module whose loss jumps x100 at one global step."""

    def __init__(self, model, loss_fn, spike_step: int) -> None:
        super().__init__(model, loss_fn)
        self.spike_step = spike_step

    def train_step(self, batch, optimizers, step):
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss = self.loss(batch) * (100.0 if step == self.spike_step else 1.0)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}


def test_spike_reloads_best_and_continues_with_sgd_momentum(tmp_path):
    cfg = cpu_cfg(epochs=6, spike_factor=3.0, spike_lr_scale=0.5)
    spike_step = 4 * 3 + 2  # third step of epoch 4
    trainer = mlp_trainer(cfg, on_disk(tmp_path / "a"), module_cls=SpikyModule, spike_step=spike_step)
    best_before: list[int | None] = []

    class RememberBest(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            best_before.append(trainer.best_epoch)

    trainer.callbacks = (RememberBest(),)
    result = trainer.fit()

    assert result.recovered_from_spike == 1
    spikes = [(e["epoch"], s) for e in result.history for s in e["spikes"]]
    assert len(spikes) == 1
    epoch, event = spikes[0]
    assert epoch == 4 and event["step"] == spike_step + 1 and event["loss"] > event["threshold"]
    assert event["reloaded_epoch"] == best_before[2]  # the best as of the end of epoch 3
    opt = trainer.optimizers["model"]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert [e["optimizer"] for e in result.history] == ["adam"] * 3 + ["sgd"] * 3
    assert len(result.history) == 6
    assert all(math.isfinite(e["train"]["loss"]) and math.isfinite(e["val"]["loss"]) for e in result.history)
    assert all(torch.isfinite(p).all() for p in params(trainer).values())

    # a run killed after the recovery resumes with SGD and ends bit-identical
    store = on_disk(tmp_path / "b")
    with pytest.raises(RuntimeError):
        mlp_trainer(cfg, store, [KillAfter(5)], module_cls=SpikyModule, spike_step=spike_step).fit()
    resumed = mlp_trainer(cfg, store, module_cls=SpikyModule, spike_step=spike_step)
    assert resumed.fit().recovered_from_spike == 1
    assert isinstance(resumed.optimizers["model"], torch.optim.SGD)
    assert_bit_identical(params(resumed), params(trainer))


# -- checkpoint content and safety -------------------------------------------------------------------


UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    UNPICKLED.append("constructed")
    return "foreign"


class Foreign:
    def __reduce__(self):
        return (_mark_unpickled, ())


def test_checkpoints_load_weights_only_and_carry_config_and_run_meta(tmp_path):
    cfg = cpu_cfg(epochs=2)
    store = on_disk(tmp_path)
    trainer = mlp_trainer(cfg, store)
    trainer.fit()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp files left

    raw = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["epoch"] == 2 and raw["global_step"] == 8
    assert raw["config"] == cfg.to_dict() and raw["run_meta"] == RUN_META
    assert set(raw["optimizers"]) == {"model"} and len(raw["history"]) == 2
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor) and isinstance(raw["rng"]["python"], list)

    meta = rebuild_meta(store.load("best"))
    assert meta.config == cfg and meta.run_meta == RUN_META and meta.best_epoch == meta.epoch

    rebuilt = mlp()  # a fresh model from the checkpoint alone gives the trained model's outputs
    rebuilt.load_state_dict(load_checkpoint(store.load("last"))["modules"]["model"])
    rebuilt.eval(), trainer.module.model.eval()
    x = torch.randn(3, 4)
    assert torch.equal(rebuilt(x), trainer.module.model(x))


def test_foreign_pickled_object_is_refused(tmp_path):
    good = load_checkpoint(_one_epoch_checkpoint())
    path = tmp_path / "run" / "last.ckpt"
    path.parent.mkdir()
    torch.save({**good, "run_meta": {"model": Foreign()}}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path.read_bytes())
    with pytest.raises(CheckpointError):  # the trainer refuses it too, before training anything
        mlp_trainer(cpu_cfg(), on_disk(tmp_path)).fit()
    assert UNPICKLED == []
    with pytest.raises(CheckpointError, match="not a midipix"):
        load_checkpoint(_bytes_of({"weights": torch.zeros(2)}))


def test_run_meta_must_be_plain_values():
    seed_everything(0)
    train, val = regression_data()
    with pytest.raises(TypeError, match="run_meta"):
        Trainer(SupervisedModule(mlp(), F.mse_loss), cpu_cfg(), train, val, MemoryCheckpoints(),
                {"path": Path("/tmp")})


def _one_epoch_checkpoint() -> bytes:
    store = MemoryCheckpoints()
    mlp_trainer(cpu_cfg(epochs=1), store).fit()
    return store.load("last")


def _bytes_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# -- data-wait share ---------------------------------------------------------------------------------


class SlowBatches:
    """An iterable that sleeps before every batch, as a slow loader would."""

    def __init__(self, batches, delay: float) -> None:
        self.batches, self.delay = batches, delay

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.delay)
            yield batch


def test_data_wait_share_high_for_slow_iterable_low_for_list():
    seed_everything(0)
    x = torch.randn(96, 4)
    batches = [(x[i:i + 32], x[i:i + 32, :1]) for i in range(0, 96, 32)]
    cfg = cpu_cfg(epochs=2)
    slow = Trainer(SupervisedModule(mlp(), F.mse_loss), cfg, SlowBatches(batches, 0.15)).fit()
    fast = Trainer(SupervisedModule(mlp(), F.mse_loss), cfg, batches).fit()
    assert all(e["data_wait_share"] > 0.6 for e in slow.history)
    assert all(e["data_wait_share"] < 0.3 for e in fast.history)
    assert all(0 <= e["data_wait_share"] <= 1 and e["seconds"] > 0 for e in slow.history + fast.history)


def test_one_shot_iterator_is_rejected():
    with pytest.raises(TypeError, match="re-iterable"):
        Trainer(SupervisedModule(mlp(), F.mse_loss), cpu_cfg(), iter([]))


# -- GPU ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_precision_trains_and_checkpoint_loads_on_cpu():
    cfg = TrainConfig(epochs=3, lr=1e-2, log_every=0)
    trainer = mlp_trainer(cfg)
    assert trainer.device.type == "cuda" and trainer.precision == resolve_precision(cfg, trainer.device)
    result = trainer.fit()
    assert all(math.isfinite(e["val"]["loss"]) for e in result.history)
    ck = load_checkpoint(trainer.checkpoints.load("last"))
    assert all(t.device.type == "cpu" for t in ck["modules"]["model"].values())
