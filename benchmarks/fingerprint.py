"""A fingerprint of what the pipeline computes, for a refactor that must not change it: sha256
of every per-step training loss and of every per-image attack verdict (robust or not, the
perturbed prediction) on generated data, for a standard and an adversarial (fgsm_rs) recipe.

    ./run python benchmarks/fingerprint.py     # the same lines before and after: bit-identical

CPU, one thread, seeded: the hashes depend on the machine's torch build, not on the run.
"""

from __future__ import annotations

import hashlib

import torch

from advlab.attacks.registry import settings_of
from advlab.data.synthetic import synthetic_images
from advlab.evaluation.robustness import sweep, worst_case
from advlab.models import build_model, model_config
from advlab.params import parse_params
from advlab.training.loop import FitJob, fit

CUT = {"steps": 3}
ATTACK = {"epsilons": [0.0, 0.03, 0.1], "methods": ["fgsm", "pgd"],
          "ensemble": ["apgd_ce", "apgd_t", "fab_t", "square"], "pgd": CUT, "apgd_ce": CUT,
          "apgd_t": {**CUT, "targets": 2}, "fab_t": {**CUT, "targets": 2},
          "square": {"queries": 20}}
RECIPES = {"standard": {"epochs": 2, "augment": True},
           "fgsm_rs": {"epochs": 1, "adversarial": "fgsm_rs", "robust_val_images": 40}}


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    torch.set_num_threads(1)
    images = synthetic_images(800, seed=3)
    index = torch.arange(800)
    train, val, test = (images.subset(index[:500]), images.subset(index[500:600]),
                        images.subset(index[600:]))
    for name, recipe in RECIPES.items():
        params = parse_params({"train": recipe, "attack": ATTACK})
        torch.manual_seed(0)
        model = build_model(model_config("lab_cnn", train))
        history = fit(FitJob(model, train, val, params.train, 0, eval_batch_size=128))
        losses = torch.cat([r.step_losses for r in history])
        print(f"{name}: {len(losses)} training steps, losses {digest(losses)}")
        model.eval()
        cfg = params.attack
        results = [sweep(model, test, cfg.epsilons, 64, m, settings_of(m, cfg), 0)
                   for m in cfg.methods]
        results.append(worst_case(model, test, cfg.epsilons, 64,
                                  [(m, settings_of(m, cfg)) for m in cfg.ensemble], results, 0))
        for result in results:
            print(f"{name}: {result.method:<10} robust {result.robust.sum(1).tolist()} "
                  f"verdicts {digest(result.robust, result.predictions)}")


if __name__ == "__main__":
    main()
