"""Versions made visible atomically: a small pointer document, swapped by compare-and-swap.

Table sets and image datasets share this: everything of a version is written first (immutable keys),
its manifest last, and then the pointer ``{"version", "manifest_sha256"}`` is swapped. Readers resolve the
pointer once and check the manifest against the hash it records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from tasks.storage.store import Store


def read_pointer(store: Store, pointer_key: str) -> tuple[dict | None, str | None]:
    """The pointer document (None when nothing is published) and its compare-and-swap token."""
    raw, token = store.read_pointer(pointer_key)
    return (json.loads(raw) if raw else None), token


def publish(store: Store, pointer_key: str, manifest_key: str, version: str, retries: int = 5) -> bool:
    """Point ``pointer_key`` at ``version`` (whose manifest is ``manifest_key``). False if it already did."""
    doc = {"version": version, "manifest_sha256": hashlib.sha256(store.read_bytes(manifest_key)).hexdigest()}
    for _ in range(retries):
        current, token = read_pointer(store, pointer_key)
        if current == doc:
            return False
        if store.swap_pointer(pointer_key, json.dumps(doc).encode(), token):
            return True
    raise RuntimeError(f"could not publish {version} at {pointer_key}: the pointer kept changing under us")


def read_manifest(store: Store, pointer_key: str, manifest_key: Callable[[str], str], version: str | None = None,
                  verify: bool = True) -> dict:
    """The manifest of ``version`` (default: the published one), checked against the pointer's hash."""
    expected = None
    if version is None:
        current, _ = read_pointer(store, pointer_key)
        if current is None:
            raise FileNotFoundError(f"nothing published at {pointer_key} in {store.uri}")
        version, expected = current["version"], current["manifest_sha256"]
    raw = store.read_bytes(manifest_key(version))
    if verify and expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError(f"manifest of {version} does not match the hash its pointer {pointer_key} records")
    return json.loads(raw)
