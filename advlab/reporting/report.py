"""The run's report: figures from metrics/ and one self-contained HTML page.

The page embeds its figures as data: URIs and links nothing external, so it opens offline
and can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

from advlab.attacks.registry import WORST_CASE, title
from advlab.core.io import require_file
from advlab.evaluation.classification import confusion_matrix
from advlab.models.external import ModelFile
from advlab.params import Params
from advlab.reporting import figures
from advlab.training.metrics import read_curves


@dataclass(frozen=True)
class RunMetrics:
    """What the train, test and attack stages wrote to metrics/."""

    train: list[dict[str, float]]  # per epoch: epoch, loss, val_acc, robust_val_acc
    test_accuracy: float
    per_class: dict[str, float]  # in class order
    confusion: torch.Tensor  # counts[actual, predicted]
    attack: dict[str, list[dict[str, float]]]  # per method, per eps: epsilon, accuracy,
    #                                              mean_confidence, flipped
    zero_grad_fraction: float
    attacked_images: int
    after: dict[str, dict[str, float]]  # worst case: per ensemble attack, per `eps=<value>`

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.per_class)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.attack)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def attack_rows(rows: list[dict[str, str]]) -> dict[str, list[dict[str, float]]]:
    """attack.csv's rows grouped by method, in file order, the numbers as floats."""
    grouped: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        values = {k: float(v) for k, v in row.items() if k != "method"}
        grouped.setdefault(row["method"], []).append(values)
    return grouped


def read_metrics(folder: str | Path) -> RunMetrics:
    folder = Path(folder)
    for name in ("test.json", "confusion.csv", "attack.json", "attack.csv"):
        require_file(folder / name)
    test = json.loads((folder / "test.json").read_text())
    attack = json.loads((folder / "attack.json").read_text())
    classes = list(test["per_class"])
    pairs = torch.tensor([[classes.index(r["actual"]), classes.index(r["predicted"])]
                          for r in read_csv(folder / "confusion.csv")], dtype=torch.int64)
    counts = confusion_matrix(pairs[:, 0], pairs[:, 1], len(classes)) if len(pairs) else (
        torch.zeros(len(classes), len(classes), dtype=torch.int64))
    return RunMetrics(
        train=read_curves(folder),
        test_accuracy=test["accuracy"], per_class=test["per_class"], confusion=counts,
        attack=attack_rows(read_csv(folder / "attack.csv")),
        zero_grad_fraction=attack["zero_grad_fraction"], attacked_images=attack["images"],
        after=attack.get(WORST_CASE, {}).get("after", {}),
    )


def column(rows: list[dict[str, float]], name: str) -> list[float] | None:
    """A per-epoch curve, None where the run has none (no validation, no robust one)."""
    return [r[name] for r in rows] if rows and name in rows[0] else None


def make_figures(metrics: RunMetrics, trained_here: bool = True) -> dict[str, Figure]:
    """The lab's Figure 1.2 (for the train stage's model only), accuracy vs eps and the
    confusion matrix, by file stem."""
    train = metrics.train
    training = {"training_curves": figures.training_curves(
        [int(r["epoch"]) for r in train], [r["loss"] for r in train],
        column(train, "val_acc"), column(train, "robust_val_acc"))} if trained_here else {}
    return {
        **training,
        "accuracy_vs_epsilon": figures.accuracy_vs_epsilon(
            [r["epsilon"] for r in next(iter(metrics.attack.values()))],
            {m: [r["accuracy"] for r in rows] for m, rows in metrics.attack.items()}),
        "confusion_matrix": figures.confusion(metrics.confusion, metrics.classes),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _training_mode(params: Params) -> str:
    train = params.train
    if train.adversarial == "none":
        return "standard training"
    steps = f", {train.adv_steps} steps" if train.adversarial in ("pgd", "trades") else ""
    return f"adversarial training ({train.adversarial}, ε = {train.adv_eps:g}{steps})"


def _attack_table(metrics: RunMetrics) -> str:
    """Accuracy of every method first (the columns to compare), then confidence and flips."""
    methods = [title(m) for m in metrics.methods]
    header = ["ε", *[f"{m} accuracy" for m in methods],
              *[f"{m} mean confidence" for m in methods],
              *[f"{m} flipped (of {metrics.attacked_images:,})" for m in methods]]
    per_eps = zip(*metrics.attack.values(), strict=True)  # every method ran at the same eps
    rows = [(f"{rs[0]['epsilon']:g}", *[f"{r['accuracy']:.4f}" for r in rs],
             *[f"{r['mean_confidence']:.4f}" for r in rs], *[int(r["flipped"]) for r in rs])
            for rs in per_eps]
    return _table(header, rows)


def _cascade(metrics: RunMetrics) -> list[str]:
    """The worst case's accuracy after each attack of the cascade (as AutoAttack prints it)."""
    if not metrics.after:
        return []
    epsilons = list(next(iter(metrics.after.values())))
    return ["<h3>Worst case: accuracy after each attack of the ensemble, cumulative</h3>",
            _table(["attack", *epsilons],
                   [(title(name), *[f"{acc:.4f}" for acc in values.values()])
                    for name, values in metrics.after.items()])]


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td{text-align:right}td:first-child{text-align:left}
img{max-width:100%}.note{color:#555}"""


def _training(params: Params, metrics: RunMetrics, pngs: Mapping[str, bytes]) -> list[str]:
    """The train stage's record; none for a model trained elsewhere (model.file)."""
    if not params.model.trained_here:
        return []
    return [
        "<h2>Training (the lab's Figure 1.2)</h2>",
        "<p class=note>Validation accuracy after every epoch; the test set is used once, "
        "below.</p>",
        _image(pngs["training_curves"], "training loss and validation accuracy per epoch"),
        _table(["epoch", "mean training loss", "validation accuracy"],
               [(int(r["epoch"]), f"{r['loss']:.4f}",
                 f"{r['val_acc']:.4f}" if "val_acc" in r else "none (data.val_size 0)")
                for r in metrics.train]),
    ]


def _evaluated(params: Params, model_file: ModelFile) -> list[str]:
    """Which model the test and attack numbers are of: the file, its form and digests."""
    origin = ("the train stage's model" if params.model.trained_here
              else "trained elsewhere: this run has no training record of it")
    return ["<h2>Model evaluated</h2>",
            f"<p class=note>model.file, {origin}.</p>",
            _table(["file", "form", "architecture", "md5", "sha256"],
                   [(model_file.path, model_file.form, model_file.arch or "(TorchScript)",
                     model_file.md5, model_file.sha256)])]


def render_html(params: Params, parameter_rows: Sequence[tuple[str, str, int]],
                metrics: RunMetrics, pngs: Mapping[str, bytes], model_file: ModelFile) -> str:
    """The whole report as one HTML string; pngs by figure name (see make_figures), plus
    `attack_examples`."""
    total = sum(count for *_, count in parameter_rows)
    first = metrics.methods[0]
    eps0 = next((r["accuracy"] for r in metrics.attack[first] if r["epsilon"] == 0), None)
    tested = metrics.confusion.sum().item()
    clean = ("the test accuracy" if metrics.attacked_images == tested else  # attack.max_images
             f"the clean accuracy of the {metrics.attacked_images:,} attacked test images "
             f"(attack.max_images of the {tested:,})")
    param_values = [(f"{section}.{key}", json.dumps(value))  # as YAML writes them
                    for section, values in params.as_dict().items()
                    for key, value in values.items()]
    trained = params.model.trained_here
    subject = params.train.model if trained else Path(model_file.path).name
    how = (f"{len(metrics.train)} epochs; {_training_mode(params)}" if trained
           else "trained elsewhere")
    parts = [
        f"<h1>advlab report: {html.escape(subject)} on {html.escape(params.data.dataset)}</h1>",
        f"<p>Test accuracy <b>{metrics.test_accuracy:.4f}</b>; {total:,} parameters; "
        f"{how}.</p>",
        *_evaluated(params, model_file),
        *_training(params, metrics, pngs),
        "<h2>Parameters (the lab's Table 1.3)</h2>",
        _table(["layer", "arithmetic", "parameters"],
               [*[(name, formula, f"{count:,}") for name, formula, count in parameter_rows],
                ("total", "", f"{total:,}")]),
        "<h2>Test</h2>",
        f"<p>Accuracy {metrics.test_accuracy:.4f} on {tested:,} images.</p>",
        _table(["class", "accuracy"],
               [(name, f"{acc:.4f}") for name, acc in metrics.per_class.items()]),
        _image(pngs["confusion_matrix"], "test confusion matrix"),
        "<h2>Attacks: " + ", ".join(title(m) for m in metrics.methods) + "</h2>",
        "<p class=note>FGSM (the lab's Problem 5): x' = clamp(x + ε·sign(∇ₓ loss), 0, 1) on "
        "pixels in [0, 1] (the model normalizes its input itself). PGD: repeated steps of this "
        "kind, each projected back into the ε-ball around x and clamped to [0, 1], from a "
        "random start in the ball. APGD-CE, APGD-T and Square are AutoAttack's attacks; the "
        "worst case counts an image as robust only if no attack fooled it (attack.ensemble "
        "runs as a cascade on the images still standing). Every attack but FGSM attacks only "
        "the images classified correctly clean and stops on an image once fooled. An image "
        "counts as correct only if it is classified correctly both clean and after the "
        f"attack, so ε = 0 is {clean}"
        + (f" ({eps0:.4f})" if eps0 is not None else "") + ". "
        f"{metrics.zero_grad_fraction:.4%} of the input-gradient entries are exactly 0 "
        "(sign 0 leaves a pixel unperturbed; a large share would hint at gradient "
        "masking).</p>",
        _attack_table(metrics),
        *_cascade(metrics),
        _image(pngs["accuracy_vs_epsilon"], "accuracy under attack against epsilon"),
        f"<h3>The first test image at every ε under {title(first)} (the lab's Figure 1.4)</h3>",
        _image(pngs["attack_examples"], "the first test image perturbed at every epsilon"),
        "<h2>Params</h2>",
        _table(["key", "value"], param_values),
    ]
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>advlab report</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
