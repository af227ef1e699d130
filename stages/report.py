"""report stage: figures and one self-contained HTML report from metrics/ and the model."""

import argparse

from advlab.core.io import atomic_path, write_text
from advlab.core.stage import path_arg, run_stage
from advlab.models import load_model, parameter_table
from advlab.params import load_params
from advlab.reporting.figures import png_bytes
from advlab.reporting.report import make_figures, read_metrics, render_html
from advlab.reporting.tensorboard_log import log_figures, log_png, open_writer


def main(args: argparse.Namespace) -> None:
    params = load_params()
    metrics = read_metrics(args.metrics)
    rows = parameter_table(load_model(args.model))
    figs = make_figures(metrics)
    pngs = {name: png_bytes(fig) for name, fig in figs.items()}
    pngs["attack_examples"] = args.examples.read_bytes()
    for name, data in pngs.items():
        with atomic_path(args.out / "figures" / f"{name}.png") as tmp:
            tmp.write_bytes(data)
    write_text(args.out / "report.html", render_html(params, rows, metrics, pngs))
    with open_writer(args.tensorboard) as writer:
        log_figures(writer, figs)
        log_png(writer, "report/attack_examples", args.examples)
    print(f"report: {args.out / 'report.html'} and {len(pngs)} figures in {args.out / 'figures'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    path_arg(parser, "--metrics", "the folder with train/, test.json, confusion.csv, attack.*")
    path_arg(parser, "--model", "the trained model (for the parameter table)")
    path_arg(parser, "--examples", "the attack stage's PNG of the perturbed first test image")
    path_arg(parser, "--out", "the report folder")
    path_arg(parser, "--tensorboard", "the TensorBoard run folder of this stage")
    run_stage("report", main, parser)
