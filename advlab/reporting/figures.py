"""The lab's figures as matplotlib Figures (Agg, no display): training curves (Figure 1.2),
accuracy under attack per method, the first test image perturbed at each eps (Figure 1.4),
confusion."""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import torch
from matplotlib.figure import Figure

from advlab.attacks.registry import title
from advlab.core.io import atomic_path

if TYPE_CHECKING:
    from advlab.evaluation.robustness import AttackResult

# Figures go to files only. Agg before anything imports pyplot (TensorBoard's add_figure
# does), so a machine with a display never opens a GUI backend.
matplotlib.use("Agg")
DPI = 100


def training_curves(epochs: Sequence[int], loss: Sequence[float],
                    val_acc: Sequence[float] | None,
                    robust_val_acc: Sequence[float] | None = None) -> Figure:
    """Mean training loss and validation accuracy per epoch, side by side (Figure 1.2); the
    robust validation accuracy beside the latter when given (the panel stays empty with
    neither: a run without validation)."""
    fig = Figure(figsize=(10, 4), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(epochs, loss, marker="o")
    left.set(title="Training loss", xlabel="epoch", ylabel="mean cross-entropy")
    if val_acc is not None:
        right.plot(epochs, val_acc, marker="o", color="tab:orange", label="clean")
    if robust_val_acc is not None:
        right.plot(epochs, robust_val_acc, marker="s", color="tab:red", label="PGD (robust)")
        right.legend()
    right.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def accuracy_vs_epsilon(epsilons: Sequence[float],
                        accuracy: Mapping[str, Sequence[float]]) -> Figure:
    """One line per attack method (accuracy by method name), each point labelled; the points
    in increasing eps, whatever the order of attack.epsilons (a line joins them in order)."""
    fig = Figure(figsize=(6, 4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for (method, values), offset in zip(accuracy.items(), itertools.cycle((6, -12)),
                                        strict=False):
        points = sorted(zip(epsilons, values, strict=True))
        ax.plot(*zip(*points, strict=True), marker="o", label=title(method))
        for eps, acc in points:
            ax.annotate(f"{acc:.3f}", (eps, acc), textcoords="offset points",
                        xytext=(0, offset), ha="center", fontsize=8)
    ax.set(title="Accuracy under attack (correct clean and perturbed)",
           xlabel="epsilon (pixel units, [0, 1] scale)", ylabel="accuracy",
           ylim=(-0.05, 1.05))  # room for the labels under points at 0
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def perturbed_row(images: torch.Tensor, epsilons: Sequence[float], true_label: str,
                  predicted: Sequence[str], confidence: Sequence[float],
                  method: str = "FGSM") -> Figure:
    """One image (E, C, H, W in [0, 1]) per eps, titled with prediction and confidence."""
    fig = Figure(figsize=(1.9 * len(epsilons), 2.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(epsilons), squeeze=False)[0]
    for ax, image, eps, pred, conf in zip(axes, images, epsilons, predicted, confidence,
                                          strict=True):
        pixels = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        if pixels.shape[2] == 1:
            ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(pixels)
        color = "tab:green" if pred == true_label else "tab:red"
        ax.set_title(f"ε = {eps:g}\n{pred} ({conf:.2f})", fontsize=9, color=color)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"First test image under {method}; true label: {true_label}",
                 fontsize=10)
    return fig


def attack_examples(result: AttackResult, classes: Sequence[str]) -> Figure:
    """perturbed_row for the first test image of an attack result, titled with its method."""
    return perturbed_row(result.example_images, result.epsilons,
                         classes[int(result.example_label)],
                         [classes[p] for p in result.example_predictions.tolist()],
                         result.example_confidence.tolist(), title(result.method))


def confusion(counts: torch.Tensor, classes: Sequence[str]) -> Figure:
    """counts[actual, predicted] as a heat map with the counts written in."""
    size = max(5.0, 0.55 * len(classes) + 2)
    fig = Figure(figsize=(size, size), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.imshow(counts.cpu().numpy(), cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(title="Test confusion matrix", xlabel="predicted", ylabel="actual")
    threshold = counts.max().item() / 2
    for (i, j), n in zip(torch.cartesian_prod(torch.arange(len(classes)),
                                              torch.arange(len(classes))).tolist(),
                         counts.flatten().tolist(), strict=True):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                color="white" if n > threshold else "black")
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(fig))
