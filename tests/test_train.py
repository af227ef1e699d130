import pytest
import torch
from conftest import train_tiny

from advlab.evaluation.classification import classification_report, confusion_matrix, predict_logits
from advlab.params.train import Train
from advlab.training.loop import augment, draw_noise


def test_model_learns_the_synthetic_task(trained_model, tiny_sets):
    report = classification_report(trained_model, tiny_sets["test"], batch_size=64)
    assert report["accuracy"] > 0.5  # chance is 0.1


def test_training_reruns_identically_on_cpu(tiny_sets):
    _, first = train_tiny(tiny_sets, epochs=1, seed=3)
    _, second = train_tiny(tiny_sets, epochs=1, seed=3)
    assert torch.equal(first[0].step_losses, second[0].step_losses)
    assert first[0].val_acc == second[0].val_acc
    assert len(first[0].step_losses) == -(-600 // 32)


def test_batched_predictions_equal_one_image_at_a_time(trained_model, tiny_sets):
    images = tiny_sets["test"].images[:40]
    batched = predict_logits(trained_model, images, batch_size=1000)
    single = torch.cat([predict_logits(trained_model, images[i : i + 1], 1) for i in range(40)])
    assert torch.equal(batched.argmax(1), single.argmax(1))
    assert torch.allclose(batched, single, atol=1e-5)


def test_test_report_is_consistent(trained_model, tiny_sets):
    report = classification_report(trained_model, tiny_sets["test"], batch_size=64)
    counts = report["confusion"]
    assert counts.sum() == 200
    assert report["accuracy"] == pytest.approx(counts.diag().sum().item() / 200)
    assert list(report["per_class"]) == list(tiny_sets["test"].classes)
    labels, predictions = tiny_sets["test"].labels, report["predictions"]
    for c, name in enumerate(tiny_sets["test"].classes):  # recall: correct among class c's images
        expected = (predictions[labels == c] == c).float().mean().item()
        assert report["per_class"][name] == pytest.approx(expected, abs=1e-6), name


def test_confusion_matrix_counts_actual_by_predicted():
    counts = confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def shift_and_flip(x: torch.Tensor, out: torch.Tensor) -> tuple[int, int, bool]:
    """The (dy, dx, flipped) that make `out` from image `x`: out is the 32x32 window at (dy, dx)
    of x zero-padded by 4, mirrored if flipped. Fails if no such window gives `out`."""
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    windows = {(dy, dx): padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9)
               for dx in range(9)}
    found = [(dy, dx, flip) for (dy, dx), window in windows.items() for flip in (False, True)
             if torch.equal(out, window.flip(2) if flip else window)]
    assert len(found) == 1, f"{len(found)} windows of the padded input give this output"
    return found[0]


def test_augment_shifts_by_up_to_4_pixels_and_flips_half_the_images():
    """On images whose every pixel is distinct (it encodes its channel, row and column), each
    output is exactly one shifted, possibly mirrored window; over 200 images every shift
    from -4 to 4 occurs in each direction, and about half are mirrored."""
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    pattern = torch.stack([c * 1024 + rows * 32 + cols + 1 for c in range(3)]).float() / 3072
    x = pattern.expand(200, 3, 32, 32).contiguous()
    noise = draw_noise(200, (3, 32, 32), Train(augment=True), torch.Generator().manual_seed(0))
    y = augment(x, noise.shifts, noise.flips)
    assert y.shape == x.shape
    found = [shift_and_flip(pattern, image) for image in y]
    assert {dy for dy, _, _ in found} == set(range(9))
    assert {dx for _, dx, _ in found} == set(range(9))
    assert 0.35 < sum(flip for _, _, flip in found) / len(found) < 0.65
