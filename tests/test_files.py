"""Local files written whole or not at all, with the process umask's mode (tasks/storage/files.py)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from tasks.storage.files import atomic_write, temp_dir_beside, write_if_absent


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_write_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "new" / "deep" / "x.bin"
    assert atomic_write(path, b"one") == path
    atomic_write(str(path), b"two, longer")
    assert path.read_bytes() == b"two, longer"
    assert os.listdir(path.parent) == ["x.bin"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "x.bin"
    atomic_write(path, b"old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes")  # fails after the temp file was made
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path, b"x")  # the rename onto a folder fails
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["x.bin"]


def test_files_and_folders_get_the_umask_mode(tmp_path, umask):
    """mkstemp / mkdtemp would give 0o600 / 0o700 whatever the umask: a shared folder's files unreadable."""
    atomic_write(tmp_path / "a" / "replaced.bin", b"x")
    assert write_if_absent(tmp_path / "a" / "linked.bin", b"y")
    for name in ("replaced.bin", "linked.bin"):
        assert (tmp_path / "a" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    folder = temp_dir_beside(tmp_path / "extracted")
    assert folder.parent == tmp_path and folder.name.startswith(".extracted.") and not any(folder.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_write_if_absent_never_overwrites(tmp_path):
    path = tmp_path / "cas" / "x.bin"
    assert write_if_absent(path, b"first") is True
    assert write_if_absent(path, b"second") is False
    assert path.read_bytes() == b"first"
    assert os.listdir(path.parent) == ["x.bin"]


def test_concurrent_writers_of_one_file_never_clash(tmp_path):
    """Each writer has its own temp file (the fingerprint cache once used one name per process)."""
    path = tmp_path / "cache.json"
    payloads = [bytes([i]) * 100_000 for i in range(8)]
    barrier = threading.Barrier(len(payloads))
    errors = []

    def write(data: bytes) -> None:
        barrier.wait()
        try:
            for _ in range(10):
                atomic_write(path, data)
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["cache.json"]


def test_decoded_files_and_the_generated_corpus_get_the_umask_mode(tmp_path, umask):
    from storage_schemas.encodings import HilbertConfig, RollConfig
    from tasks.steps.decode import decode_to_files
    from tasks.storage.sources import generate_corpus

    paths = generate_corpus(tmp_path / "corpus", 2, seed=0, minutes=0.05)
    config = RollConfig("enc3")
    image = np.zeros((1, 88, 200), np.uint8)
    image[0, 39, 10:20] = 255
    image[0, 39, 10] = 125
    paths += decode_to_files(image, config, tmp_path / "out" / "x")
    paths += decode_to_files(np.full((1, 1, 256, 256), 0.5, np.float32),
                             HilbertConfig(order=8, sample_rate=44100), tmp_path / "out" / "y")
    assert [p.name for p in paths[2:]] == ["x.mid", "y.wav"]
    for p in paths:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
