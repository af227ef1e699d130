"""attack stage: each of attack.methods (FGSM, the lab's Problem 5; PGD) on the test split at
every attack.epsilons."""

import argparse

from advlab.attacks import save_metrics, sweep
from advlab.data import load_splits
from advlab.device import pick_device, pick_precision, prepare_model
from advlab.evaluate import evaluation_batch_size
from advlab.figures import fgsm_examples, save_png
from advlab.io import write_json
from advlab.models import load_model
from advlab.params import load_params
from advlab.stage import path_arg, run_stage
from advlab.tensorboard_log import log_attack, open_writer
from advlab.timing import Stopwatch, throughput


def main(args: argparse.Namespace) -> None:
    params = load_params()
    device = pick_device(params.base.device)
    test_set = load_splits(args.splits, ("test",))["test"].to(device)
    precision = pick_precision(params.base.precision, device)
    batch_size = evaluation_batch_size(params.evaluate.batch_size, device)
    # as in the test stage, so that accuracy at eps 0 equals the test accuracy exactly
    model = prepare_model(load_model(args.model, device), device, precision)
    results, timing = [], {}
    for method in params.attack.methods:
        with Stopwatch(device) as watch:
            result = sweep(model, test_set, params.attack.epsilons, batch_size,
                           method, params.attack.pgd, params.base.seed)
        # images/s counts one perturbed image per test image and eps
        timing[method] = throughput(watch.seconds, len(test_set) * len(params.attack.epsilons))
        for row in result.rows():
            print(f"attack: {method:<4} eps {row['epsilon']:<5g} accuracy {row['accuracy']:.4f}"
                  f"  confidence {row['mean_confidence']:.4f}  flipped {row['flipped']}")
        results.append(result)
    print(f"attack: {results[0].zero_grad_fraction:.2%} of input-gradient entries are exactly 0")
    save_metrics(args.metrics, results)
    write_json(args.metrics / "attack_time.json", timing)

    save_png(fgsm_examples(results[0], test_set.classes), args.examples)
    with open_writer(args.tensorboard) as writer:
        for result in results:
            log_attack(writer, result, test_set.classes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with test.pt")
    path_arg(parser, "--model", "the trained model")
    path_arg(parser, "--metrics", "the folder for attack.json, attack_time.json and attack.csv")
    path_arg(parser, "--examples",
             "the PNG of the first test image perturbed at each eps by the first method")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("attack", main, parser)
