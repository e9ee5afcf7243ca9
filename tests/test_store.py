"""The artifact store, one suite run against a local folder and a loopback S3 server (moto)."""

from __future__ import annotations

import io
import os
import pickle
import threading

import pytest

from tasks.storage.store import LocalStore, S3Store, Store, sha256_bytes


@pytest.fixture
def store(store_uri) -> Store:
    return Store(store_uri)


def race(n: int, fn) -> list:
    """Run ``fn(i)`` for i in range(n) on n threads released together; results in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- addressing -----------------------------------------------------------------------------------


def test_local_uri_is_absolute_without_trailing_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("data/")
    assert store.uri == str(tmp_path / "data")
    assert type(store) is LocalStore and isinstance(store, Store)
    assert Store(f"file://{tmp_path}/data").uri == LocalStore("data").uri == store.uri
    assert store.path("a/b.bin") == store.url("a/b.bin") == str(tmp_path / "data" / "a" / "b.bin")


@pytest.mark.s3
def test_s3_uri_paths_and_urls(s3_env):
    store = Store(s3_env + "/")
    assert store.uri == s3_env and type(store) is S3Store and isinstance(store, Store)
    assert S3Store(s3_env).uri == Store(s3_env.replace("s3://", "s3a://")).uri == s3_env
    bucket_and_prefix = s3_env.removeprefix("s3://")
    assert store.path("a/b.bin") == f"{bucket_and_prefix}/a/b.bin"
    assert store.url("a/b.bin") == f"{s3_env}/a/b.bin"


@pytest.mark.parametrize("key", ["", "/", "a//b", "../x", "a/./b", "a/.hidden"])
def test_invalid_keys_are_rejected(tmp_path, key):
    with pytest.raises(ValueError):
        Store(str(tmp_path)).path(key)


def test_unsupported_scheme_is_rejected():
    with pytest.raises(ValueError, match="gs://"):
        Store("gs://bucket/prefix")
    with pytest.raises(ValueError, match="s3://bucket"):
        S3Store("/a/folder")
    with pytest.raises(ValueError, match="needs a bucket"):
        Store("s3://")


def test_a_store_is_abstract_and_its_backends_are_picked_by_the_uri(tmp_path):
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (Store,), {})(str(tmp_path))  # a backend must implement the writes
    store = Store(str(tmp_path))
    again = pickle.loads(pickle.dumps(store))  # rebuilt from its URI (Prefect and worker processes)
    assert type(again) is LocalStore and again.uri == store.uri


# -- plain reads and writes -------------------------------------------------------------------------


def test_round_trip(store):
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"\x00payload\xff")
    assert store.exists("a/b.bin")
    assert store.read_bytes("a/b.bin") == b"\x00payload\xff"
    store.write_bytes("a/b.bin", b"")  # overwrite, with an empty object
    assert store.read_bytes("a/b.bin") == b""
    assert not store.exists("a")  # a folder is not an object
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing.bin")


def test_list(store):
    assert store.list() == []
    for key in ["z.bin", "a/2.bin", "a/1.bin", "a/deep/3.bin", "ab/4.bin"]:
        store.write_bytes(key, key.encode())
    assert store.list() == ["a/1.bin", "a/2.bin", "a/deep/3.bin", "ab/4.bin", "z.bin"]
    assert store.list("a") == store.list("a/") == ["a/1.bin", "a/2.bin", "a/deep/3.bin"]
    assert store.list("z.bin") == ["z.bin"]
    assert store.list("nothing/here") == []


def test_list_hides_temp_and_lock_files(store):
    store.swap_pointer("ptr/latest.json", b"{}", None)  # leaves a lock file locally
    folder = store.path("ptr/latest.json").rsplit("/", 1)[0]
    store.fs.pipe_file(f"{folder}/.partial.bin.0a1b2c3d.tmp", b"x")  # a writer's temp file, left by a crash
    assert store.list() == ["ptr/latest.json"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_local_files_get_the_umask_mode(tmp_path, umask):
    """Files a teammate's process wrote into a shared store folder are readable as the umask allows."""
    store = LocalStore(str(tmp_path / "shared"))
    old = os.umask(umask)
    try:
        store.write_bytes("a/plain.bin", b"x")
        store.put_if_absent("a/cas.bin", b"y")
        store.swap_pointer("a/CURRENT", b"{}", None)
    finally:
        os.umask(old)
    for name in ("plain.bin", "cas.bin", "CURRENT"):
        assert (tmp_path / "shared" / "a" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "shared" / "a").stat().st_mode & 0o777 == 0o777 & ~umask


def test_write_bytes_is_atomic_for_concurrent_readers(store):
    """A reader polling during rewrites only ever sees one whole version, never a torn one."""
    versions = {bytes([v]) * (1 << 20) for v in (1, 2)}
    store.write_bytes("big.bin", bytes([1]) * (1 << 20))
    seen: set[bytes] = set()
    done = threading.Event()

    def read_loop() -> None:
        while not done.is_set():
            seen.add(store.read_bytes("big.bin"))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(20):
            store.write_bytes("big.bin", bytes([1 + i % 2]) * (1 << 20))
    finally:
        done.set()
        reader.join()
    assert seen and seen <= versions


# -- put_if_absent ----------------------------------------------------------------------------------


def test_put_if_absent_never_overwrites(store):
    assert store.put_if_absent("cas/x.bin", b"first") is True
    assert store.put_if_absent("cas/x.bin", b"second") is False
    assert store.read_bytes("cas/x.bin") == b"first"
    store.write_bytes("cas/y.bin", b"plain write")
    assert store.put_if_absent("cas/y.bin", b"other") is False
    assert store.read_bytes("cas/y.bin") == b"plain write"
    assert store.list() == ["cas/x.bin", "cas/y.bin"]


def test_put_if_absent_race_has_exactly_one_winner(store):
    for round_ in range(5):
        key = f"race/{round_}.bin"
        wins = race(4, lambda i: store.put_if_absent(key, f"writer {i}".encode()))
        assert wins.count(True) == 1, wins
        assert store.read_bytes(key) == f"writer {wins.index(True)}".encode()


# -- pointers ---------------------------------------------------------------------------------------


def test_swap_pointer_compare_and_swap(store):
    key = "datasets/maestro/latest.json"
    assert store.read_pointer(key) == (None, None)
    assert store.swap_pointer(key, b'{"v": 1}', None) is True
    assert store.swap_pointer(key, b'{"v": 0}', None) is False  # create loses when present

    content, token1 = store.read_pointer(key)
    assert content == b'{"v": 1}' and token1
    if isinstance(store, LocalStore):
        assert token1 == sha256_bytes(content)
    assert store.swap_pointer(key, b'{"v": 2}', token1) is True
    content, token2 = store.read_pointer(key)
    assert content == b'{"v": 2}' and token2 != token1

    assert store.swap_pointer(key, b'{"v": 3}', token1) is False  # stale token loses
    assert store.read_pointer(key) == (b'{"v": 2}', token2)
    assert store.swap_pointer("datasets/other.json", b"{}", token2) is False  # absent pointer
    assert not store.exists("datasets/other.json")


def test_swap_pointer_race_has_exactly_one_winner(store):
    key = "ptr.json"
    store.swap_pointer(key, b"0", None)
    for round_ in range(5):
        _, token = store.read_pointer(key)
        wins = race(4, lambda i: store.swap_pointer(key, f"{round_}.{i}".encode(), token))
        assert wins.count(True) == 1, wins
        assert store.read_pointer(key)[0] == f"{round_}.{wins.index(True)}".encode()


@pytest.mark.s3
def test_moto_enforces_conditional_writes(s3_env):
    """The S3 path relies on the server: writes made behind the store's back still make it lose."""
    import botocore.exceptions

    store = Store(s3_env)
    bucket, _, obj = store.path("ptr.json").partition("/")
    assert store.swap_pointer("ptr.json", b"ours", None)
    _, token = store.read_pointer("ptr.json")

    store.fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=b"theirs")  # another writer
    assert store.swap_pointer("ptr.json", b"stale", token) is False
    assert store.put_if_absent("ptr.json", b"again") is False
    assert store.read_bytes("ptr.json") == b"theirs"

    async def raw_put(**condition):
        client = await store.fs.get_s3(bucket)
        return await client.put_object(Bucket=bucket, Key=obj, Body=b"raw", **condition)

    from fsspec.asyn import sync

    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": token}):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sync(store.fs.loop, raw_put, **condition)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


# -- secrets and interop ----------------------------------------------------------------------------


@pytest.mark.s3
def test_credentials_never_in_repr(s3_env):
    store = Store(s3_env)
    assert store.storage_options()["secret"] == "testing-secret"  # they are there to leak
    for text in (repr(store), str(store), f"{store}", repr(store.__dict__.get("uri"))):
        assert "testing-key" not in text and "testing-secret" not in text
    assert repr(store) == f"Store({s3_env!r})"


def test_pandas_reads_urls_with_the_storage_options(store):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pd = pytest.importorskip("pandas")

    buf = io.BytesIO()
    pq.write_table(pa.table({"pitch": [60, 64, 67], "tick": [0, 480, 960]}), buf, compression="zstd")
    store.write_bytes("tables/notes.parquet", buf.getvalue())
    frame = pd.read_parquet(store.url("tables/notes.parquet"), storage_options=store.storage_options())
    assert frame.to_dict("list") == {"pitch": [60, 64, 67], "tick": [0, 480, 960]}
