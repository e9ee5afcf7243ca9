"""What every model config shares: rebuilding it from a dict, where a key it does not have is an error."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["config_from_dict"]

C = TypeVar("C")


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """``cls(**data)`` for a config dataclass; unknown keys fail with the known ones, missing keys take defaults."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {', '.join(known)}")
    return cls(**dict(data))
