"""Attack loop overhead: APGD-T's and Square's wall time against the time of the model passes
they make, timed alone in the same process, on an adversarially trained model (FGSM-RS).

The attacks run through `sweep`, as the attack stage runs them, on a model that counts its
passes (images per forward, with or without a gradient). The baseline then runs that many
image-passes again, bare, in batches of the attack's batch size: model forwards (Square's
queries, APGD-T's judge) and forward-backward passes (APGD's gradients). The ratio
attack / bare is the loop's overhead factor (1.0: all the time is spent in the model), which
does not depend on how fast the machine is, only on the loop. A benchmark, not a test:

    ./run python benchmarks/attack_loops.py --threads 2
    ./run python benchmarks/attack_loops.py --threads 1 --train 1000 --epochs 1 --test 64 \
        --steps 20 --queries 200     # a loaded machine: seconds
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from advlab.attacks.core import loss_gradient
from advlab.core.device import prepare_model
from advlab.data.images import to_float
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.robustness import sweep
from advlab.models import build_model, model_config
from advlab.params.attack import ApgdT, Square
from advlab.params.train import Train
from advlab.training.loop import FitJob, fit


class Counting(nn.Module):
    """The model, counting image-passes with and without autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forward_images, self.gradient_images = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.gradient_images += len(x)
        else:
            self.forward_images += len(x)
        return self.model(x)


def bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, images: int, gradient: bool,
         batch_size: int) -> float:
    """Seconds for `images` image-passes of x in batches: forwards or forward-backwards."""
    began = time.perf_counter()
    done = 0
    while done < images:
        n = min(batch_size, images - done, len(x))
        if gradient:
            loss_gradient(model, x[:n], y[:n])
        else:
            with torch.no_grad():
                model(x[:n])
        done += n
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train", type=int, default=2000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--test", type=int, default=200, help="synthetic test images")
    parser.add_argument("--steps", type=int, default=50, help="APGD-T steps (3 targets)")
    parser.add_argument("--queries", type=int, default=500, help="Square queries")
    parser.add_argument("--batch-size", type=int, default=128, help="attack batch size (CPU auto)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = synthetic_images(args.train + args.test, seed=0)
    index = torch.arange(args.train + args.test)
    train_set, test_set = images.subset(index[:args.train]), images.subset(index[args.train:])
    cfg = Train(epochs=args.epochs, adversarial="fgsm_rs")
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config(cfg.model, train_set)), torch.device("cpu"))
    fit(FitJob(model, train_set, test_set, cfg, 0, eval_batch_size=500))
    model.eval()
    x, y = to_float(test_set.images[:args.batch_size]), test_set.labels[:args.batch_size]
    eps = 8 / 255
    print(f"{torch.get_num_threads()} threads; {args.test} test images; eps 8/255; batch "
          f"{args.batch_size}")
    for name, settings in (("apgd_t", ApgdT(steps=args.steps, targets=3)),
                           ("square", Square(queries=args.queries))):
        counting = Counting(model).eval()
        began = time.perf_counter()
        result = sweep(counting, test_set, (0.0, eps), args.batch_size, name, settings, seed=0)
        took = time.perf_counter() - began
        baseline = (bare(model, x, y, counting.gradient_images, True, args.batch_size)
                    + bare(model, x, y, counting.forward_images, False, args.batch_size))
        print(f"{name:>7} {settings}: accuracy {result.accuracy[0]:.3f} -> "
              f"{result.accuracy[1]:.3f};"
              f" {took:.1f} s; {counting.gradient_images} gradient and {counting.forward_images}"
              f" forward image-passes, bare {baseline:.1f} s; overhead x{took / baseline:.2f}")


if __name__ == "__main__":
    main()
