"""Shared fixtures. Each fixture starts the real thing it stands for (a loopback S3 server, a store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.storage.settings import apply_prefect_defaults

apply_prefect_defaults()  # before anything imports prefect

SHARED_MIDI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "midi"


def shared_midi_files() -> list[Path]:
    """Real MIDI files under ../shared/data/midi (empty on a fresh clone without shared/)."""
    if not SHARED_MIDI.is_dir():
        return []
    return sorted(p for p in SHARED_MIDI.rglob("*") if p.suffix.lower() in (".mid", ".midi"))


# -- S3: one loopback moto server per session, reset between tests -----------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (a free port) for the whole session; yields its URL."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Point the settings at the moto server with test credentials; yields a fresh ``s3://bucket/prefix``."""
    import urllib.request
    import uuid

    import boto3
    import s3fs

    from tasks.storage.settings import reload_settings

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "MIDIPIX_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    s3fs.S3FileSystem.clear_instance_cache()
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST")).close()
    bucket = f"midipix-test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing-key",
        aws_secret_access_key="testing-secret",
    ).create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/store"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        monkeypatch.undo()  # before reloading, so that later tests see the clean environment
        reload_settings()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_uri(request, tmp_path):
    """A store URI for each backend: a local folder, then an ``s3://`` prefix on the moto server."""
    if request.param == "local":
        yield str(tmp_path / "store")
    else:
        yield request.getfixturevalue("s3_env")


# -- Prefect: one ephemeral API per test session (per xdist worker), real flow and task runs --------


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect database and ephemeral API server for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def midipix_env(tmp_path, monkeypatch):
    """Settings pointing the local cache and the default store into the test's tmp folder."""
    from tasks.storage.settings import reload_settings

    monkeypatch.setenv("MIDIPIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MIDIPIX_STORE", str(tmp_path / "store"))
    settings = reload_settings()
    yield settings
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def torch_seeded():
    """torch's global RNG seeded with 0 before the test."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op thread for a module of tiny tensors: more only add synchronisation on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
