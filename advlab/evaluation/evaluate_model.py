"""Robust accuracy of a model file in one command, printed as AutoAttack prints it: the clean
accuracy, then at each ε the robust accuracy after each attack of the ensemble (a cascade: each
attack only on the images the earlier ones left standing). In process, on the test split: no
DVC, no training.

    python -m advlab.evaluation.evaluate_model robust.pt --eps 8/255
    python -m advlab.evaluation.evaluate_model robust.pt --eps 4/255 8/255 --max-images 1000 \\
        --attacks apgd_ce,apgd_t --normalize 0.4914,0.4822,0.4465 0.2471,0.2435,0.2616

Each option sets a key of params.yaml, whose other values apply (the attacks' budgets,
base.device, train.model for a state_dict); `-S key=value` sets any key.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import yaml

from advlab.attacks.registry import check_classes, settings_of, title
from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.stage import run_stage
from advlab.data.images import load_splits
from advlab.evaluation.classification import classification_report, evaluation_batch_size
from advlab.evaluation.robustness import AttackResult, attack_subset, worst_case
from advlab.models.external import load_evaluated
from advlab.params import Params, load_params, parse_params
from advlab.params.fields import ParamsError


class Eps(NamedTuple):
    text: str  # as written: 8/255
    value: float


def eps_arg(text: str) -> Eps:
    """An ε as people write it: 8/255, 0.03 or 1e-2."""
    try:
        return Eps(text, float(Fraction(text)))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as "
                                         "8/255") from None


def per_channel(text: str) -> list[float]:
    """0.4914,0.4822,0.4465: one number per channel."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, "
                                         "one per channel") from None


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The params keys the options set, by dotted key; -S last, so that it wins."""
    keys: dict[str, object] = {"model.file": str(args.path),
                               "attack.epsilons": [eps.value for eps in args.eps]}
    if args.attacks is not None:
        keys["attack.ensemble"] = [name.strip() for name in args.attacks.split(",")]
    if args.max_images is not None:
        keys["attack.max_images"] = args.max_images
    if args.normalize is not None:
        keys["model.normalize"] = dict(zip(("mean", "std"), args.normalize, strict=True))
    if args.arch is not None:
        keys["train.model"] = args.arch
    for setting in args.set:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ParamsError(f"-S {setting!r}: expected key=value, e.g. "
                              "attack.square.queries=1000")
        keys[key] = yaml.safe_load(value)
    return keys


def with_overrides(base: Params, keys: dict[str, object]) -> Params:
    """base with the dotted keys set, validated as params.yaml is."""
    tree = base.model_dump()
    for dotted, value in keys.items():
        *sections, last = dotted.split(".")
        node = tree
        for name in sections:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ParamsError(f"params: {dotted} is not a key: {name} holds a value")
        node[last] = value
    return parse_params(tree)


def evaluate(params: Params, splits: Path) -> tuple[float, AttackResult]:
    """Clean accuracy and the ensemble's cascade on the (attack.max_images) test images."""
    cfg = params.attack
    if not cfg.ensemble:
        raise ParamsError("params: attack.ensemble is empty: name the attacks with --attacks")
    device = pick_device(params.base.device)
    test_set = load_splits(splits, ("test",))["test"].to(device)
    check_classes(cfg, len(test_set.classes))
    test_set = attack_subset(test_set, cfg.max_images, params.base.seed)
    batch_size = evaluation_batch_size(params.evaluate.batch_size, device)
    model, model_file = load_evaluated(params.model.file, params.model, params.train, test_set,
                                       device)
    print(f"model: {model_file.describe()}")
    model = prepare_model(model, device, pick_precision(params.base.precision, device))
    clean = classification_report(model, test_set, batch_size)["accuracy"]
    print(f"clean accuracy: {clean:.2%} ({len(test_set):,} test images)", flush=True)
    ensemble = [(name, settings_of(name, cfg)) for name in cfg.ensemble]
    return clean, worst_case(model, test_set, cfg.epsilons, batch_size, ensemble, [],
                             params.base.seed)


def summary(clean: float, result: AttackResult, written: list[Eps]) -> list[str]:
    """AutoAttack's closing lines, per ε (as --eps wrote it, unless -S set attack.epsilons)."""
    texts = {eps.value: eps.text for eps in written}
    lines = [f"clean accuracy: {clean:.2%}"]
    for e, label in enumerate(texts.get(eps, f"{eps:g}") for eps in result.epsilons):
        lines += [f"eps {label}: robust accuracy after {title(name)}: {values[e]:.2%}"
                  for name, values in result.after.items()]
        lines.append(f"eps {label}: robust accuracy: {result.accuracy[e]:.2%}")
    return lines


def main(args: argparse.Namespace) -> None:
    params = with_overrides(load_params(args.params), overrides(args))
    clean, result = evaluate(params, args.splits)
    print("\n".join(summary(clean, result, args.eps)))


def parser() -> argparse.ArgumentParser:
    described = argparse.ArgumentParser(
        prog="python -m advlab.evaluation.evaluate_model", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    described.add_argument("path", type=Path, help="the model file: TorchScript, a state_dict "
                           "(bare or in a checkpoint) of train.model, or an advlab model file")
    described.add_argument("--eps", nargs="+", type=eps_arg, default=[eps_arg("8/255")],
                           metavar="EPS",
                           help="L∞ radii in pixel units, e.g. 8/255 (default) 0.03: "
                           "attack.epsilons")
    described.add_argument("--attacks", help="comma-separated, in cascade order: attack.ensemble "
                           "(default: params.yaml's, AutoAttack's standard version)")
    described.add_argument("--max-images", type=int, help="a seeded stratified subset of this "
                           "many test images: attack.max_images (default: params.yaml's, all as "
                           "committed)")
    described.add_argument("--normalize", nargs=2, type=per_channel, metavar=("MEAN", "STD"),
                           help="the normalization the model expects, e.g. 0.5,0.5,0.5 "
                           "0.25,0.25,0.25: model.normalize (default: params.yaml's, none as "
                           "committed; `dvc exp run -S model.normalize=...` leaves it set)")
    described.add_argument("--arch", help="a state_dict's architecture: train.model")
    described.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                           help="any other params key, e.g. -S attack.square.queries=1000")
    described.add_argument("--params", type=Path, default=Path("params.yaml"),
                           help="the params file the options apply to (default: params.yaml)")
    described.add_argument("--splits", type=Path, default=Path("data/splits"),
                           help="the folder with test.pt (default: data/splits; `dvc repro "
                           "split` writes it)")
    return described


if __name__ == "__main__":
    run_stage("evaluate_model", main, parser())
