import pytest
import torch
from conftest import train_tiny

from advlab.device import pick_device
from advlab.evaluate import classification_report, confusion_matrix, predict_logits
from advlab.train import augment


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
    assert set(report["per_class"]) == set(tiny_sets["test"].classes)


def test_confusion_matrix_counts_actual_by_predicted():
    counts = confusion_matrix(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_augment_keeps_shape_range_and_content():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    y = augment(x, torch.randint(0, 9, (16, 2)), torch.rand(16) < 0.5)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    centre = y[:, :, 4:28, 4:28]  # a crop shifted by at most 4 pixels keeps the centre's pixels
    assert centre.sum() > 0


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
