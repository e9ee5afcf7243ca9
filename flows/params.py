"""Prefect form sections generated from the config dataclasses of :mod:`storage_schemas.encodings`.

A config class states each field once — type, default, validation and help line — and :func:`form_of`
turns it into the pydantic model a deployment's form shows, so the form, the CLI and the stored config
cannot drift apart. A filled-in section is checked by building the config itself (its ``__post_init__``),
and :meth:`ConfigForm.config` returns that config object.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from storage_schemas.encodings import field_default

__all__ = ["ConfigForm", "form_of"]

_BOUNDS = ("gt", "ge", "lt", "le")


class ConfigForm(BaseModel):
    """A form section for one config class; ``config(**fixed)`` builds the config it describes."""

    model_config = ConfigDict(extra="forbid")
    config_class: ClassVar[type]
    probe: ClassVar[dict[str, Any]] = {}  # fields the form leaves out but the config needs to be checked

    def config(self, **fixed: Any):
        return self.config_class(**self.model_dump(), **fixed)

    @model_validator(mode="after")
    def _valid_config(self):
        self.config(**self.probe)  # a ValueError here becomes the form's validation error
        return self


def form_of(cls: type, *, title: str, description: str, exclude: tuple[str, ...] = (),
            probe: dict[str, Any] | None = None) -> type[ConfigForm]:
    """A :class:`ConfigForm` subclass with ``cls``'s fields (less ``exclude``), their types, defaults,
    help lines and bounds (from the field metadata)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = field_default(cls, f.name)
        bounds = {k: f.metadata[k] for k in _BOUNDS if k in f.metadata}
        fields[f.name] = (hints[f.name], Field(default, description=f.metadata.get("help"), **bounds))
    model = create_model(cls.__name__ + "Form", __base__=ConfigForm, __doc__=description, **fields)
    model.model_config = ConfigDict(extra="forbid", title=title)
    model.config_class = cls
    model.probe = dict(probe or {})
    return model
