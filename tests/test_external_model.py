"""A model trained elsewhere (model.file): TorchScript, a state_dict or a checkpoint gives the
per-image verdicts of the same weights saved by the pipeline, model.normalize stands for a
normalization the model lacks, bad files are one-line errors, the one command prints
AutoAttack's lines, and through DVC a replaced file reruns exactly test, attack and report."""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_repo, run_stage_script
from dvc.utils.hydra import apply_overrides
from test_pipeline_dvc import dvc, stale
from torch import nn

from advlab.core.device import prepare_model
from advlab.core.errors import InputError
from advlab.evaluation import evaluate_model
from advlab.evaluation.classification import classification_report
from advlab.evaluation.robustness import sweep, worst_case
from advlab.experiments.profile import deep_merge
from advlab.models import ModelConfig, build_model, load_model, save_model
from advlab.models.external import ForeignModel, file_digests, load_evaluated
from advlab.params import load_params, parse_params
from advlab.params.attack import Apgd, ApgdT, Square
from advlab.params.fields import ParamsError
from advlab.params.model import Model, Normalization
from advlab.params.train import Train

EPSILONS = (0.0, 8 / 255, 0.1)
ENSEMBLE = [("apgd_ce", Apgd(steps=3)), ("apgd_t", ApgdT(steps=3, targets=2)),
            ("square", Square(queries=20))]
BATCH = 64


def torchscript(model: nn.Module, path: Path, size: int = 32, channels: int = 3) -> Path:
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model.eval(), torch.rand(1, channels, size, size)), path)
    return path


def verdicts(path: Path, test_set,
             normalize: Normalization | None = None) -> dict[str, torch.Tensor]:
    """What the attack stage records per image: FGSM and the worst case over a cut ensemble."""
    model, _ = load_evaluated(path, Model(file=str(path), normalize=normalize), Train(),
                              test_set)
    model = prepare_model(model, torch.device("cpu"))
    fgsm = sweep(model, test_set, EPSILONS, BATCH, "fgsm")
    worst = worst_case(model, test_set, EPSILONS, BATCH, ENSEMBLE, [fgsm], seed=0)
    return {"fgsm": fgsm.robust, "worst": worst.robust, "predictions": worst.predictions}


@pytest.fixture(scope="module")
def test_set(tiny_sets):
    return tiny_sets["test"].subset(torch.arange(48))


@pytest.fixture(scope="module")
def pipeline(trained_model, test_set, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The verdicts on the trained model as the train stage saves it."""
    path = tmp_path_factory.mktemp("pipeline") / "model.pt"
    save_model(path, trained_model)
    found = verdicts(path, test_set)
    assert 0 < found["worst"][1].sum() < found["fgsm"][0].sum()  # the attacks fool some, not all
    return found


def prefixed(state: dict, prefix: str = "module.") -> dict:
    return {prefix + key: value for key, value in state.items()}


FORMS = {
    "torchscript": lambda model, path: torchscript(model, path),
    "state_dict": lambda model, path: torch.save(model.state_dict(), path),
    "checkpoint_of_ddp": lambda model, path: torch.save(
        {"epoch": 2, "model_state_dict": prefixed(model.state_dict())}, path),
    "checkpoint_with_its_config": lambda model, path: torch.save(
        {"config": {"lr": 0.1, "epochs": 2}, "state_dict": model.state_dict()}, path),
}


@pytest.mark.parametrize("form", FORMS)
def test_each_form_gives_the_pipeline_models_verdicts(trained_model, test_set, pipeline,
                                                      tmp_path, form):
    path = tmp_path / "elsewhere.pt"
    FORMS[form](trained_model, path)
    found = verdicts(path, test_set)
    for key, expected in pipeline.items():
        assert torch.equal(found[key], expected), key


def without_normalization(model: nn.Module, path: Path, form: str) -> Path:
    """The network after its normalization layer: a model trained on normalized inputs."""
    if form == "torchscript":
        return torchscript(nn.Sequential(*model.layers[1:]), path)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layers.0.")}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("form", ["torchscript", "state_dict"])
def test_normalize_stands_for_the_normalization_the_model_was_trained_with(
        trained_model, test_set, pipeline, tmp_path, form):
    path = without_normalization(trained_model, tmp_path / "normalized.pt", form)
    config = trained_model.config
    found = verdicts(path, test_set, Normalization(mean=config.mean, std=config.std))
    for key, expected in pipeline.items():
        assert torch.equal(found[key], expected), key
    unnormalized = verdicts(path, test_set)  # the same file without it: other predictions
    assert not torch.equal(unnormalized["predictions"], pipeline["predictions"])


def test_a_foreign_model_runs_under_the_pipeline_contract(trained_model, test_set, tmp_path):
    model, described = load_evaluated(torchscript(trained_model, tmp_path / "ts.pt"), Model(),
                                      Train(), test_set)
    assert isinstance(model, ForeignModel) and not model.training
    assert (described.form, described.arch) == ("TorchScript", None)
    assert (described.md5, described.sha256) == file_digests(tmp_path / "ts.pt")
    x = torch.rand(2, 3, 32, 32)
    assert model(x).dtype == torch.float32 and torch.equal(model(x), trained_model(x))


def lab_cnn(classes: int = 10, channels: int = 3, size: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig("lab_cnn", channels, size, classes, (0.5,) * channels,
                                   (0.25,) * channels)).eval()


class TupleOut(nn.Module):
    """Logits and features, as some models return them."""

    def __init__(self):
        super().__init__()
        self.net = lab_cnn()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x


def torchscript_in_training_mode(path: Path) -> Path:
    with warnings.catch_warnings():  # deprecation, and the trace's check that dropout differs
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(lab_cnn().train(), torch.rand(2, 3, 32, 32),
                                       check_trace=False), path)
    return path


def write(path: Path, blob: object) -> Path:
    torch.save(blob, path)
    return path


NORMALIZE = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
# name -> (writes the file into a folder, model.normalize, train, the error's text)
BAD = {
    "missing": (lambda d: d / "nowhere.pt", None, Train(),
                "nowhere.pt does not exist: model.file names the model to evaluate"),
    "text": (lambda d: (d / "notes.pt").write_text("weights") and d / "notes.pt", None, Train(),
             "notes.pt is not a readable torch file (Unsupported operand 119: neither a zip "
             "archive nor a pickle); a model file is TorchScript (torch.jit.save) or a "
             "state_dict (torch.save(model.state_dict()))"),
    "tensor": (lambda d: write(d / "t.pt", torch.zeros(3)), None, Train(),
               "t.pt holds a Tensor, not a model; a model file is TorchScript"),
    "dict_of_numbers": (lambda d: write(d / "d.pt", {"epoch": 3, "lr": 0.1}), None, Train(),
                        "d.pt holds a dict of 2 entries (epoch, lr), not a model; a model file "
                        "is TorchScript (torch.jit.save) or a state_dict (torch.save(model."
                        "state_dict())), or a checkpoint dict holding one under state_dict or "
                        "model or model_state_dict"),
    "pickled_module": (lambda d: write(d / "m.pt", lab_cnn()), None, Train(),
                       "m.pt is not a readable torch file: it holds a pickled Python object "
                       "(advlab.models.lab_cnn.LabCNN), refused because loading it could run "
                       "code; a model file is TorchScript"),
    "other_architecture": (lambda d: write(d / "s.pt", build_model(ModelConfig(
        "fast_cnn", 3, 32, 10, (0,) * 3, (1,) * 3, {"widths": [8], "whiten": False}))
        .state_dict()), None, Train(),
        "s.pt does not fit train.model lab_cnn for 3x32x32 images and 10 classes: no "
        "layers.1.weight (expected shape (32, 3, 3, 3))"),
    "other_options": (lambda d: write(d / "w.pt", build_model(ModelConfig(
        "wide_resnet", 3, 32, 10, (0,) * 3, (1,) * 3, {"depth": 10, "width": 2})).state_dict()),
        None, Train(model="wide_resnet", depth=10, width=1),
        "w.pt does not fit train.model wide_resnet, depth 10, width 1 for 3x32x32 images and 10 "
        "classes: blocks.0.conv1.weight has shape (32, 16, 3, 3), expected (16, 16, 3, 3)"),
    "state_dict_of_5_classes": (lambda d: write(d / "c.pt", lab_cnn(5).state_dict()), None,
                                Train(), "c.pt does not fit train.model lab_cnn for 3x32x32 "
                                "images and 10 classes: layers.17.weight has shape (5, 256), "
                                "expected (10, 256)"),
    "unexpected_key": (lambda d: write(d / "u.pt", {**lab_cnn().state_dict(),
                                                    "head.weight": torch.zeros(2)}),
                       None, Train(), "u.pt does not fit train.model lab_cnn for 3x32x32 images "
                       "and 10 classes: unexpected key head.weight (1 unexpected)"),
    "5_classes": (lambda d: torchscript(lab_cnn(5), d / "five.pt"), None, Train(),
                  "five.pt gives outputs of shape (1, 5) for one image; the test set has 10 "
                  "classes: expected (1, 10)"),
    "tuple_output": (lambda d: torchscript(TupleOut(), d / "tuple.pt"), None, Train(),
                     "tuple.pt returns a tuple, not a tensor of logits"),
    "traced_in_training_mode": (lambda d: torchscript_in_training_mode(d / "train.pt"), None,
                                Train(), "train.pt was saved in training mode, which a trace "
                                "keeps (BatchNorm on batch statistics, dropout): save it after "
                                "model.eval()"),
    "image_shape": (lambda d: torchscript(lab_cnn(channels=1, size=28), d / "gray.pt", 28, 1),
                    None, Train(), "gray.pt cannot take the test images (3x32x32): Given "
                    "groups=1, weight of size [32, 1, 3, 3], expected input[1, 3, 32, 32] to "
                    "have 1 channels, but got 3 channels instead"),
    "normalize_an_advlab_file": (lambda d: save_model(d / "a.pt", lab_cnn()) or d / "a.pt",
                                 NORMALIZE, Train(), "a.pt is an advlab model file, which "
                                 "normalizes its input itself: set model.normalize: null"),
    "normalize_a_state_dict_that_has_one": (
        lambda d: write(d / "n.pt", lab_cnn().state_dict()), NORMALIZE, Train(),
        "n.pt holds its own normalization (layers.0.mean, layers.0.std): set model.normalize: "
        "null"),
    "normalize_of_other_channels": (
        lambda d: torchscript(lab_cnn(), d / "ts.pt"), Normalization(mean=(0.5,), std=(0.2,)),
        Train(), "params: model.normalize has 1 number(s) per list; the test images have 3 "
        "channel(s): one per channel"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_model_file_is_one_line_naming_it(test_set, tmp_path, case):
    make, normalize, train, message = BAD[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        load_evaluated(path, Model(file=str(path), normalize=normalize), train, test_set)
    text = str(err.value)
    assert "\n" not in text and message in text, text


def test_the_stage_exits_1_with_one_line_and_no_traceback(test_set, tmp_path, monkeypatch,
                                                          capsys):
    test_set.save(tmp_path / "splits/test.pt")
    torchscript(lab_cnn(5), tmp_path / "five.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": {"file": "five.pt"}}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage_script(monkeypatch, "test.py", "--splits", "splits", "--model", "five.pt",
                         "--metrics", "metrics", "--tensorboard", "tb")
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "test: error: five.pt gives outputs of shape (1, 5) for one image; the test set has "
        "10 classes: expected (1, 10)\n")
    assert not (tmp_path / "metrics").exists()


NORMALIZE_ALLOWED = ("expected null (the model takes pixels in [0, 1]) or {mean: [...], std: "
                     "[...]}, one finite number per channel each, std > 0")


@pytest.mark.parametrize("normalize", [{"mean": [0.5], "std": [0.5, 0.5]},
                                       {"mean": [0.5], "std": [0]}, {"mean": [0.5]},
                                       {"mean": [], "std": []}, [0.5, 0.25]])
def test_bad_normalize_is_a_params_error(normalize):
    with pytest.raises(ParamsError) as err:
        parse_params({"model": {"normalize": normalize}})
    assert str(err.value).startswith("params: model.normalize = ")
    assert str(err.value).endswith(NORMALIZE_ALLOWED)


def test_an_unknown_key_of_normalize_names_its_keys():
    with pytest.raises(ParamsError, match=r"^params: unknown key model.normalize.median; known "
                                          "keys: mean, std$"):
        parse_params({"model": {"normalize": {"mean": [0.5], "std": [0.5], "median": [0]}}})


def test_model_file_null_is_a_params_error():
    with pytest.raises(ParamsError, match=r"^params: model.file = None is not allowed; expected "
                                          "the path of a model file: models/model.pt"):
        parse_params({"model": {"file": None}})


def test_normalize_set_and_unset_through_dvcs_writer_leaves_valid_params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    apply_overrides(path, ["model.normalize={mean:[0.4914,0.4822,0.4465],"
                           "std:[0.2471,0.2435,0.2616]}", "model.file=robust.pt"])
    params = load_params(path)
    assert params.model.normalize == Normalization(mean=(0.4914, 0.4822, 0.4465),
                                                   std=(0.2471, 0.2435, 0.2616))
    assert params.model.file == "robust.pt" and not params.model.trained_here
    apply_overrides(path, ["model.normalize=null"])
    assert load_params(path).model.normalize is None


def command_run(folder: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    """`python -m advlab.evaluation.evaluate_model ARGV` in folder, in this process."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["evaluate_model", *argv])
    evaluate_model.run_stage("evaluate_model", evaluate_model.main, evaluate_model.parser())


@pytest.fixture
def command_folder(test_set, tmp_path) -> Path:
    """A folder with the test split and params.yaml cutting the ensemble's budgets."""
    test_set.save(tmp_path / "data/splits/test.pt")
    budgets = {"apgd_ce": {"steps": 3}, "apgd_t": {"steps": 3, "targets": 2},
               "square": {"queries": 20}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"device": "cpu"}, "evaluate": {"batch_size": BATCH}, "attack": budgets}))
    return tmp_path


def test_the_command_prints_autoattacks_lines_of_the_pipelines_numbers(
        trained_model, test_set, command_folder, monkeypatch, capsys):
    """A model trained on normalized inputs, its normalization given: the numbers the
    library gives the pipeline's model, as AutoAttack's log prints them."""
    config = trained_model.config
    without_normalization(trained_model, command_folder / "robust.pt", "torchscript")
    command_run(command_folder, monkeypatch, "robust.pt", "--eps", "8/255", "0.1",
                "--attacks", "apgd_ce,apgd_t,square", "--normalize",
                ",".join(map(str, config.mean)), ",".join(map(str, config.std)))
    printed = capsys.readouterr().out.splitlines()

    save_model(command_folder / "model.pt", trained_model)
    model = prepare_model(load_model(command_folder / "model.pt"), torch.device("cpu"))
    clean = classification_report(model, test_set, BATCH)["accuracy"]
    worst = worst_case(model, test_set, (8 / 255, 0.1), BATCH, ENSEMBLE, [], seed=0)
    expected = [f"clean accuracy: {clean:.2%}"]
    for e, label in enumerate(("8/255", "0.1")):
        expected += [f"eps {label}: robust accuracy after {title}: {worst.after[name][e]:.2%}"
                     for name, title in (("apgd_ce", "APGD-CE"), ("apgd_t", "APGD-T"),
                                         ("square", "Square"))]
        expected.append(f"eps {label}: robust accuracy: {worst.accuracy[e]:.2%}")
    assert printed[-1 - len(expected):-1] == expected  # the last: how long it took
    assert printed[0].startswith("model: robust.pt: TorchScript, md5 ")
    assert 0 < worst.accuracy[0] < clean


def test_the_command_on_a_bad_file_exits_1_with_one_line(command_folder, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        command_run(command_folder, monkeypatch, "nowhere.pt", "--eps", "8/255")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("evaluate_model: error: nowhere.pt does not exist: model.file names")
    assert err.count("\n") == 1


def test_eps_are_read_as_people_write_them():
    assert evaluate_model.eps_arg("8/255").value == 8 / 255
    assert evaluate_model.eps_arg("0.03").value == 0.03
    for bad in ("8/0", "eight"):
        with pytest.raises(Exception, match="is not a number or a fraction such as 8/255"):
            evaluate_model.eps_arg(bad)


DVC_TINY = {"data": {"dataset": "synthetic", "synthetic_train": 300, "synthetic_test": 60,
                     "train_size": 200, "val_size": 50},
            "train": {"epochs": 1}, "evaluate": {"batch_size": 64},
            "attack": {"epsilons": [0, 0.1], "max_images": 30, "apgd_ce": {"steps": 2},
                       "apgd_t": {"steps": 2, "targets": 2}, "fab_t": {"steps": 2, "targets": 2},
                       "square": {"queries": 10}}}


def ran(out: str) -> set[str]:
    """The stages a dvc repro or exp run ran, but download, which runs on every repro."""
    return set(re.findall(r"Running stage '(\w+)'", out)) - {"download"}


@pytest.mark.slow
def test_a_replaced_model_file_reruns_exactly_test_attack_and_report(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, DVC_TINY)))
    assert ran(dvc(repo, "repro")) == {"split", "train", "test", "attack", "report"}
    trained = {name: (repo / "metrics" / name).read_text() for name in ("test.json", "attack.csv")}

    # The trained weights as TorchScript: an experiment on it gives the trained model's numbers
    torchscript(load_model(repo / "models/model.pt"), repo / "elsewhere.pt")
    assert ran(dvc(repo, "exp", "run", "-S", "model.file=elsewhere.pt")) == {
        "test", "attack", "report"}
    for name, text in trained.items():
        assert (repo / "metrics" / name).read_text() == text, name
    assert stale(repo) == set()

    torchscript(lab_cnn(), repo / "elsewhere.pt")  # replaced by another model
    assert stale(repo) == {"test", "attack", "report"}
    assert ran(dvc(repo, "repro")) == {"test", "attack", "report"}
    assert stale(repo) == set()
    page = (repo / "reports/report.html").read_text()
    assert file_digests(repo / "elsewhere.pt")[1] in page and "trained elsewhere" in page
    assert json.loads((repo / "metrics/test.json").read_text()) != json.loads(trained["test.json"])
