"""Attack cost: the PGD-10 sweep as the attack stage ran it before (every test image, every
step, last iterate) against the sweep now (images wrong on clean input are not attacked, an
image stops at its first fooling iterate), in one process, on the same trained model.

Same model, same test images, same eps (params.yaml's attack.epsilons), same PGD settings
(attack.pgd: 10 steps, step 2.5·eps/10, random start). Prints each side's time and accuracy per
eps and the ratio old/new. The new sweep must be as strong or stronger: an image it keeps
fooled at some iterate counts as fooled, where the old loop judged only the last iterate.
A benchmark, not a test:

    ./run python benchmarks/attack_cost.py                  # CPU, synthetic data: minutes
    ./run python benchmarks/attack_cost.py --threads 1      # a CPU shared with other jobs
    ./run python benchmarks/attack_cost.py --device cuda --train 20000 --test 10000
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from advlab.attacks.core import judge, uniform_start
from advlab.attacks.fgsm import fgsm_gradient_sign
from advlab.attacks.pgd import pgd
from advlab.core.device import pick_device, prepare_model
from advlab.data.images import ImageSet, to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.classification import predict_logits
from advlab.evaluation.robustness import sweep
from advlab.models import build_model, model_config
from advlab.params.attack import Attack, Pgd
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit


def old_pgd_sweep(model: nn.Module, test_set: ImageSet, epsilons: tuple[float, ...],
                  batch_size: int, settings: Pgd, seed: int) -> list[float]:
    """The attack stage's PGD loop before the attacks package: every image of every batch,
    all steps at every eps, judged on the last iterate. Returns the accuracy per eps."""
    model.eval()
    device = test_set.images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    clean_logits = predict_logits(model, test_set.images, batch_size)
    correct = torch.zeros(len(epsilons), dtype=torch.int64, device=device)
    zero_grads = torch.zeros((), dtype=torch.int64, device=device)
    for index in torch.arange(len(test_set), device=device).split(batch_size):
        x, y = to_float(test_set.images[index]), test_set.labels[index]
        clean_ok = clean_logits[index].argmax(1) == y
        zero_grads += (fgsm_gradient_sign(model, x, y) == 0).sum()  # as the old sweep did
        start = uniform_start(x, generator) if settings.random_start else None
        for e, eps in enumerate(epsilons):
            step_size = settings.step_scale * eps / settings.steps
            x_adv = pgd(model, x, y, eps, settings.steps, step_size, start)
            pred = clean_logits[index].argmax(1) if eps == 0 else judge(model, x_adv).argmax(1)
            correct[e] += (clean_ok & (pred == y)).sum()
    return (correct.double() / len(test_set)).tolist()


def timed(fn, device: torch.device):
    began = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train", type=int, default=2000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=1000, help="synthetic test images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000, help="attack batch size")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both sides (default: torch's). On a machine "
                        "shared with other jobs, 1 avoids the thread barriers that make the "
                        "small batches of the survivors wait out scheduler time slices")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    images = synthetic_images(args.train + args.test, seed=0)
    index = torch.arange(args.train + args.test)
    train_set, test_set = images.subset(index[:args.train]), images.subset(index[args.train:])
    cfg = Train(epochs=args.epochs)  # standard training, the default params otherwise
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config(cfg.model, train_set)), device)
    fit(FitJob(model, train_set.to(device), test_set.to(device), cfg, 0, args.batch_size))
    model.eval()
    test_set = test_set.to(device)
    attack = Attack()
    epsilons, settings = attack.epsilons, attack.pgd
    old, old_s = timed(lambda: old_pgd_sweep(model, test_set, epsilons, args.batch_size,
                                             settings, 0), device)
    new, new_s = timed(lambda: sweep(model, test_set, epsilons, args.batch_size, "pgd",
                                     settings, 0).accuracy, device)
    print(f"device {device}, {torch.get_num_threads()} threads; {len(test_set)} test images; "
          f"PGD-{settings.steps} at eps "
          f"{', '.join(f'{e:g}' for e in epsilons)}; clean accuracy {old[0]:.4f}")
    print(f"{'eps':>6} {'old accuracy':>13} {'new accuracy':>13}")
    for eps, a, b in zip(epsilons, old, new, strict=True):
        print(f"{eps:>6g} {a:>13.4f} {b:>13.4f}")
    print(f"old (every image, every step): {old_s:.1f} s; new (correct images, stop when "
          f"fooled): {new_s:.1f} s; ratio {old_s / new_s:.1f}x")
    stronger = all(b <= a + 1e-9 for a, b in zip(old, new, strict=True))
    print("new is as strong or stronger at every eps" if stronger
          else "new is weaker at some eps (random starts differ per image subset)")


if __name__ == "__main__":
    main()
