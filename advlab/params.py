"""The one typed view of params.yaml: parsed and validated once, then passed around frozen.

One pydantic model per section. Each field's `description` says what it allows; the same text
ends the one-line error for a bad value and is the hover text of the JSON schema
(`python -m advlab.params --schema` writes params.schema.json, which params.yaml points at).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from advlab.errors import InputError

DATASETS = ("cifar10", "fashion_mnist", "synthetic")
MODELS = ("lab_cnn", "preact_resnet18", "wide_resnet", "fast_cnn")  # advlab/models/registry.py
OFFICIAL_TRAIN_SIZE = {"cifar10": 50_000, "fashion_mnist": 60_000}  # images, verified files
ADVERSARIAL = ("none", "fgsm_rs", "pgd", "trades", "n_fgsm")  # train.adversarial
OPTIMIZERS = ("adam", "sgd")  # train.optimizer
SCHEDULES = ("constant", "onecycle", "cosine", "piecewise", "cyclic")  # train.schedule
KEEP = ("last", "best_val", "best_robust_val")  # train.keep: what models/model.pt holds
# attack.methods and attack.ensemble: the names of advlab/attacks/registry.py (which checks
# that they agree; the registry cannot be imported here: it imports modules that import this)
METHODS = ("fgsm", "pgd", "apgd_ce", "apgd_t", "fab_t", "square")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # base.precision
DEVICE = re.compile(r"^(auto|cpu|cuda|mps|cuda:\d+)$")
SCHEMA_FILE = "params.schema.json"
DVC_EXPERIMENT = "DVC_EXP_NAME"  # set by `dvc exp run` for the stages it runs
EPS_STEP = 1000  # attack scalars sit at step round(1000 * eps): TensorBoard steps are integers


class ParamsError(InputError, ValueError):
    """A key of params.yaml is missing, unknown or holds a value that is not allowed."""


class Rule(ValueError):
    """Raised by a validator that checks several fields of a section: names them and the value."""

    def __init__(self, keys: tuple[str, ...], value: object, allowed: str):
        super().__init__(allowed)
        self.keys, self.value, self.allowed = keys, value, allowed


def _yaml_number(value: object) -> object:
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
                     BeforeValidator(_yaml_number)]


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


class Base(Section):
    seed: integer(ge=0) = 0
    device: Annotated[str, Strict(), Field(
        description="auto, cpu, cuda, cuda:N or mps", json_schema_extra={"pattern": DEVICE.pattern}
    )] = "auto"
    precision: choice(PRECISIONS) = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise ValueError(cls.model_fields["device"].description)
        return value


class Data(Section):
    dataset: choice(DATASETS) = "cifar10"
    source: Annotated[str | None, Strict(), Field(
        description="a folder (a string) or null")] = None
    verify: Flag = True
    train_size: integer(gt=0) = 40_000
    val_size: integer(ge=0) = 10_000  # 0: no validation (train.keep last, no robust validation)
    synthetic_train: integer(gt=0) = 50_000
    synthetic_test: integer(gt=0) = 10_000

    @model_validator(mode="after")
    def _split_fits(self) -> Data:
        """The official training set's size is known here for synthetic data and for verified
        official files; other data (verify: false) is checked by the split stage."""
        if self.dataset == "synthetic":
            available, what = self.synthetic_train, "synthetic_train: the generated training set"
        elif self.verify:
            available, what = (OFFICIAL_TRAIN_SIZE[self.dataset],
                               f"images in the official {self.dataset} training set")
        else:
            return self
        total = self.train_size + self.val_size
        if total > available:
            raise Rule(("train_size", "val_size"), total,
                       f"<= {available} ({what}): train and validation images are drawn, "
                       "disjoint, from the official training set")
        return self


class Train(Section):
    model: choice(MODELS) = "lab_cnn"
    epochs: integer(gt=0) = 10
    batch_size: integer(gt=0) = 32
    lr: number(gt=0, finite=True) = 1e-3
    weight_decay: number(ge=0, finite=True) = 0.0
    augment: Flag = False
    gpus: integer(ge=1) = 1
    adversarial: choice(ADVERSARIAL) = "none"
    adv_eps: number(ge=0, le=1) = 8 / 255
    adv_steps: integer(gt=0) = 7
    optimizer: choice(OPTIMIZERS) = "adam"
    momentum: number(ge=0, le=1) = 0.9
    nesterov: Flag = False
    schedule: choice(SCHEDULES) = "constant"
    warmup_epochs: number(ge=0, finite=True) = 0.0
    label_smoothing: number(ge=0, le=1) = 0.0
    ema: Annotated[Annotated[float, Strict(), Field(gt=0, lt=1), BeforeValidator(_yaml_number)]
                   | None, Field(description="null (no EMA) or a number in (0, 1)")] = None
    decay_norm_and_bias: Flag = True
    trades_beta: number(ge=0, finite=True) = 6.0
    robust_val_images: integer(ge=0) = 0
    robust_val_steps: integer(gt=0) = 10
    keep: choice(KEEP) = "last"
    depth: integer(gt=0) = 16  # wide_resnet
    width: integer(gt=0) = 4  # wide_resnet
    widths: Annotated[tuple[Annotated[int, Strict(), Field(gt=0)], ...], Field(
        min_length=1, description="a non-empty list of integers > 0")] = (64, 256, 256)
    whiten: Flag = True  # fast_cnn
    compile: Flag = False

    @model_validator(mode="after")
    def _wide_resnet_depth(self) -> Train:
        if self.model == "wide_resnet" and (self.depth < 10 or (self.depth - 4) % 6):
            raise Rule(("depth",), self.depth, "6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...): "
                       "wide_resnet has three stages of n blocks")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Train:
        if self.batch_size < self.gpus:
            raise Rule(("batch_size",), self.batch_size, f"an integer >= gpus ({self.gpus}): "
                       "each process takes a slice of a batch")
        if self.warmup_epochs > self.epochs:
            raise Rule(("warmup_epochs",), self.warmup_epochs,
                       f"a number in [0, epochs] (epochs is {self.epochs})")
        if self.nesterov and self.momentum == 0:
            raise Rule(("nesterov",), self.nesterov, "false with momentum 0 (Nesterov momentum "
                       "needs momentum > 0)")
        if self.keep == "best_robust_val" and self.robust_val_images == 0:
            raise Rule(("keep",), self.keep, "last or best_val with robust_val_images 0 "
                       "(best_robust_val needs the robust validation)")
        return self


class Evaluate(Section):
    batch_size: Annotated[Literal["auto"] | Annotated[int, Strict(), Field(gt=0)],
                          Field(description="auto or an integer > 0")] = "auto"


class Pgd(Section):
    steps: integer(gt=0) = 10
    step_scale: number(gt=0, finite=True) = 2.5  # step size = step_scale * eps / steps
    random_start: Flag = True


class Apgd(Section):
    steps: integer(gt=0) = 100
    restarts: integer(gt=0) = 1


class ApgdT(Section):
    steps: integer(gt=0) = 100
    targets: integer(gt=0) = 9


class FabT(Section):
    steps: integer(gt=0) = 100
    targets: integer(gt=0) = 9
    alpha_max: number(ge=0, le=1) = 0.1  # the largest bias of a step towards the clean image
    eta: number(ge=1, finite=True) = 1.05  # overshoot past the linearized boundary
    beta: number(gt=0, le=1) = 0.9  # pull-back towards the clean image past the boundary


class Square(Section):
    queries: integer(gt=0) = 5000
    p_init: number(gt=0, le=1) = 0.8
    rescale: Flag = False  # AutoAttack's resc_schedule: the p-schedule scaled to `queries`


class Attack(Section):
    epsilons: distinct_list(number(ge=0, le=1), "a non-empty list of distinct numbers in "
                            "[0, 1] (each is a key of metrics/attack.json)"
                            ) = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    methods: distinct_list(Literal[METHODS], "a non-empty list of distinct methods from "
                           + ", ".join(METHODS)) = ("fgsm",)
    ensemble: Annotated[tuple[Literal[METHODS], ...], Field(
        description="a list of distinct methods from " + ", ".join(METHODS) + " (may be empty)",
        json_schema_extra={"uniqueItems": True})] = ("apgd_ce", "apgd_t", "fab_t", "square")
    max_images: Annotated[Annotated[int, Strict(), Field(gt=0)] | None, Field(
        description="null (every test image) or an integer > 0")] = None
    pgd: Pgd = Pgd()
    apgd_ce: Apgd = Apgd()
    apgd_t: ApgdT = ApgdT()
    fab_t: FabT = FabT()
    square: Square = Square()

    @field_validator("epsilons", "methods", "ensemble")
    @classmethod
    def _distinct(cls, value: tuple, info: Any) -> tuple:
        if len(set(value)) != len(value):
            raise ValueError(cls.model_fields[info.field_name].description)
        return value

    @model_validator(mode="after")
    def _epsilons_named_apart(self) -> Attack:
        """Each eps has its own metric key (`eps=%g`) and TensorBoard step."""
        for names in (eps_key, eps_step):
            seen: dict[object, float] = {}
            for eps in self.epsilons:
                if (other := seen.setdefault(names(eps), eps)) != eps:
                    raise Rule(("epsilons",), self.epsilons, (
                        f"numbers apart in their metric keys (eps=%g) and TensorBoard steps "
                        f"(round({EPS_STEP}·eps)): {other!r} and {eps!r} both give "
                        f"{names(eps)!r}"))
        return self


def eps_key(eps: float) -> str:
    """An eps's name in attack.json: `dvc metrics show` lists e.g. fgsm.accuracy.eps=0.1."""
    return f"eps={eps:g}"


def eps_step(eps: float) -> int:
    return round(EPS_STEP * eps)


class Params(Section):
    base: Base = Base()
    data: Data = Data()
    train: Train = Train()
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


def _message(error: dict) -> str:
    """One line for pydantic's first error: the key, the value and what is allowed."""
    key, model, field = _field(error["loc"])
    value = error["input"]
    if error["type"] == "extra_forbidden":
        unknown = f"{key}.{error['loc'][-1]}" if key else error["loc"][-1]
        return f"unknown key {unknown}; known keys: {', '.join(sorted(model.model_fields))}"
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
        from advlab.io import write_text  # torch, which advlab.io imports, only here

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


if __name__ == "__main__":
    sys.exit(main())
