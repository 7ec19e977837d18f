"""Training smoke runs on the synthetic set, resume, eval/export commands, clear errors."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from sluice.cli import main
from sluice.errors import SluiceError
from sluice.model.checkpoint import load_checkpoint, load_model
from sluice.model.data import FASHION_MNIST_DIR, load_cifar10, load_dataset, load_fashion_mnist

COMMON = ["--dataset", "synthetic", "--width", "8", "--threads", "1", "--log-every", "1000"]


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    assert main(["train", *COMMON, "--gating", "none", "--epochs", "1", "-o", str(out)]) == 0
    return out


def test_one_epoch_dense_learns(dense_run):
    ck = load_checkpoint(dense_run / "model.pt")
    assert ck["history"][0]["test_acc"] > 0.5  # 4 classes: chance is 0.25
    model, _ = load_model(dense_run / "model.pt")
    assert model.conv1.in_channels == 1 and model.fc.out_features == 4
    assert (dense_run / "last.pt").is_file() and (dense_run / "log.jsonl").is_file()


def test_gated_kd_resume_eval_export(dense_run, tmp_path, capsys):
    out = tmp_path / "gated"
    assert main(["train", *COMMON, "--epochs", "1", "--teacher", str(dense_run / "model.pt"),
                 "-o", str(out)]) == 0
    h = load_checkpoint(out / "last.pt")["history"]
    assert len(h) == 1 and 0 < h[0]["test_gate_rate"] < 1
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2",
                 "--threads", "1"]) == 0
    ck = load_checkpoint(out / "model.pt")
    assert [r["epoch"] for r in ck["history"]] == [1, 2]
    assert ck["train_args"]["teacher"] == str(dense_run / "model.pt")

    ev = tmp_path / "eval"
    assert main(["eval", str(out / "model.pt"), str(dense_run / "model.pt"), "-o", str(ev),
                 "--threads", "1"]) == 0
    rep = json.loads((ev / "gated-model.eval.json").read_text())
    assert rep["reduction"] > 1.0 and rep["images"] == 128
    assert json.loads((ev / f"{dense_run.name}-model.eval.json").read_text())["reduction"] == 1
    assert (ev / "accuracy_vs_reduction.png").stat().st_size > 0
    assert (ev / "gated-model.gates.png").stat().st_size > 0
    assert main(["eval", str(out / "model.pt"), "-o", str(ev), "--int8", "--calib", "128",
                 "--threads", "1"]) == 0
    rep8 = json.loads((ev / "gated-model.int8.eval.json").read_text())
    assert abs(rep8["top1"] - rep["top1"]) < 0.15
    assert rep8["gate_agreement_end_to_end"] > 0.8
    replot = tmp_path / "replot"  # the plot alone, from earlier reports, nothing evaluated
    assert main(["eval", "--compare", str(ev / "gated-model.eval.json"),
                 str(ev / "gated-model.int8.eval.json"), "-o", str(replot)]) == 0
    assert (replot / "accuracy_vs_reduction.png").stat().st_size > 0
    assert not list(replot.glob("*.eval.json"))

    ex = tmp_path / "export"
    assert main(["export", str(out / "model.pt"), "-o", str(ex), "--calib", "128",
                 "--threads", "1"]) == 0
    assert len(list(ex.glob("*.layer.npz"))) == 20
    said = capsys.readouterr().out
    assert "reproduces it exactly" in said and "calibration measured here" in said
    # pinned: the export's calibration.json beside the checkpoint is what eval and export use
    shutil.copy(ex / "calibration.json", out / "model.calib.json")
    assert main(["eval", str(out / "model.pt"), "-o", str(ev), "--int8", "--calib", "128",
                 "--threads", "1"]) == 0
    assert "calibration from model.calib.json" in capsys.readouterr().out
    pinned = json.loads((ev / "gated-model.int8.eval.json").read_text())
    assert pinned["calibration"] == str(out / "model.calib.json")
    assert pinned["top1"] == rep8["top1"] and pinned["reduction"] == rep8["reduction"]
    assert main(["export", str(out / "model.pt"), "-o", str(ex), "--calib", "128",
                 "--threads", "1"]) == 0
    assert f"calibration from {out / 'model.calib.json'}" in capsys.readouterr().out


def test_wrong_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bad), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "not a readable PyTorch checkpoint" in err
    assert main(["eval", "-o", str(tmp_path)]) == 2
    assert "give checkpoints to evaluate, or --compare" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(SluiceError, match="expected 'sluice.ckpt/1'"):
        load_checkpoint(other)
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_incompatible_options_exit_2(tmp_path, capsys):
    assert main(["train", *COMMON, "--partitions", "3", "-o", str(tmp_path)]) == 2
    assert "partitions=3 must divide" in capsys.readouterr().err
    assert main(["train", *COMMON, "--base", "middle", "-o", str(tmp_path)]) == 2
    assert "base must be one of" in capsys.readouterr().err


def test_missing_data_sets_are_clear_errors(tmp_path):
    with pytest.raises(SluiceError, match="does not exist"):
        load_fashion_mnist("train", tmp_path / "nope")
    with pytest.raises(SluiceError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist("train", tmp_path)
    with pytest.raises(SluiceError, match="needs --data-dir"):
        load_cifar10("train", None)
    with pytest.raises(SluiceError, match="data_batch_1..5 and test_batch"):
        load_cifar10("train", tmp_path)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(SluiceError, match="test_batch: not a CIFAR-10 python batch"):
        load_cifar10("test", tmp_path)
    with pytest.raises(SluiceError, match="--dataset must be one of"):
        load_dataset("imagenet", "train")


def test_cifar10_pickle_layout(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    g = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": g.integers(0, 256, (3, 3072), dtype=np.uint8),
                         b"labels": [1, 2, 3]}, f)
    train = load_cifar10("train", tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert load_cifar10("test", d).labels.tolist() == [1, 2, 3]


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 1, 32, 32) and test.labels.max() == 9
    assert int(test.images[:, :, :2].max()) == 0  # padded with background
    x, _ = next(test.batches(8, augment=True, gen=torch.Generator().manual_seed(0)))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32


def test_init_from_dense_for_gated_fine_tuning(dense_run, tmp_path):
    out = tmp_path / "ft"
    assert main(["train", *COMMON, "--epochs", "1", "--init-from", str(dense_run / "model.pt"),
                 "--threshold-init", "1.5", "--lr", "0.0", "-o", str(out)]) == 0
    dense = load_checkpoint(dense_run / "model.pt")["state_dict"]
    gated = load_checkpoint(out / "model.pt")["state_dict"]
    # lr 0: the copied weights are unchanged, thresholds start at the given value
    assert torch.equal(gated["layer1.0.conv1.weight"], dense["layer1.0.conv1.weight"])
    assert torch.all(gated["layer1.0.conv1.threshold"] == 1.5)
    with pytest.raises(SluiceError, match="--init-from"):
        from sluice.model.resnet import build_model, default_config
        from sluice.model.train import init_from
        init_from(build_model(default_config(width=16, in_channels=1, num_classes=4)),
                  dense_run / "model.pt")


def test_reset_thresholds_moves_a_gated_network_to_a_new_target(dense_run, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "moved"
    assert main(["train", *COMMON, "--epochs", "1", "--init-from", str(dense_run / "model.pt"),
                 "--threshold-init", "1.5", "--lr", "0.0", "-o", str(src)]) == 0
    assert main(["train", *COMMON, "--epochs", "1", "--init-from", str(src / "model.pt"),
                 "--reset-thresholds", "--threshold-init", "0.25", "--lr", "0.0",
                 "-o", str(out)]) == 0
    a = load_checkpoint(src / "model.pt")["state_dict"]
    b = load_checkpoint(out / "model.pt")["state_dict"]
    assert torch.all(a["layer1.0.conv1.threshold"] == 1.5)
    assert torch.all(b["layer1.0.conv1.threshold"] == 0.25)
    assert torch.equal(a["layer1.0.conv1.weight"], b["layer1.0.conv1.weight"])
    # lower thresholds: more gates on
    ga = load_checkpoint(src / "model.pt")["history"][0]["test_gate_rate"]
    gb = load_checkpoint(out / "model.pt")["history"][0]["test_gate_rate"]
    assert gb > ga
    assert main(["train", *COMMON, "--reset-thresholds", "-o", str(tmp_path / "x")]) == 2
    assert "--reset-thresholds needs --init-from" in capsys.readouterr().err
