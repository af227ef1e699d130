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
after each attack and the ratio ours/reference. A benchmark, not a test:

    ./run python benchmarks/autoattack_reference.py --threads 1   # a CPU shared with others
    ./run python benchmarks/autoattack_reference.py --setting adversarial --test 500
"""

from __future__ import annotations

import argparse
import time

import torch

from advlab.attacks.robustness import worst_case
from advlab.data import to_float
from advlab.datasets import synthetic_images
from advlab.models import build_model, model_config
from advlab.params import Attack, Train
from advlab.reference import reference_autoattack
from advlab.train import FitJob, fit

ENSEMBLE = ("apgd_ce", "apgd_t", "fab_t", "square")


def trained(adversarial: bool, n_train: int, n_test: int, epochs: int):
    images = synthetic_images(n_train + n_test, seed=0)
    index = torch.arange(n_train + n_test)
    train_set, test_set = images.subset(index[:n_train]), images.subset(index[n_train:])
    cfg = Train(epochs=epochs, adversarial="fgsm_rs" if adversarial else "none")
    torch.manual_seed(0)
    model = build_model(model_config(cfg.model, train_set))
    fit(FitJob(model, train_set, test_set, cfg, 0, eval_batch_size=500))
    return model.eval(), test_set


def compare(name: str, model, test_set, epsilons: tuple[float, ...], batch_size: int) -> None:
    attack = Attack()
    ensemble = [(n, getattr(attack, n)) for n in ENSEMBLE]
    began = time.perf_counter()
    ours = worst_case(model, test_set, epsilons, batch_size, ensemble, [], seed=0)
    ours_total = time.perf_counter() - began
    x, y = to_float(test_set.images), test_set.labels
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
        mine = " ".join(f"{ours.after[a][e]:>16.2%}" for a in ENSEMBLE)
        ref = " ".join(f"{theirs[eps].robust[a] / n:>16.2%}" for a in ENSEMBLE)
        print(f"{eps:>7.4g} {'ours':>9} {mine}\n{eps:>7.4g} {'reference':>9} {ref}")
    print("seconds per attack (all eps):")
    print(f"{'ours':>17} " + " ".join(f"{ours.seconds[a]:>16.1f}" for a in ENSEMBLE))
    print(f"{'reference':>17} " + " ".join(
        f"{sum(run.seconds[a] for run in theirs.values()):>16.1f}" for a in ENSEMBLE))
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
