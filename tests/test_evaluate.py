"""`midipix evaluate`: every run of a table set and the baselines scored on its test split, as a report."""

from __future__ import annotations

import json
import re

import pytest

from flows.build import BuildParams, RollParams, run_build
from flows.cli import main
from storage_schemas.training import TrainConfig
from tasks.steps.evaluate import ROW_KEYS, EvalSettings, evaluate, findings, write_report

pytestmark = pytest.mark.usefixtures("prefect_api", "midipix_env")

ROLL = RollParams(resolution_s=0.1, columns=40, hop_columns=40, pitch_lo=36, pitch_hi=96)
SMALL = EvalSettings(max_windows=40, free_windows=8, train_windows=100)
BASELINES = {"zero", "repeat-last-column", "loop-seed", "markov", "random-at-density", "real-vs-real"}


@pytest.fixture(scope="module")
def rolls(tmp_path_factory, prefect_api):
    """A store with table set ``ev``: enc2 and enc3 of 61 pitches x 40 columns of 0.1 s; half the pieces test."""
    from tasks.storage.settings import reload_settings

    store = str(tmp_path_factory.mktemp("ev-store"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIDIPIX_CACHE_DIR", str(tmp_path_factory.mktemp("ev-cache")))
        reload_settings()
        state = run_build(BuildParams(source="generated:6:0.3", store=store, name="ev", encodings=["enc2", "enc3"],
                                      roll=ROLL, previews=0, split={"mode": "random", "ratios": (0.5, 0.0, 0.5)}),
                          return_state=True)
    reload_settings()
    assert state.is_completed(), state.message
    return store


def _by(rows, **kw):
    return {(r["name"], r["metric"]): r["value"] for r in rows if all(r[k] == v for k, v in kw.items())}


def test_baselines_alone_when_no_run_was_trained(rolls):
    rows = evaluate(rolls, "ev", SMALL, log=lambda _: None)
    assert rows and all(tuple(r) == ROW_KEYS for r in rows)
    assert {r["kind"] for r in rows} == {"baseline"}
    assert {r["encoding"] for r in rows} == {"enc2", "enc3"}
    for enc in ("enc2", "enc3"):
        got = _by(rows, encoding=enc)
        assert {name for name, _ in got} == BASELINES
        for name in BASELINES:
            assert ("next_column_frame_f1" in {m for n, m in got if n == name}), name
        assert got[("zero", "next_column_frame_f1")] == 0.0 and got[("zero", "note_f1")] == 0.0
        # holding the last column keeps most lit pixels right at 0.1 s a column; never an onset
        assert got[("repeat-last-column", "next_column_frame_f1")] > 0.5
        assert got[("repeat-last-column", "next_column_onset_f1")] == 0.0
        # other real windows: the density of the test split itself, give or take the window drawn
        assert 0.5 <= got[("real-vs-real", "note_density_ratio")] <= 2.0
        for metric in ("pitch_class_histogram_overlap", "note_count_overlap"):
            assert 0.0 <= got[("real-vs-real", metric)] <= 1.0


def test_runs_are_scored_beside_the_baselines(rolls, tmp_path):
    from flows.train import TrainGridParams, TrainOneParams, run_train_grid

    run = TrainOneParams(tables_name="ev", store=rolls, model_overrides={"hidden": 8, "conv_channels": [8, 4, 2]},
                         samples=0, train=TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=3))
    run_train_grid(TrainGridParams(models=["lstm", "dcgan"], encodings=["enc2"], run=run))
    rows = evaluate(rolls, "ev", SMALL, log=lambda _: None)
    runs = {r["model"]: r for r in rows if r["kind"] == "run"}
    assert set(runs) == {"lstm", "dcgan"}
    lstm = _by(rows, kind="run", model="lstm")
    metrics = {m for _, m in lstm}
    assert {"next_column_frame_f1", "next_column_onset_f1", "note_f1", "note_density_ratio"} <= metrics
    dcgan = {m for _, m in _by(rows, kind="run", model="dcgan")}
    assert "pitch_class_histogram_overlap" in dcgan and "note_f1" not in dcgan  # from noise: nothing to match
    assert {r["n"] for r in rows if r["model"] == "lstm" and r["metric"].startswith("next_column")} == {
        r["n"] for r in rows if r["name"] == "zero" and r["metric"].startswith("next_column") and r["encoding"] == "enc2"}


def test_cli_writes_the_three_reports(rolls, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", "--store", rolls, "--tables", "ev", "--out", str(out), "--max-windows", "30",
                 "--free-windows", "6", "--train-windows", "60"])
    assert code == 0
    rows = json.loads((out / "report.json").read_text())
    assert rows and all(set(r) == set(ROW_KEYS) for r in rows)
    md = (out / "report.md").read_text()
    assert "| enc2 | random-at-density | baseline |" in md and "## Findings" in md
    page = (out / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # self-contained: nothing fetched
    printed = capsys.readouterr().out
    assert "report.html" in printed


def test_cli_errors_are_one_line(tmp_path, capsys):
    store = str(tmp_path / "empty")
    assert main(["evaluate", "--store", store, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "build one: midipix build" in err
    assert main(["evaluate", "--store", store, "--tables", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no image datasets of table set 'nope'" in err
    assert main(["evaluate", "--store", store, "--tables", "x", "--out", str(tmp_path / "r"),
                 "--temperature", "0"]) == 2
    assert "temperature" in capsys.readouterr().err


def _row(name, kind, metric, value, encoding="enc2", model=None):
    return {"name": name, "kind": kind, "model": model or name, "encoding": encoding, "metric": metric,
            "value": value, "n": 10}


def test_findings_call_a_run_below_the_floor_and_a_degenerate_one_so():
    rows = [_row("random-at-density", "baseline", "next_column_onset_f1", 0.05),
            _row("run-a", "run", "next_column_onset_f1", 0.04, model="lstm"),
            _row("run-a", "run", "note_density_ratio", 0.1, model="lstm"),
            _row("run-b", "run", "next_column_onset_f1", 0.30, model="transformer"),
            _row("run-b", "run", "note_density_ratio", 1.2, model="transformer")]
    text = " ".join(findings(rows))
    assert "lstm on enc2 (run-a): next_column_onset_f1 0.040 does not beat the floor" in text
    assert "note_density_ratio 0.10 is outside 0.5–2" in text
    assert "run-b" not in text


def test_write_report_refuses_rows_of_another_shape(tmp_path):
    with pytest.raises(ValueError, match="rows must have keys"):
        write_report([{"name": "x", "value": 1.0}], tmp_path, "t")
    assert not (tmp_path / "report.json").exists()
