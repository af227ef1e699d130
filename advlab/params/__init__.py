"""The one typed view of params.yaml: parsed and validated once, then passed around frozen.

One pydantic model per section, each in its module of this package (base, data, train,
model, evaluate, attack). Each field's `description` says what it allows; the same text ends the
one-line error for a bad value and is the hover text of the JSON schema (`python -m
advlab.params --schema` writes params.schema.json, which params.yaml points at).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from advlab.params.attack import Attack
from advlab.params.base import Base
from advlab.params.data import Data
from advlab.params.evaluate import Evaluate
from advlab.params.fields import ParamsError, Rule, Section, unrecorded
from advlab.params.model import Model
from advlab.params.train import Train

SCHEMA_FILE = "params.schema.json"
DVC_EXPERIMENT = "DVC_EXP_NAME"  # set by `dvc exp run` for the stages it runs


class Params(Section):
    base: Base = Base()
    data: Data = Data()
    train: Train = Train()
    model: Model = Model()
    evaluate: Evaluate = Evaluate()
    attack: Attack = Attack()

    def model_post_init(self, context: Any) -> None:
        self._name_sections("")

    @model_validator(mode="after")
    def _validation_needed(self) -> Params:
        with unrecorded():
            val_size, keep, robust = (self.data.val_size, self.train.keep,
                                      self.train.robust_val_images)
        if val_size == 0 and (keep != "last" or robust):
            raise Rule(("data.val_size",), 0, f"> 0 with train.keep {keep} and "
                       f"train.robust_val_images {robust} (0 means no validation: "
                       "train.keep last, robust_val_images 0)")
        return self

    def as_dict(self) -> dict:
        return self.model_dump()


def _field(loc: tuple) -> tuple[str, type[BaseModel], Any]:
    """The dotted key an error location names, the section holding it and its field (None for
    a section or the whole file). List indexes and union branches are not keys."""
    model: type[BaseModel] = Params
    keys: list[str] = []
    field = None
    for part in loc:
        if field is None and isinstance(part, str) and part in model.model_fields:
            keys.append(part)
            field = model.model_fields[part]
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                model, field = field.annotation, None
    return ".".join(keys), model, field


def _value_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a value that is a mapping, or null (model.normalize), else None."""
    return next((arg for arg in typing.get_args(annotation)
                 if isinstance(arg, type) and issubclass(arg, BaseModel)), None)


def _message(error: dict) -> str:
    """One line for pydantic's first error: the key, the value and what is allowed."""
    key, model, field = _field(error["loc"])
    value = error["input"]
    if error["type"] == "extra_forbidden":
        unknown = f"{key}.{error['loc'][-1]}" if key else error["loc"][-1]
        value_model = _value_model(field.annotation) if field is not None else None
        known = (value_model or model).model_fields  # model.normalize: a value with keys
        return f"unknown key {unknown}; known keys: {', '.join(sorted(known))}"
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, Rule):
        key = " + ".join(f"{key}.{name}" if key else name for name in cause.keys)
        value, allowed = cause.value, cause.allowed
    elif field is not None:
        allowed = field.description
    else:
        allowed = "a mapping of keys to values"
    return f"{key or 'the file'} = {value!r} is not allowed; expected {allowed}"


def parse_params(raw: object) -> Params:
    """Builds and validates Params from a parsed YAML mapping; missing keys take defaults."""
    try:
        with unrecorded():  # the validators' reads are not the code's
            return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"params: {_message(err.errors()[0])}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from None
    try:
        return parse_params(raw or {})
    except ParamsError as err:
        if os.environ.get(DVC_EXPERIMENT):  # `dvc exp run -S key=bad` wrote bad into the file
            raise ParamsError(f"{err} ({path} keeps the value this `dvc exp run` set: "
                              f"`git checkout {path}` restores the committed file)") from None
        raise


def schema_text() -> str:
    """The JSON schema of params.yaml, as committed in params.schema.json."""
    schema = Params.model_json_schema()
    schema["title"] = "advlab params.yaml"
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check params.yaml or write its JSON schema.")
    parser.add_argument("--schema", action="store_true",
                        help=f"write the JSON schema of params.yaml to {SCHEMA_FILE}")
    parser.add_argument("path", nargs="?", default="params.yaml", help="params file to check")
    args = parser.parse_args(argv)
    if args.schema:
        from advlab.core.io import write_text  # torch, which advlab.core.io imports, only here

        write_text(SCHEMA_FILE, schema_text())
        print(f"params: wrote {SCHEMA_FILE}")
        return 0
    try:
        load_params(args.path)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"params: {args.path} is valid")
    return 0
