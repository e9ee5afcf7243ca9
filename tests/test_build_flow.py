"""The build flow on a real (ephemeral) Prefect API: caching, incremental rebuilds, rejects, S3, crashes."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from flows.build import BuildParams, run_build
from storage_schemas import tables as S
from tasks.steps import tables as T
from tasks.storage.sources import generate_corpus
from tasks.storage.store import LocalStore, Store

pytestmark = pytest.mark.usefixtures("prefect_api", "midipix_env")


def _task_state(flow_state, task: str, timeout: float = 30.0) -> str:
    """The final state name of the flow run's task ``task``. Prefect 3 records task-run states from
    events that the API ingests asynchronously, so right after a flow returns a task run may still be
    missing or show an earlier state: poll until it is there and final."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    seen = {}
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
            seen = {r.name.rsplit("-", 1)[0]: r.state for r in runs}
            state = seen.get(task)
            if state is not None and state.is_final():
                return state.name
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task!r} has no final state after {timeout} s: "
                                     f"{ {k: v.name if v else None for k, v in seen.items()} }")
            time.sleep(0.2)


def _run(**kw):
    state = run_build(BuildParams(**kw), return_state=True)
    return state, (state.result(raise_on_failure=False) if state.is_completed() else None)


def test_build_then_cached_rerun_then_one_new_file(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=5, seed=1, minutes=0.2)
    store = str(tmp_path / "store")

    state, first = _run(source=str(corpus), store=store, name="c")
    assert state.is_completed()
    assert (first["parsed"], first["reused"]) == (5, 0)
    notes = pd.read_parquet(f"{store}/{S.version_root('c', first['version'])}/notes")
    assert len(notes) == first["rows"]["notes"] > 0

    state, second = _run(source=str(corpus), store=store, name="c")
    assert _task_state(state, "midi-to-tables") == "Cached"
    assert second["version"] == first["version"]

    generate_corpus(corpus, n=6, seed=1, minutes=0.2)
    state, third = _run(source=str(corpus), store=store, name="c")
    assert _task_state(state, "midi-to-tables") == "Completed"
    assert (third["parsed"], third["reused"]) == (1, 5)
    assert third["version"] != first["version"]
    assert T.read_manifest(Store(store), "c")["version"] == third["version"]


def test_cache_is_not_trusted_when_the_artifact_is_gone(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=2, minutes=0.1)
    store = Store(str(tmp_path / "store"))
    _, first = _run(source=str(corpus), store=store.uri, name="c")
    shutil.rmtree(store.path(S.version_root("c", first["version"])))
    state, again = _run(source=str(corpus), store=store.uri, name="c")
    assert _task_state(state, "midi-to-tables") == "Completed"
    assert store.exists(S.manifest_key("c", again["version"]))


def test_corrupt_file_is_recorded_and_strict_fails_without_publishing(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=4, minutes=0.1)
    (corpus / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x00\x90")
    store = Store(str(tmp_path / "store"))
    state, result = _run(source=str(corpus), store=store.uri, name="c")
    assert state.is_completed()
    rejects = pd.read_parquet(f"{store.uri}/{S.version_root('c', result['version'])}/rejects")
    assert rejects.to_dict("records") == [{
        "source": str(corpus / "broken.mid"), "relpath": "broken.mid", "sha256": rejects.sha256[0],
        "error_kind": "truncated", "message": rejects.message[0]}]
    assert "truncated" in rejects.message[0]
    assert result["rows"]["pieces"] == 3

    (corpus / "broken2.mid").write_bytes(b"not midi at all")
    state, _ = _run(source=str(corpus), store=store.uri, name="c", strict=True)
    assert state.is_failed()
    assert "broken2.mid" in str(state.message) or "strict" in str(state.message)
    assert T.read_manifest(store, "c")["version"] == result["version"]  # the old version stays current


@pytest.mark.parametrize("fail_at", [0, 3, 7, 11])
def test_a_crash_while_writing_leaves_the_previous_version_current(tmp_path, monkeypatch, fail_at):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=5, minutes=0.1)
    store = Store(str(tmp_path / "store"))
    _, good = _run(source=str(corpus), store=store.uri, name="c")
    generate_corpus(corpus, n=4, seed=5, minutes=0.1)

    writes = []
    real_write = LocalStore.write_bytes

    def crashing_write(self, key, data):
        if len(writes) == fail_at:
            raise OSError("simulated crash")
        writes.append(key)
        return real_write(self, key, data)

    monkeypatch.setattr(LocalStore, "write_bytes", crashing_write)
    state, _ = _run(source=str(corpus), store=store.uri, name="c", workers=1)
    assert state.is_failed()
    # readers see the previous complete version, and it is intact
    manifest = T.read_manifest(store, "c")
    assert manifest["version"] == good["version"]
    tables = T.load_tables(store, manifest)
    assert tables["pieces"].num_rows == 3

    monkeypatch.setattr(LocalStore, "write_bytes", real_write)
    state, fixed = _run(source=str(corpus), store=store.uri, name="c")
    assert state.is_completed()
    assert fixed["rows"]["pieces"] == 4
    assert T.read_manifest(store, "c")["version"] == fixed["version"]


@pytest.mark.s3
def test_build_into_s3_and_read_back_with_plain_pandas(tmp_path, s3_env):
    from flows.cli import main
    from tasks.storage.settings import get_settings

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=4, seed=6, minutes=0.1)
    state, result = _run(source=str(corpus), store=s3_env, name="c")
    assert state.is_completed()
    pointer = json.loads(Store(s3_env).read_bytes(S.pointer_key("c")))
    notes = pd.read_parquet(f"{s3_env}/{S.version_root('c', pointer['version'])}/notes",
                            storage_options=get_settings().storage_options(s3_env))
    assert len(notes) == result["rows"]["notes"]
    assert set(notes["split"].astype(str)) <= set(S.SPLITS)

    state, again = _run(source=str(corpus), store=s3_env, name="c")
    assert _task_state(state, "midi-to-tables") == "Cached"
    # the S3 source path works as well: copy the corpus into the bucket and build from there
    src = Store(f"{s3_env}-src")
    for p in sorted(corpus.iterdir()):
        src.write_bytes(p.name, p.read_bytes())
    state, from_s3 = _run(source=src.uri, store=s3_env, name="from-s3")
    assert state.is_completed() and from_s3["rows"]["notes"] == result["rows"]["notes"]
    assert main(["show", s3_env]) == 0


def test_credentials_never_reach_flow_parameters_or_artifacts(tmp_path, s3_env):
    from prefect.client.orchestration import get_client

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=2, seed=7, minutes=0.1)
    state, _ = _run(source=str(corpus), store=s3_env, name="c")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        artifacts = client.read_artifacts()
    blob = json.dumps(run.parameters, default=str) + json.dumps([a.data for a in artifacts], default=str)
    assert "testing-secret" not in blob and "testing-key" not in blob
    results = list((tmp_path / "cache" / "prefect-results").iterdir())
    assert results and all("testing-secret" not in p.read_text(errors="replace") for p in results)


def test_cli_build_and_show(tmp_path, capsys):
    from flows.cli import main

    store = str(tmp_path / "store")
    assert main(["build", "--source", "generated:4:0.1", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "generated-4-0.1min" in out and "train" in out
    assert main(["show", store]) == 0
    out = capsys.readouterr().out
    assert "pieces" in out and "rejects 0" in out
    assert main(["show", str(tmp_path / "empty")]) == 1


def _maestro_like_zip(path, corpus) -> None:
    """A small archive laid out like maestro-v3.0.0-midi.zip, with a column-oriented v3 JSON."""
    import zipfile

    files = sorted(corpus.iterdir())
    meta = {"canonical_composer": {}, "canonical_title": {}, "split": {}, "year": {}, "midi_filename": {},
            "audio_filename": {}, "duration": {}}
    splits = ["train", "train", "validation", "test"]
    with zipfile.ZipFile(path, "w") as z:
        for i, f in enumerate(files):
            rel = f"2018/{f.stem}.midi"
            z.writestr(f"maestro-v3.0.0/{rel}", f.read_bytes())
            for col, val in (("canonical_composer", f"Composer {i}"), ("canonical_title", f'Sonata "No. {i}"'),
                             ("split", splits[i % 4]), ("year", 2018), ("midi_filename", rel),
                             ("audio_filename", rel.replace(".midi", ".wav")), ("duration", 12.5)):
                meta[col][str(i)] = val
        z.writestr("maestro-v3.0.0/maestro-v3.0.0.json", json.dumps(meta))


def test_maestro_source_downloads_verifies_and_uses_the_published_split(tmp_path):
    import functools
    import hashlib
    import http.server
    import threading

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=4, seed=8, minutes=0.1)
    served = tmp_path / "served"
    served.mkdir()
    _maestro_like_zip(served / "maestro-v3.0.0-midi.zip", corpus)
    data = (served / "maestro-v3.0.0-midi.zip").read_bytes()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/maestro-v3.0.0-midi.zip"
    try:
        wrong = {"url": url, "size": len(data), "sha256": "0" * 64}
        state, _ = _run(source="maestro", store=str(tmp_path / "store"), maestro=wrong)
        assert state.is_failed() and "sha256" in str(state.message).lower()
        assert not any((tmp_path / "cache" / "sources").glob("maestro*"))  # nothing unverified published

        good = {"url": url, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        state, result = _run(source="maestro", store=str(tmp_path / "store"), maestro=good)
        assert state.is_completed(), state.message
    finally:
        server.shutdown()
    assert result["name"] == "maestro-v3.0.0"
    pieces = pd.read_parquet(f"{result['store']}/{S.version_root(result['name'], result['version'])}/pieces")
    assert sorted(pieces.split.astype(str)) == ["test", "train", "train", "validation"]
    assert set(pieces.title) == {f'Sonata "No. {i}"' for i in range(4)}
    assert (pieces.maestro_duration_s == 12.5).all()


def test_cli_hilbert_build_uses_recordings_reports_a_bad_one_and_reuses_shards(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from flows.cli import main
    from storage_schemas import shards as SH
    from tasks.steps.loader import read_dataset_manifest

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n=3, seed=9, minutes=0.05)
    t = np.arange(8000) / 16000
    sf.write(str(corpus / "gen-s9-00000.wav"), np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.3, 16000)
    (corpus / "gen-s9-00001.wav").write_bytes(b"RIFF not really a wave file")
    store = Store(str(tmp_path / "store"))
    args = ["build", "--source", str(corpus), "--store", store.uri, "--name", "c", "--encodings", "hilbert"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sound: 1 pieces recorded, 1 synthesized, 1 left out" in out
    assert "left out gen-s9-00001.mid: audio_unreadable:" in out
    manifest = read_dataset_manifest(store, SH.dataset_name("c", "hilbert"))
    assert [r["relpath"] for r in manifest["rejects"]] == ["gen-s9-00001.mid"]

    state, _ = _run(source=str(corpus), store=store.uri, name="c", encodings=["hilbert"])
    assert _task_state(state, "render-images") == "Cached"  # nothing changed: nothing rendered
    # --strict: a piece left out fails the run, and the dataset version stays the published one
    state, _ = _run(source=str(corpus), store=store.uri, name="c", encodings=["hilbert"], strict=True,
                    hilbert={"audio": "recorded"})
    assert state.is_failed() and "left out" in str(state.message)
    assert read_dataset_manifest(store, SH.dataset_name("c", "hilbert"))["version"] == manifest["version"]
