"""Cost, side by side: the reference AutoAttack standard (pyautoattack, fra31's code) against
this project's worst case with the default ensemble (APGD-CE, APGD-T, FAB-T, Square at
AutoAttack's budgets), in one process, on the same trained model and test images.

Two settings, as a user meets them:
- `adversarial`: lab_cnn trained with FGSM-RS (train.adversarial=fgsm_rs, adv_eps 8/255) on
  generated images, attacked at eps 8/255;
- `standard`: lab_cnn trained normally, attacked over params.yaml's attack.epsilons; the
  reference runs once per non-zero eps (it takes one eps), this project's cascade once over all
  (survivors only, an image fooled at a smaller eps inherited by the larger ones).
Prints, per setting and side, the time of each attack, the total time and the robust accuracy
after each attack and the ratio ours/reference; and the model work each attack did (images
forwarded with a gradient to follow, images forwarded only), weighted by what a gradient pass
costs in forward passes on this model (timed in the same process): the time ratio cannot go
far below the work ratio, whatever the loops cost. The model is prepared as the stages
prepare it (channels_last on the CPU). A benchmark, not a test:

    ./run python benchmarks/autoattack_reference.py --threads 1   # a CPU shared with others
    ./run python benchmarks/autoattack_reference.py --setting adversarial --test 500
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
from attack_loops import bare  # benchmarks/: timed image-passes of a model
from pyautoattack import autopgd_base, fab_base
from pyautoattack import square as reference_square
from torch import nn

from advlab.attacks import registry
from advlab.attacks.reference import reference_autoattack
from advlab.core.device import prepare_model
from advlab.data.images import to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.robustness import worst_case
from advlab.models import build_model, model_config
from advlab.params.attack import Attack
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit

ENSEMBLE = ("apgd_ce", "apgd_t", "fab_t", "square")


def trained(adversarial: bool, n_train: int, n_test: int, epochs: int):
    images = synthetic_images(n_train + n_test, seed=0)
    index = torch.arange(n_train + n_test)
    train_set, test_set = images.subset(index[:n_train]), images.subset(index[n_train:])
    cfg = Train(epochs=epochs, adversarial="fgsm_rs" if adversarial else "none")
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config(cfg.model, train_set)), torch.device("cpu"))
    fit(FitJob(model, train_set, test_set, cfg, 0, eval_batch_size=500))
    return model.eval(), test_set


# the reference's attack classes, by this project's names (APGD-T's perturb is its own)
REFERENCE = {"apgd_ce": autopgd_base.APGDAttack, "apgd_t": autopgd_base.APGDAttack_targeted,
             "fab_t": fab_base.FABAttack, "square": reference_square.SquareAttack}


class Passes:
    """The model's image-passes per attack: [forward only, forward with a gradient to follow]
    (the input requires grad), counted by a forward hook while a side runs (`ours`,
    `reference`); `current` names the attack, "other" what runs between attacks."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.current, self.counts = model, "other", defaultdict(lambda: [0, 0])

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        hook = self.model.register_forward_hook(self._count)
        try:
            yield
        finally:
            hook.remove()

    def _count(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        self.counts[self.current][int(x.requires_grad and torch.is_grad_enabled())] += len(x)

    def labelled(self, name: str, run: Callable) -> Callable:
        def counted(*args, **kwargs):
            self.current = name
            try:
                return run(*args, **kwargs)
            finally:
                self.current = "other"
        return counted

    def work(self, name: str, gradient_cost: float) -> float:
        """Image-passes of attack `name` in forward-pass units."""
        forward, gradient = self.counts[name]
        return forward + gradient_cost * gradient

    @contextlib.contextmanager
    def ours(self) -> Iterator[None]:
        saved = dict(registry.ATTACKS)
        for name in ENSEMBLE:
            registry.ATTACKS[name] = dataclasses.replace(
                saved[name], run=self.labelled(name, saved[name].run))
        try:
            with self.counting():
                yield
        finally:
            registry.ATTACKS.update(saved)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        saved = {name: cls.perturb for name, cls in REFERENCE.items()}
        for name, cls in REFERENCE.items():
            cls.perturb = self.labelled(name, saved[name])
        try:
            with self.counting():
                yield
        finally:
            for name, cls in REFERENCE.items():
                cls.perturb = saved[name]


def gradient_cost(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """What a forward-backward image-pass costs in forward image-passes, timed here."""
    rows = min(len(x), 64)
    bare(model, x, y, rows, True, rows)  # warm up
    return (bare(model, x, y, 20 * rows, True, rows)
            / bare(model, x, y, 20 * rows, False, rows))


def compare(name: str, model, test_set, epsilons: tuple[float, ...], batch_size: int) -> None:
    attack = Attack()
    ensemble = [(n, getattr(attack, n)) for n in ENSEMBLE]
    x, y = to_float(test_set.images), test_set.labels
    cost = gradient_cost(model, x, y)
    mine, theirs_passes = Passes(model), Passes(model)
    with mine.ours():
        began = time.perf_counter()
        ours = worst_case(model, test_set, epsilons, batch_size, ensemble, [], seed=0)
        ours_total = time.perf_counter() - began
    with theirs_passes.reference():
        theirs = {eps: reference_autoattack(model, x, y, eps, batch_size) for eps in epsilons
                  if eps > 0}
    theirs_total = sum(run.total_seconds for run in theirs.values())
    n = len(test_set)
    print(f"\n== {name}: {n} test images, eps {', '.join(f'{e:.4g}' for e in epsilons)}; "
          f"clean accuracy {ours.accuracy[epsilons.index(0.0)] if 0.0 in epsilons else '-'}")
    print(f"{'eps':>7} {'side':>9} " + " ".join(f"{a:>16}" for a in ENSEMBLE))
    for e, eps in enumerate(epsilons):
        if eps == 0:
            continue
        row = " ".join(f"{ours.after[a][e]:>16.2%}" for a in ENSEMBLE)
        ref = " ".join(f"{theirs[eps].robust[a] / n:>16.2%}" for a in ENSEMBLE)
        print(f"{eps:>7.4g} {'ours':>9} {row}\n{eps:>7.4g} {'reference':>9} {ref}")
    print("seconds per attack (all eps):")
    print(f"{'ours':>17} " + " ".join(f"{ours.seconds[a]:>16.1f}" for a in ENSEMBLE))
    print(f"{'reference':>17} " + " ".join(
        f"{sum(run.seconds[a] for run in theirs.values()):>16.1f}" for a in ENSEMBLE))
    print(f"image-passes per attack, forward only + with a gradient (one costs {cost:.2f} "
          "forward passes here):")
    for side, passes in (("ours", mine), ("reference", theirs_passes)):
        print(f"{side:>17} " + " ".join(
            f"{passes.counts[a][0]:>8}+{passes.counts[a][1]:<7}" for a in ENSEMBLE)
            + f"  (outside the attacks: {passes.counts['other'][0]}+{passes.counts['other'][1]})")
    work = [sum(p.work(a, cost) for a in (*ENSEMBLE, "other")) for p in (mine, theirs_passes)]
    print(f"model work, forward-pass units: ours {work[0]:.0f}, reference {work[1]:.0f}, "
          f"ratio {work[0] / work[1]:.2f}")
    print(f"total: ours {ours_total:.1f} s, reference {theirs_total:.1f} s, "
          f"ratio ours/reference {ours_total / theirs_total:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("adversarial", "standard", "both"), default="both")
    parser.add_argument("--train", type=int, default=4000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=1000, help="synthetic test images attacked")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500, help="both sides' batch size")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both sides (default: torch's); 1 on a shared CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} threads; both sides in this process")
    if args.setting in ("adversarial", "both"):
        model, test_set = trained(True, args.train, args.test, args.epochs)
        compare("adversarial (FGSM-RS, adv_eps 8/255)", model, test_set, (8 / 255,),
                args.batch_size)
    if args.setting in ("standard", "both"):
        model, test_set = trained(False, args.train, args.test, args.epochs)
        compare("standard", model, test_set, Attack().epsilons, args.batch_size)


if __name__ == "__main__":
    main()
