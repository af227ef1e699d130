"""TensorBoard logging (the lab's Problem 6): each stage writes its own run under runs/.

runs/train: the model graph, training loss per iteration, validation accuracy (and robust
validation accuracy, when on) per epoch (at the iteration that ends it) and the hparams with
the final metrics; runs/test: the test accuracy, logged once; runs/attack: per attack method
(and the worst case, with its accuracy after each attack of the cascade), accuracy,
confidence and flips per eps, the perturbed first test image and the wall time; runs/report:
the report's figures. `tensorboard --logdir runs` shows them all.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.image
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from advlab.params import Params
from advlab.params.attack import EPS_STEP, eps_step

if TYPE_CHECKING:
    from advlab.evaluation.robustness import AttackResult
    from advlab.training.loop import EpochResult


def open_writer(logdir: str | Path) -> SummaryWriter:
    """A writer on logdir, emptied first of the event files of an earlier run of the stage.

    (dvc repro deletes a stage's outputs before running it; a stage run by hand does not.)
    """
    logdir = Path(logdir)
    if logdir.is_dir():
        for old in logdir.glob("events.out.tfevents.*"):
            old.unlink()
    return SummaryWriter(str(logdir))


def log_epoch(writer: SummaryWriter, result: EpochResult) -> None:
    """An on_epoch callback for train.fit: the epoch's losses are already on the CPU."""
    steps = len(result.step_losses)
    first = (result.epoch - 1) * steps  # every epoch has the same number of steps
    for step, loss in enumerate(result.step_losses.tolist(), first + 1):
        writer.add_scalar("loss/train_per_iteration", loss, step)
    writer.add_scalar("loss/train_epoch_mean", result.loss, first + steps)
    if result.val_acc is not None:
        writer.add_scalar("accuracy/validation", result.val_acc, first + steps)
    if result.robust_val_acc is not None:
        writer.add_scalar("accuracy/robust_validation", result.robust_val_acc, first + steps)
    writer.flush()


def log_graph(writer: SummaryWriter, model: nn.Module, example: torch.Tensor) -> None:
    """The GRAPHS tab: the model traced in eval mode (BatchNorm statistics stay untouched)."""
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():  # add_graph traces with torch.jit.trace, now deprecated
        warnings.simplefilter("ignore", FutureWarning)
        writer.add_graph(model, example)
    model.train(was_training)


# The params the train stage reads, as dvc.yaml lists them for it: its data are the splits (a
# dep), so data.* is not among them (logging it would make the stage read keys it does not
# declare, and declaring them would retrain on a change of data.source's path alone).
TRAIN_SECTIONS = ("base", "train", "evaluate")


def hparams(params: Params) -> dict[str, int | float | str | bool]:
    """The training params as flat `section.key` values TensorBoard accepts (None as text)."""
    flat = {}
    for section in TRAIN_SECTIONS:
        for key, value in getattr(params, section).model_dump().items():
            ok = isinstance(value, (int, float, str, bool))
            flat[f"{section}.{key}"] = value if ok else str(value)
    return flat


def log_hparams(writer: SummaryWriter, params: Params, metrics: Mapping[str, float]) -> None:
    """The HPARAMS tab, in this writer's run; metric tags get an `hparam/` prefix so they do
    not collide with the scalars of the same name."""
    writer.add_hparams(hparams(params), {f"hparam/{k}": v for k, v in metrics.items()},
                       run_name=".")


def log_test(writer: SummaryWriter, accuracy: float, per_class: Mapping[str, float]) -> None:
    """The test set is used once: one scalar, and the per-class accuracies as a table."""
    writer.add_scalar("accuracy/test", accuracy, 0)
    rows = "\n".join(f"| {name} | {acc:.4f} |" for name, acc in per_class.items())
    writer.add_text("test/per_class_accuracy", f"| class | accuracy |\n|---|---|\n{rows}", 0)


def log_attack(writer: SummaryWriter, result: AttackResult, classes: Sequence[str]) -> None:
    """Per eps, at step round(1000 * eps), under `<method>/`: accuracy, mean confidence, flips
    and the first test image perturbed (IMAGES tab, one slider step per eps)."""
    tag = result.method
    for row, image, pred, conf in zip(result.rows(), result.example_images,
                                      result.example_predictions.tolist(),
                                      result.example_confidence.tolist(), strict=True):
        step = eps_step(row["epsilon"])
        for key in ("accuracy", "mean_confidence", "flipped"):
            writer.add_scalar(f"{tag}/{key}", row[key], step)
        writer.add_image(f"{tag}/first_test_image", image, step)
        writer.add_text(f"{tag}/first_test_image", f"eps = {row['epsilon']:g}: true "
                        f"{classes[int(result.example_label)]}, predicted {classes[pred]} "
                        f"({conf:.3f})", step)
    for name, values in result.after.items():  # the worst case's cascade, cumulative
        for eps, acc in zip(result.epsilons, values, strict=True):
            writer.add_scalar(f"{tag}/accuracy_after_{name}", acc, eps_step(eps))
    for name, seconds in result.seconds.items():
        writer.add_scalar(f"{tag}/seconds_{name}", seconds, 0)
    writer.add_scalar(f"{tag}/zero_grad_fraction", result.zero_grad_fraction, 0)
    writer.add_text(f"{tag}/about", f"Steps are {EPS_STEP} x eps. An image counts as correct "
                    "only if classified correctly both clean and perturbed.", 0)


def log_figures(writer: SummaryWriter, figures: Mapping[str, Figure]) -> None:
    for name, fig in figures.items():
        writer.add_figure(f"report/{name}", fig, 0, close=False)


def log_png(writer: SummaryWriter, tag: str, path: str | Path) -> None:
    """A PNG file as an image (its RGB channels)."""
    pixels = matplotlib.image.imread(path)[:, :, :3]
    writer.add_image(tag, pixels, 0, dataformats="HWC")
