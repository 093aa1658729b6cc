"""Dagster config classes generated field by field from the core's dataclasses, so the launchpad shows (and checks
before launch) every hyperparameter and env setting of a `TrainingRun` without a second list of them here.

`mirror(dataclass)` makes a `dg.Config` with one field per dataclass field of a plain type (bool, int, float, str,
or one of them or None), described by the field's own docstring. An unknown key or a value of the wrong type is
refused by Dagster before the run starts; ranges are checked by the dataclass itself when the asset builds the run,
before the trainer process is launched.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any

import dagster as dg
import pydantic
from pydantic import Field

_PLAIN = (bool, int, float, str)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows its annotation)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _plain(hint: Any) -> Any | None:
    """`hint` if it is a plain type or a plain type or None; else None (the field is not mirrored)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    return hint if len(kinds) == 1 and kinds[0] in _PLAIN else None


def mirror(cls: type, name: str, *, exclude: tuple[str, ...] = (), defaults: Any = None,
           notes: dict[str, str] | None = None) -> type[dg.Config]:
    """A `dg.Config` named `name` with the plain fields of dataclass `cls` (less `exclude`). With `defaults` (an
    instance of `cls`) each field defaults to its value there; without, every field is optional and unset means
    "not overridden". `notes` adds a sentence to a field's description."""
    hints = typing.get_type_hints(cls)
    docs, notes = field_docs(cls), notes or {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _plain(hints[f.name])
        if f.name in exclude or hint is None:
            continue
        text = " ".join(part for part in (docs.get(f.name, ""), notes.get(f.name, "")) if part)
        if defaults is None:
            fields[f.name] = (hint | None, Field(default=None, description=text))
        else:
            fields[f.name] = (hint, Field(default=getattr(defaults, f.name), description=text))
    return pydantic.create_model(name, __base__=dg.Config, __module__=__name__, **fields)


def set_fields(config: dg.Config) -> dict[str, Any]:
    """The fields of a mirrored config that are set (overrides), by their dataclass names."""
    return {k: v for k, v in config.model_dump().items() if v is not None}
