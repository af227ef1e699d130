"""attack stage: each of attack.methods (FGSM, the lab's Problem 5; PGD; APGD-CE, APGD-T,
Square) on the test split (or attack.max_images of it) at every attack.epsilons, then the
worst case over them and the attack.ensemble cascade."""

import argparse

from advlab.attacks.registry import check_classes, settings_of
from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.environment import environment
from advlab.core.io import write_json
from advlab.core.stage import path_arg, run_stage
from advlab.core.timing import throughput
from advlab.data.images import load_splits
from advlab.evaluation.attack_metrics import save_metrics
from advlab.evaluation.classification import evaluation_batch_size
from advlab.evaluation.robustness import AttackResult, attack_subset, sweep, worst_case
from advlab.models.external import load_evaluated
from advlab.params import load_params
from advlab.reporting.figures import attack_examples, save_png
from advlab.reporting.tensorboard_log import log_attack, open_writer


def report(result: AttackResult) -> None:
    for row in result.rows():
        print(f"attack: {result.method:<10} eps {row['epsilon']:<5g} accuracy "
              f"{row['accuracy']:.4f}  confidence {row['mean_confidence']:.4f}  "
              f"flipped {row['flipped']}")
    for name, values in result.after.items():
        print(f"attack: {result.method:<10} after {name:<8} "
              + " ".join(f"{acc:.4f}" for acc in values))
    for name, seconds in result.seconds.items():
        print(f"attack: {name} took {seconds:.1f} s")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    cfg = params.attack
    device = pick_device(params.base.device)
    test_set = load_splits(args.splits, ("test",))["test"].to(device)
    check_classes(cfg, len(test_set.classes))
    test_set = attack_subset(test_set, cfg.max_images, params.base.seed)
    precision = pick_precision(params.base.precision, device)
    batch_size = evaluation_batch_size(params.evaluate.batch_size, device)
    # as in the test stage, so that accuracy at eps 0 equals the test accuracy exactly
    model, model_file = load_evaluated(args.model, params.model, params.train, test_set, device)
    print(f"attack: {model_file.describe()}")
    model = prepare_model(model, device, precision)
    results = []
    per_run = len(test_set) * len(cfg.epsilons)  # images/s: one image per test image and eps
    for method in cfg.methods:
        results.append(sweep(model, test_set, cfg.epsilons, batch_size, method,
                             settings_of(method, cfg), params.base.seed))
        report(results[-1])
    if cfg.ensemble:
        results.append(worst_case(model, test_set, cfg.epsilons, batch_size,
                                  [(name, settings_of(name, cfg)) for name in cfg.ensemble],
                                  results, params.base.seed))
        report(results[-1])
    # each result times itself (the worst case per ensemble attack); one entry per row
    timing = {result.method: throughput(sum(result.seconds.values()), per_run)
              for result in results}
    print(f"attack: {results[0].zero_grad_fraction:.2%} of input-gradient entries are exactly 0")
    save_metrics(args.metrics, results)
    write_json(args.metrics / "attack_time.json", {**timing, "environment": environment(device)})

    save_png(attack_examples(results[0], test_set.classes), args.examples)
    with open_writer(args.tensorboard) as writer:
        for result in results:
            log_attack(writer, result, test_set.classes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with test.pt")
    path_arg(parser, "--model", "the model file to evaluate (model.file)")
    path_arg(parser, "--metrics", "the folder for attack.json, attack_time.json and attack.csv")
    path_arg(parser, "--examples",
             "the PNG of the first test image perturbed at each eps by the first method")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("attack", main, parser)
