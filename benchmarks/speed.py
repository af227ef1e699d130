"""Speed: the lab's loops as written against the project's code, side by side in one process;
then each model's training throughput.

Same data (synthetic CIFAR-shaped uint8 images: speed does not depend on content), same model
(LabCNN, same initial weights), same machine, same number of images on both sides. Prints
images/s for each side, the ratio project/lab, FLOPs per image (counted with FlopCounterMode
on each side's own work) and the achieved GFLOP/s against this machine's measured fp32 matmul
peak. The `models` stage trains every model of the registry at its default size (lab_cnn,
PreActResNet-18, WRN-16-4, fast_cnn at airbench94's widths) for the same images and reports
images/s, FLOPs per image and % of that peak; with --compile also train.compile's
(torch.compile) images/s and its ratio to eager. A benchmark, not a test:

    ./run python benchmarks/speed.py                 # CPU here: a few minutes on 2 cores
    ./run python benchmarks/speed.py --stages models --compile   # each model, eager vs compiled
    ./run python benchmarks/speed.py --device cuda   # larger default sizes on a GPU
"""

from __future__ import annotations

import argparse
import copy
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms
from tqdm import tqdm

from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.timing import seconds
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.classification import AUTO_BATCH, classification_report
from advlab.models import ARCHITECTURES, build_model, model_config, new_model
from advlab.params.attack import Attack
from advlab.params.train import Train
from advlab.training.distributed import SINGLE, wrap
from advlab.training.loop import FitJob, train_epoch
from advlab.training.optim import make_optimizer

try:
    from advlab.evaluation.robustness import fgsm_sweep
except ImportError:  # the project's FGSM lands with issue 3
    fgsm_sweep = None


# ---- the lab as written (Problems 1, 2, 4, 5) -------------------------------------------------

class LabCIFAR(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL -> transform."""

    def __init__(self, images: ImageSet):
        self.data = images.images.permute(0, 2, 3, 1).numpy()
        self.targets = images.labels.tolist()
        self.transform = transforms.Compose([  # the lab's Problem 1 transform
            transforms.ToTensor(), transforms.Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def lab_split(dataset: Dataset, n: int) -> list:
    return [dataset[i] for i in range(n)]  # the lab's list-comprehension split


def lab_train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    device: torch.device, loop: tqdm) -> float:
    """Problem 4, step by step: loss.item() appended and shown at every step."""
    objective = nn.CrossEntropyLoss()
    model.train()
    loss_list = []
    for x, y_truth in loader:
        x, y_truth = x.to(device), y_truth.to(device)
        optimizer.zero_grad()
        y_hat = model(x)
        loss = objective(y_hat, y_truth)
        loss_list.append(loss.item())
        loop.set_description(f"loss:{loss.item():.4f}")
        loop.update()
        loss.backward()
        optimizer.step()
    return float(np.mean(loss_list))


@torch.no_grad()  # not in the lab's text; it only makes the baseline faster
def lab_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def fgsm_attack(model, optimizer, objective, x, y, eps):
    """The lab's function, verbatim."""
    x.requires_grad = True
    x.retain_grad()
    optimizer.zero_grad()
    output = model(x)
    loss = objective(output, y)
    loss.backward()
    data_grad = x.grad.data
    x_perturbed = x + eps * data_grad.sign()
    return x_perturbed


def lab_attack(model: nn.Module, loader: DataLoader, epsilons: tuple[float, ...],
               device: torch.device) -> list[float]:
    """Problem 5: every test image, one at a time, once per eps."""
    model.eval()
    optimizer = torch.optim.Adam(model.parameters())
    objective = nn.CrossEntropyLoss()
    accuracies = []
    for eps in epsilons:
        correct = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            x_perturbed = fgsm_attack(model, optimizer, objective, x, y, eps)
            with torch.no_grad():
                correct += (model(x_perturbed).argmax(1) == y).sum().item()
        accuracies.append(correct / len(loader.dataset))
    return accuracies


# ---- measuring ---------------------------------------------------------------------------------

MIN_SECONDS = 1.0
MODEL_ROUNDS = 3

@dataclass
class Side:
    images: int  # images one run processes (image x eps for the attack)
    runs: int
    seconds: float  # all runs together
    flops_per_image: float
    result: object  # what the first timed run returned

    @property
    def rate(self) -> float:
        return self.images * self.runs / self.seconds


class _NoModuleTracker:
    """Stands in for FlopCounterMode's per-module tracker, whose hooks break
    torch.autograd.grad on a leaf input (pytorch/pytorch#131753); only the total is needed."""

    parents = ("Global",)

    def __enter__(self) -> _NoModuleTracker:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything fn runs (forward and backward matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracker()
    with counter:
        fn()
    return counter.get_total_flops()


def measure(work: Callable[[int], object], images: int, probe: int, device: torch.device,
            per_image: int = 1, count_flops: bool = True) -> Side:
    """work(n) processes n images. FLOPs from work(probe); warm-up with it too; then timed,
    rerun until MIN_SECONDS have passed (a short run alone would be mostly noise)."""
    counted = flops(lambda: work(probe)) / (probe * per_image) if count_flops else 0.0
    work(probe)
    out: list = []
    runs, elapsed = 0, 0.0
    while elapsed < MIN_SECONDS:
        elapsed += seconds(lambda: out.append(work(images)), device)
        runs += 1
    return Side(images * per_image, runs, elapsed, counted, out[0])


def matmul_peak(device: torch.device, size: int, reps: int = 10) -> float:
    """Best fp32 matmul FLOP/s over reps (TF32 where pick_device allowed it on CUDA)."""
    a, b = torch.randn(2, size, size, device=device).unbind(0)
    a @ b
    best = min(seconds(lambda: a @ b, device) for _ in range(reps))
    return 2 * size**3 / best


def null_bar(total: int) -> tqdm:
    """A progress bar that costs what a visible one does, written to nowhere."""
    return tqdm(total=total, file=io.StringIO(), position=0)


# ---- the benchmark -----------------------------------------------------------------------------

LAB_STAGES = ("split", "train", "eval", "attack")
STAGES = (*LAB_STAGES, "models")
CPU_CACHE_BATCH = AUTO_BATCH["cpu"]  # on CPU a batch whose activations fit in cache
GPU_BATCH = AUTO_BATCH["cuda"]
Row = tuple[str, "Side", "Side | None"]
ModelRow = tuple[str, int, "Side", "Side | None"]  # model, parameters, eager, compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads for both sides (default: the usable cores)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="images in the timed training epoch (default: 4000 CPU, 40000 GPU)")
    parser.add_argument("--slow-images", type=int, default=None,
                        help="test images for evaluation and attack, where the lab goes one "
                             "image at a time (default: 1000 CPU, 2000 GPU)")
    parser.add_argument("--eval-batch", default=None,
                        help="the project's evaluation and attack batch sizes, comma-separated,"
                             f" one row each (default: {GPU_BATCH}, and {CPU_CACHE_BATCH} on CPU"
                             " where evaluate.batch_size: auto picks it)")
    parser.add_argument("--model-images", type=int, default=None,
                        help="images per timed epoch of each model (default: 256 CPU, 8192 GPU)")
    parser.add_argument("--model-batch", type=int, default=128,
                        help="the models' training batch (the recipes' 128; lab row: 32)")
    parser.add_argument("--compile", action="store_true",
                        help="models: also time train.compile (torch.compile); compiling "
                             "takes minutes per model on a CPU")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stages = args.stages.split(",")
    if set(stages) - set(STAGES):
        parser.error(f"--stages: unknown {sorted(set(stages) - set(STAGES))}; known: {STAGES}")

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    eval_batches = ([int(b) for b in args.eval_batch.split(",")] if args.eval_batch else
                    [GPU_BATCH] + ([] if gpu else [CPU_CACHE_BATCH]))
    bench = Bench(device, n_train=args.train_images or (40_000 if gpu else 4_000),
                  n_test=args.slow_images or (2_000 if gpu else 1_000),
                  eval_batches=eval_batches, seed=args.seed)
    load_at_start = os.getloadavg()[0]
    size = 8192 if gpu else 2048
    peak = matmul_peak(device, size)
    rows = [row for stage in stages if stage in LAB_STAGES for row in getattr(bench, stage)()]
    model_rows = (bench.models(args.model_images or (8192 if gpu else 256), args.model_batch,
                               args.compile) if "models" in stages else [])
    peak = max(peak, matmul_peak(device, size))  # before and after: the best is the machine's
    print_report(rows, device, args.threads, bench.forward_flops, peak)
    if model_rows:
        print_model_report(model_rows, args.model_batch, peak)
    load, cores = max(load_at_start, os.getloadavg()[0]), len(os.sched_getaffinity(0))
    if device.type == "cpu" and args.threads > 1 and load > cores + 0.5:  # ours count in it
        bench.notes.append(
            f"warning: 1-minute load average reached {load:.1f} on {cores} cores: other "
            "processes held CPUs, so threads waited for one another; batch-1 and "
            "batch-32 loops lose most, which overstates the ratios. Rerun on an idle machine, "
            "or with --threads 1.")
    for note in bench.notes:
        print(note)


class Bench:
    """The data and models both sides share; one method per stage returns its rows."""

    def __init__(self, device: torch.device, n_train: int, n_test: int,
                 eval_batches: list[int], seed: int):
        self.device, self.n_train, self.n_test, self.eval_batches, self.seed = (
            device, n_train, n_test, eval_batches, seed)
        self.train_cfg, self.epsilons = Train(), Attack().epsilons
        data = synthetic_images(n_train + n_test, seed=seed)
        self.train_cpu = data.subset(torch.arange(n_train))
        self.test_cpu = data.subset(torch.arange(n_train, n_train + n_test))
        torch.manual_seed(seed)
        initial = build_model(model_config("lab_cnn", self.train_cpu))
        self.forward_flops = flops(lambda: initial(torch.rand(1, *self.train_cpu.shape)))
        # the lab's model: .to(device); the project's: prepare_model. Same initial weights.
        self.lab_model = copy.deepcopy(initial).to(device)
        self.project_model = prepare_model(copy.deepcopy(initial), device,
                                           pick_precision("auto", device))
        self.lab_train_set, self.lab_test_set = LabCIFAR(self.train_cpu), LabCIFAR(self.test_cpu)
        self.train_set, self.test_set = self.train_cpu.to(device), self.test_cpu.to(device)
        self.lab_list: list | None = None
        self.notes: list[str] = []

    def _first(self, data: ImageSet, n: int) -> ImageSet:
        return data.subset(torch.arange(n, device=data.images.device))

    def _lab_loader(self, dataset: Dataset, n: int, **kwargs) -> DataLoader:
        return DataLoader(torch.utils.data.Subset(dataset, range(n)), **kwargs)

    def split(self) -> list[Row]:
        lab = measure(lambda n: lab_split(self.lab_train_set, n), self.n_train, 64, self.device)
        project = measure(lambda n: self._first(self.train_cpu, n).to(self.device),
                          self.n_train, 64, self.device)
        self.lab_list = lab.result
        return [("split (list vs tensors)", lab, project)]

    def train(self) -> list[Row]:
        cfg, device = self.train_cfg, self.device
        lab_list = self.lab_list or lab_split(self.lab_train_set, self.n_train)
        lab_optimizer = make_optimizer(self.lab_model, cfg)
        job = FitJob(self.project_model, self.train_set, self.train_set, cfg, self.seed, 64)

        def lab_run(n: int) -> float:
            loader = DataLoader(lab_list[:n], batch_size=cfg.batch_size, shuffle=True)
            with null_bar(len(loader)) as loop:
                return lab_train_epoch(self.lab_model, lab_optimizer, loader, device, loop)

        def project_run(n: int) -> torch.Tensor:
            with null_bar(-(-n // cfg.batch_size)) as bar:
                job.train_set = self._first(self.train_set, n)
                return train_epoch(job, self.seed, bar)

        lab = measure(lab_run, self.n_train, 64, device)
        project = measure(project_run, self.n_train, 64, device)
        # evaluation and attack then see trained weights, the same on both sides
        self.lab_model.load_state_dict(self.project_model.state_dict())
        return [(f"train epoch (batch {cfg.batch_size})", lab, project)]

    def eval(self) -> list[Row]:
        self.lab_model.eval()
        self.project_model.eval()
        lab = measure(lambda n: lab_accuracy(self.lab_model, self._lab_loader(
            self.lab_test_set, n, batch_size=1), self.device), self.n_test, 16, self.device)
        rows = []
        for batch in self.eval_batches:
            project = measure(lambda n, b=batch: classification_report(
                self.project_model, self._first(self.test_set, n), b),
                self.n_test, 16, self.device)
            rows.append((f"test evaluation (1 vs {batch})", lab, project))
        self.notes.append(f"check: clean accuracy on the {self.n_test} test images: lab "
                          f"{lab.result:.4f}, project {project.result['accuracy']:.4f}")
        return rows

    def attack(self) -> list[Row]:
        eps = len(self.epsilons)
        lab = measure(lambda n: lab_attack(self.lab_model, self._lab_loader(
            self.lab_test_set, n, batch_size=1), self.epsilons, self.device),
            self.n_test, 4, self.device, per_image=eps)
        if fgsm_sweep is None:
            self.notes.append("FGSM: project side skipped: advlab.attacks (issue 3) is not "
                              "here yet")
            return [(f"FGSM, {eps} eps (1 vs -)", lab, None)]
        return [(f"FGSM, {eps} eps (1 vs {batch})", lab, measure(
            lambda n, b=batch: fgsm_sweep(self.project_model, self._first(self.test_set, n),
                                          self.epsilons, b),
            self.n_test, 16, self.device, per_image=eps)) for batch in self.eval_batches]

    def models(self, n: int, batch: int, compiled: bool) -> list[ModelRow]:
        """Each model's training epoch over the first n training images (a whole number of
        batches, so compiled code sees one batch shape), eager and, if asked, compiled.
        After a warm-up (compiling), eager and compiled epochs alternate MODEL_ROUNDS times
        and each keeps its fastest: other processes' load slows some epochs, never speeds one."""
        n = max(batch, n // batch * batch)
        data = self._first(self.train_set, n)
        precision = pick_precision("auto", self.device)
        rows = []
        for arch in ARCHITECTURES:
            cfg = Train(model=arch, batch_size=batch)
            torch.manual_seed(self.seed)
            model = prepare_model(new_model(cfg, self.train_cpu), self.device, precision)
            runs = [self._model_epoch(model, data, cfg, compile_)
                    for compile_ in ((False, True) if compiled else (False,))]
            counted = flops(partial(runs[0], batch)) / batch
            for run in runs:
                run(n)  # warm-up: compiles on the compiled side
            best = [float("inf")] * len(runs)
            for _ in range(MODEL_ROUNDS):
                for i, run in enumerate(runs):
                    best[i] = min(best[i], seconds(partial(run, n), self.device))
            sides = [Side(n, 1, t, counted, None) for t in best]
            params = sum(p.numel() for p in model.parameters())
            rows.append((arch, params, sides[0], sides[1] if compiled else None))
        return rows

    def _model_epoch(self, model: nn.Module, data: ImageSet, cfg: Train,
                     compile_: bool) -> Callable[[int], torch.Tensor]:
        """k -> one training epoch over data's first k images, of a copy of the model."""
        trained = wrap(copy.deepcopy(model), SINGLE, self.device, compile_)
        job = FitJob(trained, data, data, cfg, self.seed, 64)

        def run(k: int) -> torch.Tensor:
            with null_bar(-(-k // cfg.batch_size)) as bar:
                job.train_set = self._first(data, k)
                return train_epoch(job, self.seed, bar)

        return run


def print_report(rows: list[Row], device: torch.device, threads: int,
                 forward_flops: int, peak: float) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\ndevice {device} ({name}), {threads} threads, torch {torch.__version__}, "
          f"load average at the end {load}")
    print(f"LabCNN forward: {forward_flops / 1e6:.1f} MFLOP per image; "
          f"fp32 matmul peak measured: {peak / 1e9:.0f} GFLOP/s")
    if not rows:
        return
    print("attack: one image at one eps counts as one image; FLOP/img counted on each side's "
          "own work\n")
    header = (f"{'stage':<28} {'images':>7} {'lab img/s':>10} {'proj img/s':>10} {'proj/lab':>8}"
              f" {'MFLOP/img lab|proj':>19} {'GFLOP/s lab|proj':>17} {'% of peak':>10}")
    print(header)
    print("-" * len(header))
    for stage, lab, project in rows:
        line = f"{stage:<28} {lab.images:>7} {lab.rate:>10.0f}"
        if project is None:
            print(f"{line} {'skipped':>10}")
            continue
        ratio = project.rate / lab.rate
        line += f" {project.rate:>10.0f} {ratio:>7.{2 if ratio < 10 else 1}f}x"
        if lab.flops_per_image and project.flops_per_image:
            gflops = [side.rate * side.flops_per_image / 1e9 for side in (lab, project)]
            mflop = f"{lab.flops_per_image / 1e6:.1f}|{project.flops_per_image / 1e6:.1f}"
            pct = "|".join(f"{100 * g * 1e9 / peak:.0f}" for g in gflops)
            line += f" {mflop:>19} {gflops[0]:>8.1f}|{gflops[1]:<8.1f} {pct:>10}"
        print(line)


def print_model_report(rows: list[ModelRow], batch: int, peak: float) -> None:
    print(f"\ntraining throughput per model (batch {batch}, Adam, default model params; "
          "FLOP/img: forward + backward)\n")
    header = (f"{'model':<16} {'params':>11} {'images':>7} {'img/s':>8} {'MFLOP/img':>10}"
              f" {'GFLOP/s':>8} {'% of peak':>9} {'compiled img/s':>15} {'compiled/eager':>15}")
    print(header)
    print("-" * len(header))
    for arch, params, eager, compiled in rows:
        gflops = eager.rate * eager.flops_per_image / 1e9
        line = (f"{arch:<16} {params:>11,} {eager.images:>7} {eager.rate:>8.1f}"
                f" {eager.flops_per_image / 1e6:>10.0f} {gflops:>8.1f}"
                f" {100 * gflops * 1e9 / peak:>9.1f}")
        if compiled is not None:
            line += f" {compiled.rate:>15.1f} {compiled.rate / eager.rate:>14.2f}x"
        print(line)


if __name__ == "__main__":
    main()
