"""The building blocks of every params section: the frozen, read-recording Section, the field
types whose descriptions end a bad value's one-line error, and ParamsError."""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from advlab.core.errors import InputError


class ParamsError(InputError, ValueError):
    """A key of params.yaml is missing, unknown or holds a value that is not allowed."""


class Rule(ValueError):
    """Raised by a validator that checks several fields of a section: names them and the value."""

    def __init__(self, keys: tuple[str, ...], value: object, allowed: str):
        super().__init__(allowed)
        self.keys, self.value, self.allowed = keys, value, allowed


def yaml_number(value: object) -> object:
    """YAML 1.1 reads 1e-3 (no dot) as a string; accept what float() accepts."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _bounds(gt: float | None, ge: float | None, le: float | None) -> str:
    if ge is not None and le is not None:
        return f" in [{ge:g}, {le:g}]"
    if gt is not None and le is not None:
        return f" in ({gt:g}, {le:g}]"
    return f" > {gt:g}" if gt is not None else f" >= {ge:g}" if ge is not None else ""


def integer(*, gt: int | None = None, ge: int | None = None) -> Any:
    """An int field (booleans and 2.5 refused) with its bounds and their description."""
    return Annotated[int, Strict(), Field(gt=gt, ge=ge,
                                          description=f"an integer{_bounds(gt, ge, None)}")]


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None,
           finite: bool = False) -> Any:
    """A float field: ints and YAML 1.1 exponent strings accepted, booleans refused."""
    kind = "a finite number" if finite else "a number"
    return Annotated[float, Strict(),
                     Field(gt=gt, ge=ge, le=le, allow_inf_nan=not finite,
                           description=f"{kind}{_bounds(gt, ge, le)}"),
                     BeforeValidator(yaml_number)]


def choice(options: tuple[str, ...]) -> Any:
    return Annotated[Literal[options], Field(description=" | ".join(options))]


def distinct_list(item: Any, description: str) -> Any:
    """A non-empty list (a tuple once parsed) of distinct items."""
    return Annotated[tuple[item, ...], Field(min_length=1, description=description,
                                             json_schema_extra={"uniqueItems": True})]


Flag = Annotated[bool, Strict(), Field(description="true or false")]


class Section(BaseModel):
    """A frozen section of params.yaml. While `recording_reads()` is active, reading a key of a
    parsed Params (an attribute, or a section's model_dump) adds its dotted name to the record:
    the params a stage's code reads, which dvc.yaml must list (tests/test_params_deps.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def _name_sections(self, prefix: str) -> None:
        """Remembers each section's place in this Params (kept outside the section: a private
        attribute would take part in ==)."""
        key = id(self)
        _KEYS[key] = (weakref.ref(self, functools.partial(_forget, key)), prefix)
        for name in type(self).model_fields:
            value = super().__getattribute__(name)
            if isinstance(value, Section):
                value._name_sections(f"{prefix}{name}.")

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _reads is not None and name in type(self).model_fields and not isinstance(
                value, Section):
            _record(self, [name])
        return value

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        if _reads is not None:
            _record(self, leaf_keys(type(self)))
        return super().model_dump(**kwargs)


_reads: set[str] | None = None  # the keys read while recording_reads() is active
_KEYS: dict[int, tuple[weakref.ref, str]] = {}  # id of a section -> (it, "attack.pgd.")


def _forget(key: int, ref: weakref.ref) -> None:
    if _KEYS.get(key, (None,))[0] is ref:
        del _KEYS[key]


def _record(section: Section, names: list[str]) -> None:
    ref, prefix = _KEYS.get(id(section), (None, ""))
    if ref is not None and ref() is section and _reads is not None:  # not a lone section
        _reads.update(f"{prefix}{name}" for name in names)


def leaf_keys(model: type[BaseModel]) -> list[str]:
    """The dotted keys of every value in a section, nested sections included."""
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            keys += [f"{name}.{key}" for key in leaf_keys(field.annotation)]
        else:
            keys.append(name)
    return keys


@contextlib.contextmanager
def recording_reads() -> Iterator[set[str]]:
    """Collects the dotted keys (`train.lr`) the code reads from parsed params meanwhile;
    validating a file reads none."""
    global _reads
    outer, _reads = _reads, set()
    try:
        yield _reads
    finally:
        _reads = outer


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Reads that are not the code's (validators'): recording_reads() leaves them out."""
    global _reads
    outer, _reads = _reads, None
    try:
        yield
    finally:
        _reads = outer


