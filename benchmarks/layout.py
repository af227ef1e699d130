"""Training, evaluation and FGSM throughput of one model in two memory layouts.

NCHW is what load_model returns; channels_last is what prepare_model makes of it. Evaluation
and FGSM at two batch sizes, training at the params' batch size. Rounds alternate the cases so
that a change in machine load hits all of them alike.

    ./run python benchmarks/layout.py [--device cpu] [--threads 1] [--images 1000]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from tqdm import tqdm

from advlab.core.device import pick_device, prepare_model
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.classification import predict_logits
from advlab.evaluation.robustness import fgsm_sweep
from advlab.models import build_model, model_config
from advlab.params.attack import Attack
from advlab.params.train import Train
from advlab.training.loop import FitJob, train_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batches", default="1000,128")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = synthetic_images(args.images, seed=0).to(device)
    plain = build_model(model_config("lab_cnn", data)).to(device).eval()
    fast = prepare_model(copy.deepcopy(plain), device).eval()
    epsilons = Attack().epsilons

    def evaluate(model: torch.nn.Module, batch: int) -> object:
        return predict_logits(model, data.images, batch)

    def attack(model: torch.nn.Module, batch: int) -> object:
        return fgsm_sweep(model, data, epsilons, batch)

    cfg = Train()
    jobs = {id(model): FitJob(model, data, data, cfg, 0, cfg.batch_size) for model in (plain, fast)}

    def train(model: torch.nn.Module, batch: int) -> object:
        with tqdm(total=-(-args.images // batch), disable=True) as bar:
            return train_epoch(jobs[id(model)], 0, bar)

    cases = {(what, int(batch), layout): (fn, model, int(batch), per_image)
             for what, fn, per_image, batches in (
                 ("train", train, 1, [cfg.batch_size]),
                 ("eval", evaluate, 1, args.batches.split(",")),
                 ("FGSM", attack, len(epsilons), args.batches.split(",")))
             for batch in batches
             for layout, model in (("NCHW", plain), ("channels_last", fast))}
    for fn, model, batch, _ in cases.values():
        fn(model, batch)  # warm-up
    rates: dict[tuple, list[float]] = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, (fn, model, batch, per_image) in cases.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn(model, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates[key].append(args.images * per_image / (time.perf_counter() - start))
    print(f"{device}, {args.threads} threads, {args.images} images, load average at the end "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("images/s per round (FGSM: one image at one eps counts as one)")
    for (what, batch, layout), values in rates.items():
        print(f"{what:<5} batch {batch:>5} {layout:<14}" + "".join(f"{v:>8.0f}" for v in values))


if __name__ == "__main__":
    main()
