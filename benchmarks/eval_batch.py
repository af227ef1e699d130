"""Evaluation batch size: test evaluation and the FGSM sweep at each candidate size and at
`evaluate.batch_size: auto`, timed round-robin in one process on the same model and images.

Prints images/s per size (median over rounds) and, per round, auto's speed over batch 1000's,
so a claim like "auto is never slower than 1000" is read from one run on one machine:

    python benchmarks/eval_batch.py                  # CPU: about a minute on 2 cores
    python benchmarks/eval_batch.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.timing import seconds
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.classification import classification_report, evaluation_batch_size
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import build_model, model_config
from advlab.params.attack import Attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sizes", default="64,128,256,512,1000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = synthetic_images(args.images, seed=0).to(device)
    torch.manual_seed(0)
    model = prepare_model(build_model(model_config("lab_cnn", data)), device,
                          pick_precision("auto", device)).eval()
    auto = evaluation_batch_size("auto", device)
    sizes = {f"{size}": int(size) for size in args.sizes.split(",")} | {f"auto ({auto})": auto}
    epsilons = Attack().epsilons
    stages = {"test evaluation": lambda b: classification_report(model, data, b),
              f"FGSM, {len(epsilons)} eps": lambda b: fgsm_sweep(model, data, epsilons, b)}
    for run in stages.values():  # warm-up: first-call costs (allocator, oneDNN primitives)
        for size in sizes.values():
            run(size)
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for stage, run in stages.items():
            images = len(data) * (len(epsilons) if stage.startswith("FGSM") else 1)
            for name, size in sizes.items():
                rate = images / seconds(lambda r=run, b=size: r(b), device)
                rates.setdefault((stage, name), []).append(rate)

    print(f"device {device}, {args.threads} threads, torch {torch.__version__}, "
          f"{len(data)} images, {args.rounds} rounds, load average at the end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("images/s, median over rounds (FGSM: one image at one eps counts as one)")
    for stage in stages:
        print(f"{stage:<18}" + "".join(f"{name:>11}" for name in sizes))
        print(" " * 18 + "".join(f"{statistics.median(rates[stage, n]):>11.0f}" for n in sizes))
        ratios = [a / b for a, b in zip(rates[stage, f"auto ({auto})"], rates[stage, "1000"],
                                        strict=True)]
        print(f"  auto / 1000 per round: {' '.join(f'{r:.2f}' for r in ratios)}"
              f"  (min {min(ratios):.2f})")


if __name__ == "__main__":
    main()
