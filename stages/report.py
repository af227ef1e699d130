"""report stage: figures and one self-contained HTML report from metrics/ and the model."""

import argparse

from advlab.core.io import atomic_path, require_file, write_text
from advlab.core.stage import path_arg, run_stage
from advlab.data.images import load_splits
from advlab.models.external import load_evaluated, parameter_rows
from advlab.params import load_params
from advlab.reporting.figures import png_bytes
from advlab.reporting.report import make_figures, read_metrics, render_html
from advlab.reporting.tensorboard_log import log_figures, log_png, open_writer


def main(args: argparse.Namespace) -> None:
    params = load_params()
    metrics = read_metrics(args.metrics)
    require_file(args.examples)  # the attack stage writes it after attack.json
    test_set = load_splits(args.splits, ("test",))["test"]  # a state_dict's model is sized by it
    model, model_file = load_evaluated(args.model, params.model, params.train, test_set)
    rows = parameter_rows(model)
    figs = make_figures(metrics, params.model.trained_here)
    pngs = {name: png_bytes(fig) for name, fig in figs.items()}
    pngs["attack_examples"] = args.examples.read_bytes()
    for name, data in pngs.items():
        with atomic_path(args.out / "figures" / f"{name}.png") as tmp:
            tmp.write_bytes(data)
    write_text(args.out / "report.html", render_html(params, rows, metrics, pngs, model_file))
    with open_writer(args.tensorboard) as writer:
        log_figures(writer, figs)
        log_png(writer, "report/attack_examples", args.examples)
    print(f"report: {args.out / 'report.html'} and {len(pngs)} figures in {args.out / 'figures'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--metrics", "the folder with train/, test.json, confusion.csv, attack.*")
    path_arg(parser, "--model", "the model file evaluated (model.file), for its parameter table")
    path_arg(parser, "--splits", "the folder with test.pt (the images the model was checked on)")
    path_arg(parser, "--examples", "the attack stage's PNG of the perturbed first test image")
    path_arg(parser, "--out", "the report folder")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("report", main, parser)
