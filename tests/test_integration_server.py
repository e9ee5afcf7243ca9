"""Against a real ``prefect server`` process: the CLI's flow runs, and a served deployment run by id.

This is how the team uses midipix: a long-running server, ``midipix serve`` registering the rebuild
deployment (cron schedule + UI form), and runs triggered through the API as the UI would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "prefect server", proc)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _client_env(api: str, tmp: Path) -> dict:
    env = {**os.environ, "PREFECT_API_URL": api, "MIDIPIX_CACHE_DIR": str(tmp / "cache"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_HOME", None)
    return env


def _task_state(api: str, flow_run_id: str, task: str, timeout: float = 30.0) -> str:
    """The final state name of a flow run's task; the server ingests task-run states from events
    asynchronously, so poll until the task run is there and final."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=10)
        r.raise_for_status()
        states = {t["name"].rsplit("-", 1)[0]: t["state"] for t in r.json()}
        state = states.get(task)
        if state is not None and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state["name"]
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task!r} has no final state after {timeout} s: {states}")
        time.sleep(0.2)


def _flow_runs(api: str) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC"}, timeout=10)
    r.raise_for_status()
    return r.json()


def test_cli_runs_are_recorded_and_the_rerun_is_cached(prefect_server, tmp_path):
    env = _client_env(prefect_server, tmp_path)
    store = str(tmp_path / "store")
    cmd = [str(BIN / "midipix"), "build", "--source", "generated:3:0.1", "--store", store, "--json"]
    first = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    second = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    assert first["version"] == second["version"]
    runs = [r for r in _flow_runs(prefect_server) if r["flow_id"] and r["state"]]
    ours = [r for r in runs if r["parameters"].get("params", {}).get("store") == store]
    assert [r["state"]["type"] for r in ours] == ["COMPLETED", "COMPLETED"]
    assert _task_state(prefect_server, ours[0]["id"], "midi-to-tables") == "Completed"
    assert _task_state(prefect_server, ours[1]["id"], "midi-to-tables") == "Cached"


def test_served_deployment_runs_from_the_api_with_form_parameters(prefect_server, tmp_path):
    env = _client_env(prefect_server, tmp_path)
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen([str(BIN / "midipix"), "serve", "--cron", "0 3 * * *"], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        name = "build-dataset/rebuild-dataset"
        dep = _wait(lambda: (r := httpx.get(f"{prefect_server}/deployments/name/{name}", timeout=5)).status_code
                    == 200 and r.json(), 90, "deployment registration", serve)
        assert dep["schedules"] and dep["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        schema = dep["parameter_openapi_schema"]
        assert "BuildParams" in json.dumps(schema)
        store = str(tmp_path / "store")
        params = {"params": {"source": "generated:2:0.1", "store": store, "name": "from-ui"}}
        _wait(lambda: httpx.get(f"{prefect_server}/deployments/name/train-model/train-model", timeout=5).status_code
              == 200, 90, "the train-model deployment", serve)

        def create():  # the server answers 503 while it is busy with the runner's registrations: retry
            r = httpx.post(f"{prefect_server}/deployments/{dep['id']}/create_flow_run",
                           json={"parameters": params}, timeout=10)
            return r.json() if r.status_code < 300 else None

        run = _wait(create, 60, "a flow run of the deployment", serve)

        def finished():
            r = httpx.get(f"{prefect_server}/flow_runs/{run['id']}", timeout=5).json()
            return r if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        final = _wait(finished, 120, "the deployment's flow run", serve)
        assert final["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        assert (Path(store) / "tables" / "from-ui" / "CURRENT").is_file()
        assert (Path(store) / "datasets" / "from-ui.enc2" / "CURRENT").is_file()

        # the training grid submits its runs to the served train-model deployment (as to a GPU pool)
        cmd = [str(BIN / "midipix"), "train", "--model", "lstm,seq2seq", "--encoding", "enc2", "--tables", "from-ui",
               "--store", store, "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--samples", "1",
               "--deployment", "train-model/train-model", "--concurrency", "2", "--json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        runs = json.loads(out.stdout)
        assert sorted(r["model"] for r in runs) == ["lstm", "seq2seq"]
        assert all(r["state"] == "Completed" for r in runs), runs
        trained = sorted(p.name.split("-enc2-")[0] for p in (Path(store) / "models").iterdir())
        assert trained == ["lstm", "seq2seq"]
        assert all(any((p / "samples").iterdir()) for p in (Path(store) / "models").iterdir())
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()
