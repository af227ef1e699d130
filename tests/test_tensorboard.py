"""TensorBoard logs read back with TensorBoard's own event reader."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from advlab.data.images import ImageSet, to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import build_model, model_config
from advlab.params import Params
from advlab.params.train import Train
from advlab.reporting.figures import accuracy_vs_epsilon
from advlab.reporting.tensorboard_log import (
    EPS_STEP,
    log_attack,
    log_epoch,
    log_figures,
    log_graph,
    log_hparams,
    log_test,
    open_writer,
)
from advlab.training.loop import FitJob, fit


def read(logdir) -> EventAccumulator:
    return EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0}).Reload()


@pytest.fixture(scope="module")
def small_sets() -> tuple[ImageSet, ImageSet]:
    big = synthetic_images(96, seed=5)
    small = ImageSet(big.images[:, :, ::4, ::4].contiguous(), big.labels, big.classes)  # 8x8
    index = torch.arange(96)
    return small.subset(index[:64]), small.subset(index[64:])


def test_train_run_has_graph_loss_per_iteration_validation_and_hparams(tmp_path, small_sets):
    train_set, val_set = small_sets
    cfg = Train(epochs=2, batch_size=16)  # 4 steps per epoch
    torch.manual_seed(0)
    model = build_model(model_config("lab_cnn", train_set))
    with open_writer(tmp_path) as writer:
        history = fit(FitJob(model, train_set, val_set, cfg, seed=0, eval_batch_size=32,
                             on_epoch=partial(log_epoch, writer)))
        log_graph(writer, model, to_float(val_set.images[:1]))
        log_hparams(writer, Params(), {"val_acc": history[-1].val_acc})

    events = read(tmp_path)
    assert events.Tags()["graph"]
    losses = events.Scalars("loss/train_per_iteration")
    assert [e.step for e in losses] == list(range(1, 9))
    expected = torch.cat([r.step_losses for r in history]).tolist()
    assert [e.value for e in losses] == pytest.approx(expected)
    val = events.Scalars("accuracy/validation")
    assert [(e.step, e.value) for e in val] == [(4, pytest.approx(history[0].val_acc)),
                                                (8, pytest.approx(history[1].val_acc))]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(
        events.PluginTagToContent("hparams"))
    assert events.Scalars("hparam/val_acc")[0].value == pytest.approx(history[-1].val_acc)


def test_test_attack_and_report_runs_have_scalars_and_images(tmp_path, small_sets):
    _, test_set = small_sets
    torch.manual_seed(0)
    model = build_model(model_config("lab_cnn", test_set)).eval()
    result = fgsm_sweep(model, test_set, (0.0, 0.1, 0.25), batch_size=32)
    with open_writer(tmp_path / "test") as writer:
        log_test(writer, 0.5, {"a": 0.25, "b": 0.75})
    with open_writer(tmp_path / "attack") as writer:
        log_attack(writer, result, test_set.classes)
    with open_writer(tmp_path / "report") as writer:
        log_figures(writer, {"accuracy": accuracy_vs_epsilon([0, 0.1], {"fgsm": [0.5, 0.2]})})

    assert read(tmp_path / "test").Scalars("accuracy/test")[0].value == 0.5
    attack = read(tmp_path / "attack")
    accuracy = attack.Scalars("fgsm/accuracy")
    assert [e.step for e in accuracy] == [0, EPS_STEP // 10, EPS_STEP // 4]
    assert [e.value for e in accuracy] == pytest.approx(result.accuracy)
    images = attack.Images("fgsm/first_test_image")
    assert len(images) == 3 and (images[0].height, images[0].width) == (8, 8)
    figure = read(tmp_path / "report").Images("report/accuracy")
    assert len(figure) == 1 and figure[0].encoded_image_string.startswith(b"\x89PNG")


def test_open_writer_starts_the_run_afresh(tmp_path):
    for value in (1.0, 2.0):
        with open_writer(tmp_path) as writer:
            writer.add_scalar("x", value, 0)
    assert [e.value for e in read(tmp_path).Scalars("x")] == [2.0]
