"""test stage: accuracy on the test split, computed once, with per-class accuracy and confusion."""

import argparse

from advlab.core.device import pick_device, pick_precision, prepare_model
from advlab.core.environment import environment
from advlab.core.io import write_csv, write_json
from advlab.core.stage import path_arg, run_stage
from advlab.core.timing import Stopwatch, throughput
from advlab.data.images import load_splits
from advlab.evaluation.classification import classification_report, evaluation_batch_size
from advlab.models.external import load_evaluated
from advlab.params import load_params
from advlab.reporting.tensorboard_log import log_test, open_writer


def main(args: argparse.Namespace) -> None:
    params = load_params()
    device = pick_device(params.base.device)
    test_set = load_splits(args.splits, ("test",))["test"].to(device)
    precision = pick_precision(params.base.precision, device)
    batch_size = evaluation_batch_size(params.evaluate.batch_size, device)
    model, model_file = load_evaluated(args.model, params.model, params.train, test_set, device)
    print(f"test: {model_file.describe()}")
    model = prepare_model(model, device, precision)
    with Stopwatch(device) as watch:
        report = classification_report(model, test_set, batch_size)
    print(f"test: accuracy {report['accuracy']:.4f} on {report['images']} images")

    names = test_set.classes
    write_json(args.metrics / "test.json", {k: report[k] for k in ("accuracy", "per_class")})
    write_csv(args.metrics / "confusion.csv", ["actual", "predicted"],
              [(names[a], names[p]) for a, p in zip(test_set.labels.tolist(),
                                                    report["predictions"].tolist(), strict=True)])
    write_json(args.metrics / "test_time.json", {**throughput(watch.seconds, len(test_set)),
                                                 "environment": environment(device)})
    with open_writer(args.tensorboard) as writer:
        log_test(writer, report["accuracy"], report["per_class"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--splits", "the folder with test.pt")
    path_arg(parser, "--model", "the model file to evaluate (model.file)")
    path_arg(parser, "--metrics", "the folder for test.json, test_time.json and confusion.csv")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("test", main, parser)
