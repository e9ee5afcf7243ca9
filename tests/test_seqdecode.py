"""Decoding of the sequence models (models/decoding.py, models/sequence.py): calibrated thresholds, seeded
draws, decoded feedback in generation, causal teacher-forced predictions, seq2seq pairs on every target
column, weighted losses, presets, seed choice, and the preview painting what the MIDI decoder reads. Tiny
configs (hidden 8, 12 keys, 40 columns), CPU only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.decoding import (Calibration, Sampling, classes3_scores, decode, density_threshold, f1,
                             onset_f1_counts, regression_scores, tempered)
from models.losses import (balanced_class_weights, balanced_pos_weight, paper_custom_loss, weighted_class_cross_entropy,
                           weighted_mse)
from models.lstm import LstmConfig
from models.modules import chunk_starts, seq2seq_all_pairs
from models.registry import REGISTRY, get_spec
from models.transformer import TransformerConfig
from models.sequence import SequenceModule, generate_columns, teacher_forced_outputs
from storage_schemas.encodings import ONSET, SUSTAIN

THRESHOLD = Sampling("threshold")  # the deterministic decode (the default mode draws)

K, T = 12, 40
SHAPE = (3, K, T)
SEQUENCE_MODELS = [n for n, s in REGISTRY.items() if s.family in ("lstm", "seq2seq")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(name: str, overrides: dict | None = None, preset: str | None = None):
    spec = get_spec(name)
    small = {"d_model": 16, "layers": 1, "heads": 2} if spec.config_type is TransformerConfig else {"hidden": 8}
    config = spec.config("enc2", SHAPE, {**small, "context": 20, **(overrides or {})}, preset=preset)
    return spec, config, spec.networks(config)


def roll(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random enc2 windows ``(B, 3, K, T)``: notes of a few columns each (ONSET, then SUSTAIN), velocity 40..100."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, *SHAPE), np.uint8)
    for b in range(batch):
        for _ in range(25):
            k, s, n = rng.integers(K), rng.integers(T), rng.integers(1, 6)
            images[b, 0, k, s] = ONSET
            images[b, 0, k, s + 1:s + n] = SUSTAIN
            images[b, 1, k, s:s + n] = rng.integers(40, 100)
    return torch.from_numpy(images)


# -- scores and calibration ---------------------------------------------------------------------------


def test_scores_of_both_heads_on_known_values():
    lit, onset = regression_scores(torch.tensor([0.0, ONSET / 255, 1.0, (1 + ONSET / 255) / 2]))
    torch.testing.assert_close(lit, torch.tensor([0.0, ONSET / 255, 1.0, (1 + ONSET / 255) / 2]))
    torch.testing.assert_close(onset, torch.tensor([1.0, 1.0, 0.0, 0.5]))
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]))
    lit, onset = classes3_scores(logits)
    torch.testing.assert_close(lit, torch.tensor([0.5, 0.1]))
    torch.testing.assert_close(onset, torch.tensor([0.6, 0.5]))


def test_density_threshold_lets_exactly_that_many_pass():
    s = np.array([0.1, 0.9, 0.4, 0.7, 0.3])
    for k in range(6):
        assert (s > density_threshold(s, k)).sum() == k


def test_calibration_hits_each_keys_training_density_and_pools_rare_keys():
    rng = np.random.default_rng(1)
    N = 4000
    density = np.linspace(0.01, 0.3, K)
    density[0] = 0.001  # 4 positives: fewer than min_positives, takes the pooled threshold
    state = np.where(rng.random((N, K)) < density, SUSTAIN, 0).astype(np.uint8)
    prev = np.roll(state, 1, axis=0)
    state[(state > 0) & (prev > 0) & (rng.random((N, K)) < 0.3)] = ONSET  # re-strikes
    lit = np.clip(0.3 * (state > 0) + rng.normal(0.2, 0.15, (N, K)), 0, 1)  # informative, miscalibrated
    onset = rng.random((N, K))
    cal = Calibration.fit(lit, onset, state, prev, min_positives=20)
    out = decode(torch.from_numpy(lit).float(), torch.from_numpy(onset).float(), torch.from_numpy(prev > 0), cal,
                 THRESHOLD)
    got = (out.numpy() > 0).mean(axis=0)
    real = (state > 0).mean(axis=0)
    np.testing.assert_allclose(got[1:], real[1:], atol=0.005)  # per key (exact where both fits are per key)
    after_silence = prev == 0
    assert cal.lit_thresholds[0] == pytest.approx(density_threshold(lit[after_silence], int((state[after_silence] > 0)
                                                                                        .sum())))
    for k in range(K):  # notes start and continue as often as in the data
        for mask, density in ((prev[:, k] == 0, cal.lit_density[k]), (prev[:, k] > 0, cal.hold_density[k])):
            assert density == pytest.approx((state[mask, k] > 0).mean())
            if (state[mask, k] > 0).sum() >= 20:  # enough positives for a key's own threshold
                assert (out.numpy()[mask, k] > 0).mean() == pytest.approx(density, abs=1.5 / mask.sum())
    # the onset thresholds match each key's re-strike density among its lit-after-lit pixels
    both = (state > 0) & (prev > 0)
    held = torch.ones(N, K, dtype=torch.bool)
    restrike = decode(torch.ones(N, K), torch.from_numpy(onset).float(), held, cal, THRESHOLD).numpy() == ONSET
    for k in range(K):
        if (state[both[:, k], k] == ONSET).sum() >= 20:
            assert restrike[both[:, k], k].mean() == pytest.approx((state[both[:, k], k] == ONSET).mean(), abs=0.01)
            assert restrike[both[:, k], k].mean() == pytest.approx(cal.onset_density[k], abs=0.01)
    # draws at temperature 1 are as dense as the data too (the fitted offsets), per key
    drawn = decode(torch.from_numpy(lit).float(), torch.from_numpy(onset).float(), torch.from_numpy(prev > 0), cal,
                   Sampling("sample", 1.0), torch.Generator().manual_seed(5)).numpy()
    np.testing.assert_allclose((drawn > 0).mean(axis=0)[1:], real[1:], atol=0.03)  # binomial noise: sd <= 0.0075
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal


def test_decode_rules_threshold_and_previous_column():
    cal = Calibration((0.5,) * 4, (0.5,) * 4)
    lit = torch.tensor([0.9, 0.9, 0.9, 0.2])
    onset = torch.tensor([0.1, 0.1, 0.9, 0.9])
    prev = torch.tensor([False, True, True, True])
    assert decode(lit, onset, prev, cal, THRESHOLD).tolist() == [ONSET, SUSTAIN, ONSET, 0]
    assert decode(lit, onset, prev, None, THRESHOLD).tolist() == [ONSET, SUSTAIN, ONSET, 0]  # 0.5 without a calibration
    with pytest.raises(ValueError, match="recalibrate"):
        decode(lit[:3], onset[:3], prev[:3], cal, THRESHOLD)


def test_sample_decode_is_seeded_and_approaches_the_thresholds_as_temperature_falls():
    lit, onset = torch.rand(200, K), torch.rand(200, K)
    prev = torch.rand(200, K) > 0.5
    cal = Calibration(tuple(np.linspace(0.2, 0.8, K)), (0.4,) * K)
    draw = lambda t, seed: decode(lit, onset, prev, cal, Sampling("sample", t, seed),  # noqa: E731
                                  torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1.0, 3), draw(1.0, 3))
    assert not torch.equal(draw(1.0, 3), draw(1.0, 4))
    exact = decode(lit, onset, prev, cal, THRESHOLD)
    disagree = [(draw(t, 11) != exact).float().mean().item() for t in (1.0, 0.1, 1e-4)]
    assert disagree[0] > disagree[1] > disagree[2] and disagree[2] < 0.002
    # temperature 1 is the score itself
    torch.testing.assert_close(tempered(torch.tensor([0.3]), torch.tensor([0.7]), 1.0), torch.tensor([0.3]))


# -- losses -------------------------------------------------------------------------------------------


def test_weighted_losses_on_hand_computed_cases():
    t = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    y = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5])
    assert float(balanced_pos_weight(t)) == pytest.approx(2.0)  # sqrt(4 dark / 1 lit)
    assert float(weighted_mse(y, t, 1.0)) == pytest.approx(0.5 / 5)
    assert float(weighted_mse(y, t, 3.0)) == pytest.approx((0.25 + 3 * 0.25) / 7)
    assert float(paper_custom_loss(y, t)) == pytest.approx((0.8 * 0.25 + 1.5 * 0.25) / 5)
    # classes: two pixels predicted perfectly as silent, one uniform over an onset
    logits = torch.tensor([[50.0, 0, 0], [50.0, 0, 0], [0, 0, 0]])
    classes = torch.tensor([0, 0, 1])
    plain = weighted_class_cross_entropy(logits, classes, None)
    assert float(plain) == pytest.approx(math.log(3) / 3, rel=1e-4)
    weighted = weighted_class_cross_entropy(logits, classes, torch.tensor([1.0, 4.0, 1.0]))
    assert float(weighted) == pytest.approx(4 * math.log(3) / (1 + 1 + 4), rel=1e-4)  # the missed onset weighs more
    w = balanced_class_weights(classes)
    assert w[1] / w[0] == pytest.approx(math.sqrt(2))  # 1 / sqrt(frequency)
    assert float((w[classes]).mean()) == pytest.approx(1.0)


def test_presets_give_the_papers_losses_and_overrides_win():
    _, paper, _ = tiny("seq2seq", preset="paper")
    assert (paper.pos_weight, paper.select, paper.targets, paper.teacher_forcing) == (1.0, "loss", "first", False)
    _, default, _ = tiny("seq2seq")
    assert (default.pos_weight, default.select, default.targets, default.teacher_forcing) == (None, "onset_f1", "all",
                                                                                              True)
    _, mixed, _ = tiny("lstm-classes3", {"select": "onset_f1"}, preset="paper")
    assert mixed.class_weights == (1.0, 1.0, 1.0) and mixed.select == "onset_f1"
    with pytest.raises(ValueError, match="no preset 'modern'"):
        get_spec("lstm").config("enc2", SHAPE, preset="modern")
    assert get_spec("lstm").config("enc1", (4, K, T), {"hidden": 8}).state is False
    # the paper's custom loss stays as it is under the paper preset
    spec, config, _ = tiny("lstm-custom", preset="paper")
    y, t = torch.rand(2, 5, K), (torch.rand(2, 5, K) > 0.7).float()
    assert float(spec.loss_for(config)(y, t)) == pytest.approx(float(paper_custom_loss(y, t)))


def test_the_run_name_of_a_default_request_has_no_preset_and_a_preset_changes_it():
    from tasks.steps.train import TrainRequest, run_name

    plain = TrainRequest(model="lstm", encoding="enc2", tables_name="x")
    assert "preset" not in plain.to_dict()
    paper = TrainRequest(model="lstm", encoding="enc2", tables_name="x", preset="paper")
    assert paper.to_dict()["preset"] == "paper"
    assert run_name(plain, "v", {}) != run_name(paper, "v", {})


# -- seq2seq pairs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("T_,context,horizon", [(40, 20, 10), (40, 20, 7), (200, 100, 10), (31, 30, 1), (12, 2, 10)])
def test_seq2seq_pairs_cover_every_target_column(T_, context, horizon):
    starts = chunk_starts(T_, context, horizon)
    covered = sorted({c for s in starts for c in range(s, s + horizon)})
    assert covered == list(range(context, T_)) and all(s + horizon <= T_ for s in starts)
    images = torch.arange(T_, dtype=torch.uint8).expand(2, 1, 3, T_).contiguous()  # pixel = its column
    x, y = seq2seq_all_pairs(images, context, horizon)
    assert x.shape == (2 * len(starts), context, 3) and y.shape == (2 * len(starts), horizon, 3)
    cols = torch.round(y[..., 0] * 255).long()
    assert sorted(set(cols.flatten().tolist())) == list(range(context, T_))
    torch.testing.assert_close(torch.round(x[:, -1, 0] * 255).long() + 1, cols[:, 0])  # context right before


# -- teacher forcing and generation ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "lstm-classes3", "seq2seq", "seq2seq-bidir"])
@torch.no_grad()
def test_teacher_forced_predictions_are_causal(name):
    spec, config, nets = tiny(name)
    images = roll(2)
    start, t = 22, 31
    x = images.float()[:, 0].transpose(1, 2) / 255
    changed = images.clone()
    changed[..., t:] = roll(2, seed=5)[..., t:]
    y = changed.float()[:, 0].transpose(1, 2) / 255
    a = teacher_forced_outputs(config, nets["model"], x, start)
    b = teacher_forced_outputs(config, nets["model"], y, start)
    assert a.shape[:3] == (2, T - start, K)
    torch.testing.assert_close(a[:, : t - start + 1], b[:, : t - start + 1])  # columns <= t see columns < t only
    assert not torch.allclose(a[:, t - start + 1:], b[:, t - start + 1:])
    state = spec.teacher_forced(config, nets, images, start, None)
    assert state.shape == (2, K, T - start) and state.dtype == np.uint8
    np.testing.assert_array_equal(state[..., : t - start + 1],
                                  spec.teacher_forced(config, nets, changed, start, None)[..., : t - start + 1])


class _Constant(nn.Module):
    """A next-column "model" that outputs ``value`` for every key and records the columns fed to it."""

    def __init__(self, value: float, config: LstmConfig):
        super().__init__()
        self.value, self.config, self.fed = value, config, []

    def forward(self, x, state=None, return_state=False):
        self.fed.append(x.clone())
        y = torch.full(x.shape, self.value)
        return (y, state) if return_state else y


def test_generation_feeds_decoded_columns_and_a_held_everywhere_model_makes_notes():
    config = LstmConfig(hidden=8, features=K, context=5)
    model = _Constant(1.0, config)  # "every key sounds and is held"
    seed = torch.zeros(2, 5, K)
    out = generate_columns(config, model, seed, 6, None, THRESHOLD, None)
    assert out.shape == (2, 6, K)
    assert (out[:, 0] == ONSET).all() and (out[:, 1:] == SUSTAIN).all()  # one note per key, not onsets everywhere
    fed = torch.cat(model.fed[1:], dim=1)  # what came back after the seed: the decoded columns / 255
    torch.testing.assert_close(fed, out[:, :5].float() / 255)
    model = _Constant(ONSET / 255, config)  # "onset everywhere" after a lit seed column: every column starts notes
    out = generate_columns(config, model, torch.ones(1, 5, K), 3, Calibration((0.3,) * K, (0.5,) * K), None)
    assert (out == ONSET).all()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
@torch.no_grad()
def test_samples_keep_the_seed_and_give_new_notes_the_seeds_velocity(name):
    spec, config, nets = tiny(name)
    seeds = roll(3)
    cal = Calibration((0.05,) * K, (0.5,) * K).to_dict()  # low thresholds: notes for sure
    images = spec.sample(config, nets, 3, "enc2", seeds, cal, THRESHOLD)
    assert images.shape == (3, *SHAPE) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., :20], seeds[..., :20].numpy())
    new = images[..., 20:]
    assert np.isin(new[:, 0], [0, ONSET, SUSTAIN]).all() and (new[:, 0] > 0).any()
    for b in range(3):
        s = seeds[b].numpy()
        mean = int(round(s[1, :, :20][s[0, :, :20] == ONSET].mean()))
        assert set(np.unique(new[b, 1][new[b, 0] > 0])) == {mean}
        assert (new[b, 1][new[b, 0] == 0] == 0).all() and (new[b, 2] == 0).all()
    again = spec.sample(config, nets, 3, "enc2", seeds, cal, Sampling("sample", 1.0, 7))
    np.testing.assert_array_equal(again, spec.sample(config, nets, 3, "enc2", seeds, cal, Sampling("sample", 1.0, 7)))


# -- validation F1 and the toy run --------------------------------------------------------------------


def test_validation_onset_f1_is_the_monitor_and_counts_a_perfect_predictor_as_one():
    assert f1(**{"tp": 3, "fp": 1, "fn": 1}) == pytest.approx(0.75)
    pred = np.array([[0, ONSET, SUSTAIN, ONSET]])
    assert onset_f1_counts(pred, np.array([[0, ONSET, ONSET, SUSTAIN]])) == {
        "frame_tp": 3, "frame_fp": 0, "frame_fn": 0, "onset_tp": 1, "onset_fp": 1, "onset_fn": 1}
    spec, config, nets = tiny("lstm")
    module = spec.train_module(config, nets)
    assert module.monitor == "neg_onset_f1"
    images = roll(2)
    x = images.float()[:, 0].transpose(1, 2) / 255

    def oracle(b):  # a "model" whose scores are the real next columns
        cols = b[0].float()[:, 0].transpose(1, 2) / 255
        return cols[:, 1:], cols[:, 1:], cols[:, :-1]

    module = SequenceModule(nets["model"], config, spec.loss_for(config), oracle)
    module.model = lambda inp: inp  # noqa: E731  (scores = the targets themselves)
    module.val_step((images, {}))
    metrics = module.val_epoch_end()
    assert metrics["onset_f1"] == pytest.approx(1.0) and metrics["frame_f1"] == pytest.approx(1.0)
    assert metrics["neg_onset_f1"] == -metrics["onset_f1"] and module.val_epoch_end() == {}
    assert x.shape == (2, T, K)
    _, paper, paper_nets = tiny("lstm", preset="paper")
    assert spec.train_module(paper, paper_nets).monitor == "loss"


def _pattern(batch: int, rng) -> torch.Tensor:
    """A repeating 8-column figure (two keys at a time, each held 3 columns), at random phases."""
    base = np.zeros((K, 8), np.uint8)
    for i, k in enumerate([0, 4, 7, 4]):
        base[[k, k + 3], 2 * i] = ONSET
        base[[k, k + 3], 2 * i + 1] = SUSTAIN
    full = np.tile(base, (1, T // 8 + 2))
    images = np.zeros((batch, *SHAPE), np.uint8)
    for b in range(batch):
        p = rng.integers(8)
        images[b, 0] = full[:, p:p + T]
        images[b, 1] = np.where(images[b, 0] > 0, 70, 0)
    return torch.from_numpy(images)


def test_a_tiny_lstm_trained_on_a_repeating_pattern_keeps_playing_at_the_datas_density():
    torch.set_num_threads(1)
    spec = get_spec("lstm")
    config = spec.config("enc2", SHAPE, {"hidden": 16, "context": 20})
    nets = spec.networks(config)
    module = spec.train_module(config, nets)
    opt = torch.optim.Adam(nets["model"].parameters(), lr=0.03)
    rng = np.random.default_rng(0)
    for step in range(100):
        opt.zero_grad()
        module.loss((_pattern(8, rng), {})).backward()
        opt.step()
    cal = spec.calibrate(config, nets, [(_pattern(16, rng), {})])
    seeds = _pattern(4, rng)
    images = spec.sample(config, nets, 4, "enc2", seeds, cal, THRESHOLD)
    data = (seeds[:, 0] > 0).float().mean().item()
    got = (images[:, 0, :, 20:] > 0).mean()
    assert 0.5 * data <= got <= 2 * data, (got, data)
    assert (images[:, 0, :, 20:] == ONSET).any()


# -- seeds and previews -------------------------------------------------------------------------------


def test_seed_rows_come_from_distinct_test_pieces_then_others():
    from tasks.steps.sample import choose_seed_rows

    rows = [{"piece_id": p, "split": split, "window_start": w, "transposition": 0, "noise_seed": -1}
            for p, split in [(1, "test"), (2, "test"), (3, "train"), (4, "validation")] for w in (0, 200, 400)]
    rows += [{**rows[0], "transposition": 2}]
    two = choose_seed_rows(rows, 2, seed=3)
    assert {r["piece_id"] for r in two} == {1, 2} and all(r["transposition"] == 0 for r in two)
    four = choose_seed_rows(rows, 4, seed=3)
    assert sorted(r["piece_id"] for r in four) == [1, 2, 3, 4]
    assert choose_seed_rows(rows, 4, seed=3) == four
    many = choose_seed_rows(rows, 14, seed=1)
    assert len(many) == 14 and len({(r["piece_id"], r["window_start"]) for r in many[:12]}) == 12


def test_the_preview_paints_exactly_the_notes_the_midi_holds():
    from storage_schemas.encodings import get_encoding
    from tasks.kernels.rolls import decode_runs_kernel
    from tasks.steps.preview import roll_rgb

    config = get_encoding("enc2").config(columns=12, pitch_lo=60, pitch_hi=63)
    image = np.zeros((3, 4, 12), np.uint8)
    image[0, 0, 1:4] = [200, 30, 255]  # off-level values: a note all the same
    image[0, 1, 2:6] = [ONSET, SUSTAIN, ONSET, 90]  # two notes
    image[0, 3, 7] = 1
    image[1] = np.where(image[0] > 0, 64, 0)
    rgb = roll_rgb(image, config)[::-1]  # rows back in key order
    painted = ~np.all(rgb == 1.0, axis=-1)
    np.testing.assert_array_equal(painted, image[0] > 0)
    row, start, _, _ = decode_runs_kernel(image[0])
    orange = np.all(np.isclose(rgb, (0.95, 0.45, 0.05)), axis=-1)
    starts = np.zeros_like(painted)
    starts[row, start] = True
    np.testing.assert_array_equal(orange, starts)
