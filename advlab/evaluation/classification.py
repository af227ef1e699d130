"""Batched evaluation: predictions, accuracy, per-class accuracy and the confusion matrix.

Any batch size gives the same predictions as batch size 1 (the model is in eval mode, so
BatchNorm and dropout treat every image on its own); larger batches are only faster.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.core.device import evaluating
from advlab.data.images import ImageSet, batches, to_float

# evaluate.batch_size: auto, per device type. CPU: measured with benchmarks/eval_batch.py
# (docs/performance.md); a batch whose activations stay in the caches. GPU: a large batch keeps
# the card busy, and 1000 CIFAR images need ~0.2 GB of activations for the attack's backward.
AUTO_BATCH = {"cpu": 128, "cuda": 1000, "mps": 1000}


def evaluation_batch_size(setting: int | str, device: torch.device) -> int:
    """evaluate.batch_size as a number: `auto` resolved for the device type, ints as given."""
    return AUTO_BATCH.get(device.type, 1000) if setting == "auto" else int(setting)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """float32 logits (N, classes) for uint8 images, on the images' device, in the model's
    precision with its last layer in fp32 (models.Classifier) and reproducible cuDNN."""
    was_training = model.training
    model.eval()
    device = images.device
    out = []
    with evaluating(model, device):
        for index in batches(len(images), batch_size, device=device):
            out.append(model(to_float(images[index])).float())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, data: ImageSet, batch_size: int) -> torch.Tensor:
    """Fraction of correct predictions, as a 0-d tensor on the data's device (no host sync)."""
    logits = predict_logits(model, data.images, batch_size)
    return (logits.argmax(1) == data.labels).float().mean()


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[actual, predicted]."""
    flat = labels * classes + predictions
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def classification_report(model: nn.Module, data: ImageSet, batch_size: int) -> dict:
    """Test accuracy, per-class accuracy and the confusion matrix, from one pass over the set."""
    predictions = predict_logits(model, data.images, batch_size).argmax(1).cpu()
    labels = data.labels.cpu()
    counts = confusion_matrix(labels, predictions, len(data.classes))
    per_class = counts.diag() / counts.sum(1).clamp(min=1)
    return {
        "accuracy": (predictions == labels).sum().item() / len(labels),  # exact ratio
        "images": len(labels),
        "per_class": {name: round(acc, 6) for name, acc in zip(data.classes,
                                                               per_class.tolist(), strict=True)},
        "predictions": predictions,
        "confusion": counts,
    }
