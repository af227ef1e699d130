"""Training recipes: each option changes what it says (lr per iteration, EMA, label smoothing,
weight decay, TRADES, N-FGSM, train.keep, the catastrophic-overfitting line), checked against
its formula or an independent implementation; the default is the lab's training."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_progress import load_stage
from test_resume import CHECKPOINT, workdir
from test_resume import tiny_sets as random_sets

import advlab.training.loop
from advlab.attacks.training import adversarial_batch, n_fgsm, training_loss
from advlab.core.io import load_torch
from advlab.models import build_model, load_model, model_config
from advlab.params import parse_params
from advlab.params.fields import ParamsError
from advlab.params.train import Train
from advlab.training.distributed import unwrap
from advlab.training.loop import EpochResult, FitJob, best_epoch, fit, overfitting_line
from advlab.training.metrics import read_curves
from advlab.training.optim import Ema, TrainState, parameter_groups

LR = 0.1


def lr_trace(epochs: int = 4, steps: int = 5, **train: object) -> list[float]:
    """The lr of every optimizer step of a TrainState for `epochs` of `steps` steps."""
    model = torch.nn.Linear(2, 1)
    state = TrainState.create(model, Train(epochs=epochs, lr=LR, optimizer="sgd", **train), steps)
    trace = []
    for _ in range(epochs * steps):
        trace.append(state.optimizer.param_groups[0]["lr"])
        state.step(model(torch.ones(1, 2)).sum())
    return trace


def torch_trace(make_scheduler, total: int) -> list[float]:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=LR)
    scheduler = make_scheduler(optimizer)
    trace = []
    for _ in range(total):
        trace.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return trace


def test_constant_is_the_lr_at_every_step_and_warmup_rises_linearly_to_it():
    assert lr_trace() == [LR] * 20
    assert lr_trace(warmup_epochs=1) == pytest.approx([LR * k / 5 for k in range(1, 6)] + [LR] * 15)


def test_onecycle_and_cosine_follow_torchs_schedulers():
    onecycle = torch_trace(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=LR, total_steps=20, pct_start=0.25, cycle_momentum=False), 20)
    assert lr_trace(schedule="onecycle", warmup_epochs=1) == pytest.approx(onecycle, rel=1e-9)
    default = torch_trace(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=LR, total_steps=20, cycle_momentum=False), 20)  # pct_start 0.3
    assert lr_trace(schedule="onecycle") == pytest.approx(default, rel=1e-9)
    # 30% of 21 steps, and warmup 1.5 of 5 epochs of 9 steps, are fractional: torch's peak too
    for epochs, steps, warmup in [(3, 7, 0), (5, 9, 1.5)]:
        total = epochs * steps
        fractional = torch_trace(lambda o, total=total: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=LR, total_steps=total, pct_start=0.3, cycle_momentum=False), total)
        assert lr_trace(epochs, steps, schedule="onecycle", warmup_epochs=warmup) == \
            pytest.approx(fractional, rel=1e-9)
    cosine = torch_trace(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20), 20)
    assert lr_trace(schedule="cosine") == pytest.approx(cosine, rel=1e-9, abs=1e-12)


def test_cyclic_is_wong_et_als_triangle_and_piecewise_drops_tenfold_twice():
    # Wong et al.: lr = interp(epoch + (i + 1) / steps, [0, 2/5 epochs, epochs], [0, lr, 0])
    def wong(t: float) -> float:
        return LR * (t / 2 if t <= 2 else (5 - t) / 3)

    assert lr_trace(epochs=5, schedule="cyclic") == pytest.approx(
        [wong((i + 1) / 5) for i in range(25)], abs=1e-12)
    assert lr_trace(schedule="piecewise") == pytest.approx(
        [LR] * 10 + [LR / 10] * 5 + [LR / 100] * 5)


def small_job(cfg: Train, **job: object) -> FitJob:
    """A LabCNN on random_sets' 256 training and 64 validation 8x8 images."""
    train_set, val_set = random_sets()
    torch.manual_seed(0)
    return FitJob(build_model(model_config("lab_cnn", train_set)), train_set, val_set, cfg, 0,
                  64, **job)


def test_fit_steps_the_schedule_once_per_iteration():
    job = small_job(Train(epochs=2, batch_size=48, schedule="cyclic"))  # 6 steps per epoch
    fit(job)
    assert job.state.scheduler.last_epoch == 12
    assert job.state.optimizer.param_groups[0]["lr"] == 0  # Wong et al.'s last step: lr 0


def test_ema_averages_every_step_and_is_what_fit_validates():
    source = torch.nn.Linear(3, 2)
    ema = Ema(source, 0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        source.weight.add_(1.0)
    ema.update()
    assert torch.allclose(ema.model.weight, 0.9 * before["weight"] + 0.1 * source.weight)

    job = small_job(Train(epochs=1, batch_size=32, ema=0.9))
    history = fit(job)
    averaged, raw = job.kept_model(), unwrap(job.model)
    assert averaged is job.state.ema.model
    assert not torch.equal(averaged.layers[1].weight, raw.layers[1].weight)
    assert history[0].val_acc == advlab.training.loop.accuracy(averaged, job.val_set, 64).item()
    assert history[0].val_acc != advlab.training.loop.accuracy(raw, job.val_set, 64).item()


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    targets = 0.8 * F.one_hot(y, 10) + 0.2 / 10
    want = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    got = training_loss(torch.nn.Identity(), logits, logits, y, Train(label_smoothing=0.2))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert training_loss(torch.nn.Identity(), logits, logits, y, Train()).item() == \
        pytest.approx(F.cross_entropy(logits, y).item())


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_kl():
    model = toy_model()
    g = torch.Generator().manual_seed(1)
    x, x_adv = torch.rand(5, 3, 4, 4, generator=g), torch.rand(5, 3, 4, 4, generator=g)
    y = torch.arange(5)
    p, q = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
    want = F.cross_entropy(model(x), y) + 3.0 * (p * (p.log() - q.log())).sum(1).mean()
    got = training_loss(model, x, x_adv, y, Train(adversarial="trades", trades_beta=3.0))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_trades_example_ascends_the_kl_inside_the_ball():
    model = toy_model()
    x = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    cfg = Train(adversarial="trades", adv_eps=0.1, adv_steps=5)
    start = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x_adv = adversarial_batch(model, x, torch.zeros(8, dtype=torch.int64), cfg, start)

    def kl(images: torch.Tensor) -> torch.Tensor:
        p, q = F.softmax(model(x), 1), F.softmax(model(images), 1)
        return (p * (p.log() - q.log())).sum(1)

    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert (kl(x_adv) > 10 * kl(x + 0.001 * start)).all()


def test_n_fgsm_adds_noise_of_two_eps_and_an_unclipped_step_of_eps():
    model, eps = toy_model(), 0.05
    x = torch.full((64, 3, 4, 4), 0.5)  # 3 eps from x stays inside [0, 1]: nothing is clamped
    y = torch.arange(64) % 10
    start = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    noisy = (x + 2 * eps * start).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(noisy), y, reduction="sum"), noisy)
    x_adv = adversarial_batch(model, x, y, Train(adversarial="n_fgsm", adv_eps=eps), start)
    assert torch.allclose(x_adv, x + 2 * eps * start + eps * grad.sign(), atol=1e-6)
    distance = (x_adv - x).abs()
    assert distance.max() <= 3 * eps + 1e-6 and distance.max() > 2.9 * eps  # not projected
    assert (distance > eps + 1e-3).float().mean() > 0.4  # |2u + 1| > 1 for u > 0: half
    edge = torch.ones(1, 3, 4, 4)  # only the valid pixel range bounds it
    assert n_fgsm(model, edge, y[:1], eps, torch.ones_like(edge)).max() == 1


def scripted(values: list[float]):
    """An accuracy function returning `values` in turn (one per epoch), as 0-d tensors."""
    calls = iter(values)
    return lambda *args, **kwargs: torch.tensor(next(calls))


@pytest.mark.parametrize("keep, scored", [("best_val", "accuracy"),
                                          ("best_robust_val", "robust_accuracy")])
def test_keep_holds_the_weights_of_the_best_epoch(monkeypatch, keep, scored):
    monkeypatch.setattr(advlab.training.loop, scored, scripted([0.3, 0.6, 0.6, 0.2]))
    snapshots = []
    job = small_job(Train(epochs=4, batch_size=64, keep=keep, robust_val_images=20,
                          robust_val_steps=1),
                    on_epoch=lambda r: snapshots.append({k: v.clone() for k, v in
                                                         unwrap(job.model).state_dict().items()}))
    history = fit(job)
    assert best_epoch(history, keep) == 2 and job.state.kept["epoch"] == 2  # the first best
    kept = job.kept_model().state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snapshots[1].items())
    assert not torch.equal(kept["layers.1.weight"], snapshots[3]["layers.1.weight"])
    assert best_epoch(history, "last") == 4


def results(robust: list[float]) -> list[EpochResult]:
    return [EpochResult(i, 1.0, 0.5, torch.zeros(1), 0.0, r) for i, r in enumerate(robust, 1)]


def test_catastrophic_overfitting_is_named_once_when_robust_accuracy_falls_20_points():
    line = overfitting_line(results([0.30, 0.45, 0.24]))
    assert line == ("train: catastrophic overfitting at epoch 3: robust validation accuracy "
                    "fell from 0.4500 (epoch 2) to 0.2400, more than 20 points")
    assert overfitting_line(results([0.30, 0.45, 0.26])) is None  # 19 points
    assert overfitting_line(results([0.45, 0.20, 0.10])) is None  # named at epoch 2 already
    assert overfitting_line(results([0.45, 0.20])) is not None
    assert overfitting_line([EpochResult(1, 1.0, 0.5, torch.zeros(1)),
                             EpochResult(2, 1.0, 0.1, torch.zeros(1))]) is None  # no robust val


def test_weight_decay_spares_batchnorm_and_biases_only_when_asked():
    model = build_model(model_config("lab_cnn", random_sets()[0]))
    default = parameter_groups(model, Train(weight_decay=0.1))
    assert len(default) == 1 and len(default[0]["params"]) == len(list(model.parameters()))
    decayed, spared = parameter_groups(model, Train(weight_decay=0.1, decay_norm_and_bias=False))
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in decayed["params"])
    assert {names[id(p)].rsplit(".", 1)[1] for p in spared["params"]} == {"weight", "bias"}
    assert spared["weight_decay"] == 0.0
    # with no gradient of the loss, a step only decays: weights shrink, biases and BN stay
    state = TrainState.create(model, Train(optimizer="sgd", momentum=0, lr=1.0, weight_decay=0.1,
                                           decay_norm_and_bias=False), 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.step(sum(0 * p.sum() for p in model.parameters()))
    for name, p in model.named_parameters():
        factor = 0.9 if p.ndim > 1 else 1.0
        assert torch.allclose(p, factor * before[name]), name


def test_recipe_params_refuse_what_cannot_work():
    for train, key in [({"keep": "best_robust_val"}, "train.keep"),
                       ({"optimizer": "sgd", "momentum": 0, "nesterov": True}, "train.nesterov"),
                       ({"epochs": 2, "warmup_epochs": 3}, "train.warmup_epochs"),
                       ({"ema": 1}, "train.ema"), ({"schedule": "step"}, "train.schedule")]:
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            parse_params({"train": train})


def test_train_stage_saves_the_kept_ema_weights_and_reports_robust_validation(
        tmp_path, monkeypatch, capsys):
    """A combined recipe through the real stage, in process: SGD, onecycle, label smoothing,
    EMA, TRADES, robust validation and keep: best_robust_val."""
    work = workdir(tmp_path, epochs=3, optimizer="sgd", lr=0.05, nesterov=True,
                   schedule="onecycle", label_smoothing=0.1, ema=0.5, adversarial="trades",
                   adv_steps=2, robust_val_images=24, robust_val_steps=2, keep="best_robust_val")
    monkeypatch.chdir(work)
    load_stage("train").main(argparse.Namespace(
        splits=Path("data/splits"), model=Path("models/model.pt"), metrics=Path("metrics"),
        tensorboard=Path("runs/train"), checkpoint=Path(CHECKPOINT)))
    rows = read_curves(work / "metrics")
    assert list(rows[0]) == ["epoch", "loss", "val_acc", "robust_val_acc"] and len(rows) == 3
    metrics = json.loads((work / "metrics/train.json").read_text())
    robust = [r["robust_val_acc"] for r in rows]
    assert metrics["best_robust_val_acc"] == max(robust)
    assert metrics["kept_epoch"] == 1 + robust.index(max(robust))
    checkpoint = load_torch(work / CHECKPOINT)
    saved = load_model(work / "models/model.pt").state_dict()
    kept = checkpoint["state"]["kept"]
    assert kept["epoch"] == metrics["kept_epoch"]
    assert all(torch.equal(saved[k], v) for k, v in kept["weights"].items())
    if kept["epoch"] == 3:  # the last epoch's EMA is the checkpoint's EMA
        assert all(torch.equal(saved[k], v) for k, v in checkpoint["state"]["ema"].items())
    assert not torch.equal(saved["layers.1.weight"], checkpoint["model"]["layers.1.weight"])
    assert f"(EMA weights, decay 0.5; epoch {kept['epoch']} by best_robust_val)" in \
        capsys.readouterr().out
    assert math.isfinite(metrics["loss"])
