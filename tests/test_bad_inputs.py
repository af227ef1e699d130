"""Bad inputs that once raised as bugs (or went through): each is one line naming the key or
file; writes that fail leave the old file whole; the TensorBoard writer closes on an error."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import yaml
from conftest import run_stage_script

from advlab import params as params_module
from advlab.core import io as advlab_io
from advlab.data.formats import CIFAR_DIR, DatasetError, read_raw, write_cifar_batches
from advlab.data.images import ImageSet
from advlab.data.synthetic import synthetic_images
from advlab.experiments import profile
from advlab.models import build_model, model_config, save_model
from advlab.params import load_params, parse_params
from advlab.params.fields import ParamsError


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("epsilons, clash", [([0.1, 0.1000001], "'eps=0.1'"),
                                              ([0, 0.1, 0.1004], "both give 100")])
def test_epsilons_that_share_a_metric_key_or_tensorboard_step(epsilons, clash):
    with pytest.raises(ParamsError) as err:
        parse_params({"attack": {"epsilons": epsilons}})
    message = one_line(err)
    assert message.startswith("params: attack.epsilons = ") and clash in message


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_weight_decay_must_be_finite(tmp_path, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  weight_decay: {value}\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert one_line(err).startswith("params: train.weight_decay = ")
    assert "expected a finite number >= 0" in str(err.value)


def three_class_set(n: int = 12) -> ImageSet:
    images = synthetic_images(n, seed=0).images
    return ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"))


@pytest.mark.parametrize("key", ["methods", "ensemble"])
def test_dlr_attack_on_fewer_than_4_classes(tmp_path, monkeypatch, capsys, key):
    test_set = three_class_set()
    test_set.save(tmp_path / "splits/test.pt")
    save_model(tmp_path / "model.pt", build_model(model_config("lab_cnn", test_set)))
    attack = {"methods": ["fgsm"], "ensemble": [], key: ["apgd_t"], "epsilons": [0, 0.1]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"device": "cpu"}, "attack": attack}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage_script(monkeypatch, "attack.py", "--splits", "splits", "--model", "model.pt",
                         "--metrics", "metrics", "--examples", "ex.png", "--tensorboard", "tb")
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"attack: error: params: attack.{key} holds apgd_t, which needs at least 4 "
                   f"classes; the data has 3: remove apgd_t from attack.{key}")
    assert not (tmp_path / "metrics").exists()


def test_empty_test_set_is_refused_by_the_split_stage(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "raw/synthetic" / CIFAR_DIR
    write_cifar_batches(folder, synthetic_images(50, 1), synthetic_images(10, 2))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []}, f, protocol=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {
        "dataset": "synthetic", "synthetic_train": 50, "train_size": 40, "val_size": 10}}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage_script(monkeypatch, "split.py", "--raw", "raw", "--out", "splits")
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"split: error: raw/synthetic/{CIFAR_DIR}/test_batch: no images in test_batch")
    assert not (tmp_path / "splits").exists()


def test_non_square_images_name_the_file(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for prefix, n in (("train", 6), ("t10k", 4)):  # idx files of 28x20-pixel images
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 20))
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + bytes(n * 28 * 20))
        header = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + bytes(n))
    with pytest.raises(DatasetError) as err:
        read_raw(tmp_path, "fashion_mnist", verify=False)
    assert one_line(err) == (f"{folder / 'train-images-idx3-ubyte'}: images of 28x20 pixels; "
                             "the model takes square images only")


def failing_fsync(fd: int) -> None:
    raise OSError("disk full")


def test_schema_file_is_written_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / params_module.SCHEMA_FILE).write_text("old")
    monkeypatch.setattr(advlab_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        params_module.main(["--schema"])
    assert (tmp_path / params_module.SCHEMA_FILE).read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == [params_module.SCHEMA_FILE]


def test_profile_save_copies_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/test.json").write_text('{"accuracy": 0.5}')
    (tmp_path / "results").mkdir()
    (tmp_path / "results/test.json").write_text("old")
    monkeypatch.setattr(profile, "plan", lambda *a, **k: profile.Plan({}, None))
    monkeypatch.setattr(profile.subprocess, "call", lambda command: 0)
    monkeypatch.setattr(advlab_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        profile.main(["ci", "--save", "results"])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["test.json"]
    assert (tmp_path / "results/test.json").read_text() == "old"
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(profile, "plan", lambda *a, **k: profile.Plan({}, None))
    monkeypatch.setattr(profile.subprocess, "call", lambda command: 0)
    assert profile.main(["ci", "--save", "results"]) == 0
    assert (tmp_path / "results/test.json").read_text() == '{"accuracy": 0.5}'


def test_tensorboard_writer_is_closed_when_training_raises(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    import advlab.training.checkpoint

    sets = synthetic_images(40, 0)
    sets.subset(torch.arange(30)).save(tmp_path / "splits/train.pt")
    sets.subset(torch.arange(30, 40)).save(tmp_path / "splits/val.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"base": {"device": "cpu"}}))
    closed: list[SummaryWriter] = []
    close = SummaryWriter.close
    monkeypatch.setattr(SummaryWriter, "close", lambda self: (closed.append(self), close(self)))

    def broken_fit(*args, **kwargs):
        raise RuntimeError("a bug mid-training")

    monkeypatch.setattr(advlab.training.checkpoint, "fit_resumable", broken_fit)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="a bug mid-training"):
        run_stage_script(monkeypatch, "train.py", "--splits", "splits", "--model", "m.pt",
                         "--metrics", "metrics", "--tensorboard", "tb", "--checkpoint", "c.pt")
    assert len(closed) == 1
