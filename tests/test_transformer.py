"""The causal Transformer over roll columns (models/transformer.py): causality, its parameter count, stepwise
generation equal to one forward pass, the NextColumnLSTM contract, and learning a repeating pattern. CPU only."""

from __future__ import annotations

import pytest
import torch

from models import get_spec
from models.lstm import _Head
from models.registry import TransformerSpec
from models.transformer import NextColumnTransformer, TransformerConfig

SMALL = TransformerConfig(d_model=32, layers=2, heads=4, dropout=0.0, max_len=24, features=10)


pytestmark = pytest.mark.usefixtures("torch_one_thread", "torch_seeded")


def expected_parameters(c: TransformerConfig) -> int:
    """Counted by hand: input projection, positions, per layer attention (q, k, v, out) + MLP + 2 LayerNorms,
    the final LayerNorm and the head."""
    d = c.d_model
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * 2 * d
    return (c.features * d + d) + c.max_len * d + c.layers * layer + 2 * d + (d * c.outputs + c.outputs)


@pytest.mark.parametrize("head", ["regression", "classes3"])
def test_the_parameter_count_is_the_hand_count_and_the_registry_reports_it(head):
    config = TransformerConfig(head=head)
    model = NextColumnTransformer(config)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(config)
    name = "transformer" if head == "regression" else "transformer-classes3"
    described = get_spec(name).describe()
    assert described["parameters"]["enc2"] == expected_parameters(config) == (650_584 if head == "regression" else 673_288)
    assert described["family"] == "lstm" and isinstance(get_spec(name), TransformerSpec)


@pytest.mark.parametrize("head", ["regression", "classes3"])
@torch.no_grad()
def test_the_output_at_t_does_not_see_later_columns(head):
    model = NextColumnTransformer(TransformerConfig(**{**SMALL.to_dict(), "head": head})).eval()
    x = torch.rand(2, 16, 10)
    y = model(x)
    x2 = x.clone()
    x2[:, 9:] = torch.rand(2, 7, 10)
    y2 = model(x2)
    torch.testing.assert_close(y[:, :9], y2[:, :9])
    assert not torch.allclose(y[:, 9:], y2[:, 9:])
    assert isinstance(model.head, _Head) and y.shape == ((2, 16, 10, 3) if head == "classes3" else (2, 16, 10))


@torch.no_grad()
def test_one_column_at_a_time_equals_the_full_forward_pass():
    model = NextColumnTransformer(SMALL).eval()
    x = torch.rand(3, 20, 10)
    full = model(x)
    y, state = model(x[:, :5], return_state=True)  # a seed, then one column per call
    outs = [y]
    for t in range(5, 20):
        y, state = model(x[:, t:t + 1], state, return_state=True)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)
    assert state.shape == (3, 20, 10)
    # past max_len the oldest columns drop out: the state never exceeds max_len columns
    for _ in range(10):
        y, state = model(torch.rand(3, 1, 10), state, return_state=True)
    assert state.shape == (3, SMALL.max_len, 10) and y.shape == (3, 1, 10)
    with pytest.raises(ValueError, match="exceed max_len"):
        model(torch.rand(1, SMALL.max_len + 1, 10))


@torch.no_grad()
def test_generate_feeds_back_its_own_columns_like_the_lstm():
    model = NextColumnTransformer(TransformerConfig(**{**SMALL.to_dict(), "head": "classes3"})).eval()
    seed = torch.rand(2, 6, 10)
    new = model.generate(seed, 4)
    assert new.shape == (2, 4, 10)
    x = seed
    for _ in range(4):  # by hand: argmax of the last output, decoded to values, appended
        x = torch.cat([x, model.head.feedback(model(x)[:, -1:])], dim=1)
    torch.testing.assert_close(new, x[:, 6:])
    assert set(new.unique().tolist()) <= {0.0, torch.tensor(125 / 255).item(), 1.0}


def test_it_learns_a_repeating_pattern_far_better_than_chance():
    """Each key plays a period-4 pattern (on, on, on, off) shifted by its key: 75 % lit, so predicting the
    majority ("always lit") errs on 25 % of the pixels; the next column follows from the last three."""
    config = TransformerConfig(d_model=32, layers=1, heads=2, dropout=0.0, max_len=32, features=12)
    model = NextColumnTransformer(config)
    t = torch.arange(25)[None, :, None]
    k = torch.arange(12)[None, None, :]
    b = torch.arange(8)[:, None, None]
    x = ((t + k + b) % 4 != 3).float()  # (8, 25, 12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy(model(x[:, :-1]), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        errors = ((model(x[:, :-1])[:, 3:] > 0.5).float() != x[:, 4:]).float().mean().item()
    assert errors < 0.05, errors  # chance (the majority class) errs on 0.25


def test_the_spec_sizes_the_transformer_by_the_dataset_and_refuses_windows_beyond_max_len():
    spec = get_spec("transformer")
    config = spec.config("enc2", (3, 61, 64))
    assert isinstance(config, TransformerConfig) and config.features == 61 and config.context == 32
    assert spec.config("enc3", (1, 88, 200)) == TransformerConfig()
    assert get_spec("transformer-classes3").config("enc2").head == "classes3"
    with pytest.raises(ValueError, match="set max_len >= 199"):
        spec.config("enc2", (3, 88, 200), {"max_len": 100})
    with pytest.raises(ValueError, match="features follow"):
        spec.config("enc2", (3, 88, 200), {"features": 12})
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(d_model=30, heads=4)
    assert TransformerConfig.from_dict(TransformerConfig(layers=2).to_dict()) == TransformerConfig(layers=2)
