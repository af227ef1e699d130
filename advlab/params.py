"""The one typed view of params.yaml: parsed and validated once, then passed around frozen."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DATASETS = ("cifar10", "fashion_mnist", "synthetic")
MODELS = ("lab_cnn",)
OFFICIAL_TRAIN_SIZE = {"cifar10": 50_000, "fashion_mnist": 60_000}  # images, verified files
ADVERSARIAL = ("none", "fgsm_rs", "pgd")  # train.adversarial
METHODS = ("fgsm", "pgd")  # attack.methods
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # base.precision


class ParamsError(ValueError):
    """A key of params.yaml is missing, unknown or holds a value that is not allowed."""


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"params: {key} = {value!r} is not allowed; expected {allowed}")


@dataclass(frozen=True)
class Base:
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def validate(self, prefix: str) -> None:
        _check(self.seed >= 0, f"{prefix}.seed", self.seed, "an integer >= 0")
        ok = self.device in ("auto", "cpu", "cuda", "mps") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        _check(ok, f"{prefix}.device", self.device, "auto, cpu, cuda, cuda:N or mps")
        _check(self.precision in PRECISIONS, f"{prefix}.precision", self.precision,
               " | ".join(PRECISIONS))


@dataclass(frozen=True)
class Data:
    dataset: str = "cifar10"
    source: str | None = None
    verify: bool = True
    train_size: int = 40_000
    val_size: int = 10_000
    synthetic_train: int = 50_000
    synthetic_test: int = 10_000

    def validate(self, prefix: str) -> None:
        _check(self.dataset in DATASETS, f"{prefix}.dataset", self.dataset, " | ".join(DATASETS))
        for name in ("train_size", "val_size", "synthetic_train", "synthetic_test"):
            value = getattr(self, name)
            _check(value > 0, f"{prefix}.{name}", value, "an integer > 0")
        # The official training set's size is known here for synthetic data and for verified
        # official files; other data (verify: false) is checked by the split stage.
        if self.dataset == "synthetic":
            available, what = self.synthetic_train, f"{prefix}.synthetic_train"
        elif self.verify:
            available, what = (OFFICIAL_TRAIN_SIZE[self.dataset],
                               f"images in the official {self.dataset} training set")
        else:
            return
        total = self.train_size + self.val_size
        _check(total <= available, f"{prefix}.train_size + {prefix}.val_size", total,
               f"<= {available} ({what}): train and validation images are drawn, disjoint, "
               "from the official training set")


@dataclass(frozen=True)
class Train:
    model: str = "lab_cnn"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    augment: bool = False
    gpus: int = 1
    adversarial: str = "none"
    adv_eps: float = 8 / 255
    adv_steps: int = 7

    def validate(self, prefix: str) -> None:
        _check(self.gpus >= 1, f"{prefix}.gpus", self.gpus, "an integer >= 1")
        _check(self.batch_size >= self.gpus, f"{prefix}.batch_size", self.batch_size,
               f"an integer >= {prefix}.gpus ({self.gpus}): each process takes a slice of a batch")
        _check(self.model in MODELS, f"{prefix}.model", self.model, " | ".join(MODELS))
        _check(self.adversarial in ADVERSARIAL, f"{prefix}.adversarial", self.adversarial,
               " | ".join(ADVERSARIAL))
        _check(0 <= self.adv_eps <= 1, f"{prefix}.adv_eps", self.adv_eps, "a number in [0, 1]")
        _check(self.adv_steps > 0, f"{prefix}.adv_steps", self.adv_steps, "an integer > 0")
        _check(self.epochs > 0, f"{prefix}.epochs", self.epochs, "an integer > 0")
        _check(self.batch_size > 0, f"{prefix}.batch_size", self.batch_size, "an integer > 0")
        _check(0 < self.lr < math.inf, f"{prefix}.lr", self.lr, "a finite number > 0")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, "a number >= 0")


@dataclass(frozen=True)
class Evaluate:
    batch_size: int = 1000

    def validate(self, prefix: str) -> None:
        _check(self.batch_size > 0, f"{prefix}.batch_size", self.batch_size, "an integer > 0")


@dataclass(frozen=True)
class Pgd:
    steps: int = 10
    step_scale: float = 2.5  # step size = step_scale * eps / steps
    random_start: bool = True

    def validate(self, prefix: str) -> None:
        _check(self.steps > 0, f"{prefix}.steps", self.steps, "an integer > 0")
        _check(0 < self.step_scale < math.inf, f"{prefix}.step_scale", self.step_scale,
               "a finite number > 0")


@dataclass(frozen=True)
class Attack:
    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    methods: tuple[str, ...] = ("fgsm",)
    pgd: Pgd = field(default_factory=Pgd)

    def validate(self, prefix: str) -> None:
        allowed_methods = f"a non-empty list of distinct methods from {', '.join(METHODS)}"
        _check(len(self.methods) > 0 and set(self.methods) <= set(METHODS)
               and len(set(self.methods)) == len(self.methods),
               f"{prefix}.methods", list(self.methods), allowed_methods)
        self.pgd.validate(f"{prefix}.pgd")
        allowed = "a non-empty list of numbers in [0, 1]"
        _check(len(self.epsilons) > 0, f"{prefix}.epsilons", list(self.epsilons), allowed)
        for eps in self.epsilons:
            _check(0 <= eps <= 1, f"{prefix}.epsilons", list(self.epsilons), allowed)
        _check(len(set(self.epsilons)) == len(self.epsilons), f"{prefix}.epsilons",
               list(self.epsilons), "distinct values (each is a key of metrics/attack.json)")


@dataclass(frozen=True)
class Params:
    base: Base = field(default_factory=Base)
    data: Data = field(default_factory=Data)
    train: Train = field(default_factory=Train)
    evaluate: Evaluate = field(default_factory=Evaluate)
    attack: Attack = field(default_factory=Attack)

    def validate(self, prefix: str = "") -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: object, annotation: object, key: str) -> object:
    """Checks one YAML value against a field's type; ints are accepted where floats are."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        (annotation,) = [a for a in options if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ParamsError(f"params: {key} = {value!r} is not allowed; expected a list")
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string; accept what float() accepts
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, bool):
        raise ParamsError(f"params: {key} = {value!r} is not allowed; expected an integer")
    if not isinstance(value, annotation):  # type: ignore[arg-type]
        expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        allowed = expected.get(annotation, annotation)  # type: ignore[call-overload]
        raise ParamsError(f"params: {key} = {value!r} is not allowed; expected {allowed}")
    return value


def _build(cls: type, raw: object, prefix: str) -> object:
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {prefix or 'the file'} = {raw!r} is not allowed; expected a "
                          "mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(
            f"params: unknown key {where}{unknown[0]}; known keys: {', '.join(sorted(known))}"
        )
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], value, key)
        else:
            values[name] = _coerce(value, hints[name], key)
    return cls(**values)


def parse_params(raw: object) -> Params:
    """Builds and validates Params from a parsed YAML mapping; missing keys take defaults."""
    params = _build(Params, raw, "")
    assert isinstance(params, Params)
    params.validate()
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from None
    return parse_params(raw or {})
