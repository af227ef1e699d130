"""advlab.experiments.compare on a real `dvc exp show --json` document, trimmed
(fixtures/exp_show.json: two CI-profile experiments, ci-a with lr 0.001 and FGSM, ci-b with lr 0.003
and FGSM + PGD, the workspace holding ci-b, and HEAD without metrics)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from advlab.experiments import compare
from advlab.experiments.compare_read import (
    CompareError,
    Experiment,
    experiments_of,
    from_folder,
    select,
)
from advlab.experiments.compare_render import to_html, to_markdown, to_text
from advlab.experiments.compare_table import table

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "exp_show.json").read_text())
REPO = Path(__file__).resolve().parents[1]


def exp_data(name: str) -> dict:
    """The fixture's data of one experiment, read directly: the expected values."""
    for entry in FIXTURE:
        for group in entry.get("experiments") or []:
            for rev in group["revs"]:
                if rev["name"] == name:
                    return rev["data"]
    raise KeyError(name)


def metric(name: str, file: str, *keys: str) -> object:
    value = exp_data(name)["metrics"][f"metrics/{file}"]["data"]
    for key in keys:
        value = value[key]
    return value


@pytest.fixture
def exps() -> list[Experiment]:
    return select(experiments_of(FIXTURE), [])


def test_every_entry_is_read_and_the_default_keeps_those_with_metrics(exps):
    found = experiments_of(FIXTURE)
    assert [e.name for e in found] == ["workspace", "issue12", "ci-b", "ci-a"]
    assert not found[1].metrics  # HEAD: dvc.lock and metrics are not committed
    # the workspace is ci-b applied: shown once, under the experiment's name
    assert [e.name for e in exps] == ["ci-b", "ci-a"]
    assert [e.name for e in select(found, ["ci-a", "workspace"])] == ["ci-a",
                                                                              "workspace"]
    assert select(found, [exp_data("ci-a")["rev"][:7]])[0].name == "ci-a"


def test_unknown_experiment_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setattr(compare, "exp_show", lambda all_commits=False: FIXTURE)
    assert compare.main(["ci-a", "ci-z"]) == 1
    err = capsys.readouterr().err
    assert err == ("compare: error: no experiment 'ci-z'; dvc exp show lists: workspace, "
                   "issue12, ci-b, ci-a\n")


def test_experiments_of_two_commits_sharing_a_name_are_told_apart(monkeypatch, capsys):
    """An experiment's name is unique per commit only: with --all, ci-a of HEAD and ci-a of
    another commit are two rows, each labelled as `dvc exp show` does (rev [name])."""
    document = copy.deepcopy(FIXTURE)
    other = copy.deepcopy(document[1])
    other.update(rev="1" * 40, name=None)
    ci_a = other["experiments"][1]["revs"][0]
    ci_a["rev"] = "2" * 40
    ci_a["data"]["params"]["params.yaml"]["data"]["train"]["lr"] = 0.01
    other["experiments"] = [other["experiments"][1]]
    document.append(other)
    monkeypatch.setattr(compare, "exp_show", lambda all_commits=False: document)
    assert compare.main(["--all", "--md"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    first_a = exp_data("ci-a")["rev"][:7]
    assert [(row[0].lstrip("| "), row[2]) for row in rows] == [
        ("ci-b", "0.003"), (f"{first_a} [ci-a]", "0.001"), ("2222222 [ci-a]", "0.01")]


def test_row_per_experiment_with_differing_params_and_headline_metrics(exps):
    frame = table(exps)
    eps = exp_data("ci-b")["params"]["params.yaml"]["data"]["attack"]["epsilons"]
    assert list(frame.columns) == [
        "attack.methods", "train.lr", "val_acc", "test_acc",
        *(f"fgsm@{e:g}" for e in eps), *(f"pgd@{e:g}" for e in eps), "train_s"]
    for name in ("ci-a", "ci-b"):
        row = frame.loc[name]
        assert row["train.lr"] == exp_data(name)["params"]["params.yaml"]["data"]["train"]["lr"]
        assert row["val_acc"] == metric(name, "train.json", "val_acc")
        assert row["test_acc"] == metric(name, "test.json", "accuracy")
        assert row["fgsm@0.1"] == metric(name, "attack.json", "fgsm", "accuracy", "eps=0.1")
        assert row["train_s"] == metric(name, "train_time.json", "seconds")
    assert frame.loc["ci-b", "pgd@0.3"] == metric("ci-b", "attack.json", "pgd", "accuracy",
                                                  "eps=0.3")
    assert frame.loc["ci-b", "attack.methods"] == "fgsm,pgd"
    assert frame.isna().loc["ci-a", "pgd@0.1"]  # ci-a ran FGSM only


def test_attack_methods_are_read_from_the_file_whatever_they_are():
    document = copy.deepcopy(FIXTURE)
    attack = document[1]["experiments"][1]["revs"][0]["data"]["metrics"]["metrics/attack.json"]
    attack["data"]["square"] = {"accuracy": {"eps=0.1": 0.25, "eps=0.2": 0.125}}
    frame = table(select(experiments_of(document), []), eps=0.2)
    assert list(frame.columns) == ["attack.methods", "train.lr", "val_acc", "test_acc",
                                   "fgsm@0.2", "pgd@0.2", "square@0.2", "train_s"]
    assert frame.loc["ci-a", "square@0.2"] == 0.125


def test_eps_picks_one_column_per_method_and_an_absent_eps_is_an_error(exps):
    frame = table(exps, eps=0.1)
    assert [c for c in frame.columns if "@" in c] == ["fgsm@0.1", "pgd@0.1"]
    with pytest.raises(CompareError, match=r"no attack at eps 0.7; the experiments have eps "
                                           r"0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3"):
        table(exps, eps=0.7)


@pytest.mark.parametrize("copies", [1, 5])
def test_terminal_table_fits_in_100_columns(exps, copies):
    many = [Experiment(f"{e.name}-{i}", e.params, e.metrics) for i in range(copies) for e in exps]
    text = to_text(table(many), width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    for exp in many:  # every experiment and every metric is shown
        assert exp.name in text
    assert all(f"pgd@{e}" in text for e in ("0", "0.05", "0.3"))


def test_turned_table_shows_an_experiment_named_twice_twice(exps):
    text = to_text(table([exps[1], exps[1]]), width=40)
    assert text.count("ci-a") == 2  # selected by label, each of the two came out twice


def test_narrow_table_stays_a_row_per_experiment(exps):
    text = to_text(table(exps, eps=0.1), width=100)
    header, *rows = text.splitlines()
    assert header.split() == ["experiment", "attack.methods", "train.lr", "val_acc", "test_acc",
                              "fgsm@0.1", "pgd@0.1", "train_s"]
    assert [row.split()[0] for row in rows] == ["ci-b", "ci-a"]
    assert rows[1].split()[6] == "-"  # no PGD in ci-a


def test_markdown_table(exps):
    lines = to_markdown(table(exps, eps=0.1)).splitlines()
    assert lines[0] == ("| experiment | attack.methods | train.lr | val_acc | test_acc | "
                        "fgsm@0.1 | pgd@0.1 | train_s |")
    assert lines[1] == "| " + " | ".join(["---"] * 8) + " |"
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:3] == ["ci-a", "fgsm", "0.001"]
    assert float(cells[4]) == metric("ci-a", "test.json", "accuracy")


def test_html_page_is_self_contained_with_a_curve_per_experiment(exps):
    for exp, rows in zip(exps, (((1, 1.3, 0.82), (2, 0.5, 0.9)), ((1, 1.2, 0.8), (2, 0.4, 0.93))),
                         strict=True):
        exp.curves = [{"epoch": e, "loss": loss, "val_acc": acc} for e, loss, acc in rows]
    page = to_html(table(exps), exps)
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert page.count("<svg") == 3  # loss, val_acc, accuracy under attack
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        assert "ci-a" in svg and "ci-b" in svg  # both experiments in every chart's legend
    assert "pgd" in re.findall(r"<svg.*?</svg>", page, re.S)[2]


def test_a_folder_of_metrics_is_a_row_without_params(exps):
    baseline = from_folder(REPO / "results" / "ci")
    frame = table([*exps, baseline], eps=0.1)
    saved = json.loads((REPO / "results/ci/test.json").read_text())
    assert frame.loc[str(REPO / "results" / "ci"), "test_acc"] == saved["accuracy"]
    assert list(frame.columns)[:2] == ["attack.methods", "train.lr"]  # from the experiments



@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe{}"])
def test_an_unreadable_metrics_file_in_a_folder_is_one_line_naming_it(tmp_path, monkeypatch,
                                                                       capsys, content):
    (tmp_path / "test.json").write_bytes(content)
    monkeypatch.setattr(compare, "exp_show", lambda all_commits=False: [])
    assert compare.main(["--metrics-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"compare: error: {tmp_path / 'test.json'} is not a JSON object of "
                          "metrics (") and err.count("\n") == 1


def test_environment_is_shown_where_the_experiments_differ_in_it():
    document = copy.deepcopy(FIXTURE)
    ci_b, ci_a = (group["revs"][0]["data"]["metrics"] for group in document[1]["experiments"])
    workspace = document[0]["data"]["metrics"]  # ci-b applied
    for metrics, torch_version in ((ci_b, "2.9.0"), (workspace, "2.9.0"), (ci_a, "2.14.1")):
        for stage in ("train", "test"):
            metrics[f"metrics/{stage}_time.json"]["data"]["environment"] = {
                "python": "3.11.7", "torch": torch_version if stage == "train" else "2.14.1"}
    frame = table(select(experiments_of(document), []))
    assert [c for c in frame.columns if c.startswith("env.")] == ["env.train.torch"]
    assert frame["env.train.torch"].to_dict() == {"ci-b": "2.9.0", "ci-a": "2.14.1"}
