"""The config objects: one definition per concern, validated the same way from the CLI, the form and a
stored manifest."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flows.build import AugmentParams, BuildParams, HilbertParams, RollParams
from flows.cli import _build_params, _parser, main
from storage_schemas.encodings import (ENCODINGS, AugmentConfig, HilbertConfig, RollConfig, config_from_dict,
                                       get_encoding)

CONFIGS = [RollConfig("enc1", columns=64, pitch_lo=36, pitch_hi=96, resolution_s=0.1),
           HilbertConfig(order=6, sample_rate=8000), get_encoding("hilbert-guitar").config(),
           AugmentConfig(transpositions=(-2, 2), noise_fraction=0.1)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json_and_reject_unknown_keys_and_versions(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(data) == config
    with pytest.raises(ValueError, match="unknown .* keys: \\['colums'\\]"):
        type(config).from_dict({**data, "colums": 100})
    with pytest.raises(ValueError, match="schema_version"):
        type(config).from_dict({**data, "schema_version": 99})


def test_a_manifest_config_comes_back_as_its_class():
    for config in CONFIGS[:3]:
        assert config_from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown encoding 'enc9'; choose from enc1, enc2, enc3, hilbert"):
        config_from_dict({"encoding": "enc9"})


def test_each_encoding_is_typed_and_fixes_what_it_must():
    assert {e.kind for e in ENCODINGS.values()} == {"roll", "audio"}
    assert [ENCODINGS[n].channels for n in ("enc1", "enc2", "enc3", "hilbert")] == [4, 3, 1, 1]
    guitar = get_encoding("hilbert-guitar").config(HilbertConfig(order=6, timbre="piano", audio="auto"))
    assert (guitar.encoding, guitar.order, guitar.timbre, guitar.audio) == ("hilbert-guitar", 6, "guitar", "synth")
    with pytest.raises(ValueError, match="guitar timbre"):
        HilbertConfig(encoding="hilbert-guitar")
    with pytest.raises(TypeError, match="RollConfig"):
        get_encoding("enc2").config(HilbertConfig())
    assert get_encoding("enc1").config(RollConfig("enc2", columns=50)) == RollConfig("enc1", columns=50)


@pytest.mark.parametrize("form,cls", [(RollParams, RollConfig), (HilbertParams, HilbertConfig),
                                      (AugmentParams, AugmentConfig)])
def test_the_form_sections_are_the_config_classes_fields_with_their_defaults_and_help(form, cls):
    schema = form.model_json_schema()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "encoding"}
    assert set(schema["properties"]) == set(fields)
    for name, f in fields.items():
        prop = schema["properties"][name]
        assert prop["description"] == f.metadata["help"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert prop.get("default") == (list(default) if isinstance(default, tuple) else default)
    assert "Params" not in schema["title"] and "Config" not in schema["title"]


def test_the_form_refuses_what_the_config_refuses():
    with pytest.raises(ValueError, match="hop_columns must be in 1..columns"):
        RollParams(columns=10, hop_columns=20)
    with pytest.raises(ValueError, match="pitch_lo <= pitch_hi"):
        BuildParams(roll={"pitch_lo": 90, "pitch_hi": 40})
    with pytest.raises(ValueError):
        BuildParams(encodings=["enc9"])
    with pytest.raises(ValueError, match="extra"):
        RollParams(colums=100)


def test_the_window_length_goes_from_the_command_line_to_the_config_object():
    args = _parser().parse_args(["build", "--columns", "64", "--pitch-range", "36,96", "--resolution", "0.1",
                                 "--encodings", "enc1,hilbert-guitar", "--order", "6"])
    params = _build_params(args, {"columns": 64, "pitch_lo": 36, "pitch_hi": 96, "resolution_s": 0.1},
                           {"encodings": ["enc1", "hilbert-guitar"]})
    roll, audio = params.image_configs()
    assert roll == RollConfig("enc1", columns=64, hop_columns=64, pitch_lo=36, pitch_hi=96, resolution_s=0.1)
    assert audio == HilbertConfig(encoding="hilbert-guitar", order=6, timbre="guitar", audio="synth")
    # options left out keep the config's own defaults (stated once, in the dataclass)
    plain = _build_params(_parser().parse_args(["build"]), {}, {}).image_configs()
    assert plain == [RollConfig(e) for e in ("enc1", "enc2", "enc3")]


def test_a_bad_option_is_one_line_and_exit_code_2(capsys):
    assert main(["build", "--columns", "10", "--hop", "20", "--store", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "midipix build: hop_columns must be in 1..columns (10), got 20"


def test_a_roll_encoding_without_a_renderer_is_refused_not_drawn_as_its_look_alike(monkeypatch):
    """Rendering dispatches on the encoding, not on its channel count: a new 3-channel encoding registered
    without a renderer must not come out as enc2."""
    import numpy as np

    import storage_schemas.encodings as SE
    from tasks.kernels.rolls import to_windows

    enc4 = SE.Encoding("enc4", SE.RollConfig, ("state", "velocity", "program"), "uint8", "a new encoding")
    monkeypatch.setitem(SE.ENCODINGS, "enc4", enc4)
    cfg = SE.RollConfig("enc4")
    assert cfg.shape == (3, 88, 200)
    with pytest.raises(ValueError, match="no roll renderer for encoding 'enc4'"):
        to_windows(np.array([60]), np.array([80]), np.array([0]), np.array([0.0]), np.array([1.0]), cfg)
