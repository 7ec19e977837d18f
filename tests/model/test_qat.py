"""Quantisation-aware fine-tuning: the fake-quantised forward is the integer network's."""

import pytest
import torch

from sluice.cli import main
from sluice.model.checkpoint import load_checkpoint, load_model
from sluice.model.data import FASHION_MNIST_DIR, load_dataset
from sluice.model.gated import is_gated
from sluice.model.qat import FakeQuantNet, fake_quant
from sluice.model.quantize import calibration_batches, equalise, graph, quantize

from conftest import make_gated


def test_fake_quant_rounds_clamps_and_passes_gradient_inside_only():
    x = torch.tensor([-3.0, -1.8, -0.26, 0.24, 0.26, 1.9, 40.0], requires_grad=True)
    y = fake_quant(x, 0.5, -4, 3)
    assert y.tolist() == [-2.0, -2.0, -0.5, 0.0, 0.5, 1.5, 1.5]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def pair(syn_train):
    """(FakeQuantNet, QuantNet) of one small gated network, calibrated on the same images."""
    model, _ = make_gated(syn_train, seed=3)
    calib = [x for x, _ in syn_train.batches(128)][:2]
    model = equalise(model, calib)
    fq = FakeQuantNet(model, calib, input_scale=syn_train.scale)
    qn = quantize(model, calib, input_scale=syn_train.scale, image_size=16)
    return fq, qn


def test_every_layer_matches_the_integer_network(pair, syn_test):
    """Teacher-forced: each layer, fed the integer network's own inputs, gives its outputs to
    one step (the unemulated bias/residual rounding and round-half-even) and its gates."""
    fq, qn = pair
    u8 = syn_test.images[:64]
    rec = {}
    qn.forward(qn.quantise_input(u8), record=rec)
    assert {L.name for L in qn.layers} == set(fq.scales) - {"input"}
    off = total = 0
    gated = 0
    with torch.no_grad():
        for entry in graph(fq.model)[0]:
            name, conv, _, inp, res, _ = entry
            x = syn_test.normalise(u8) if inp == "input" else \
                rec[inp][0].float() * fq.scales[inp]
            r = None if res is None else rec[res][0].float() * fq.scales[res]
            y = torch.round(fq.layer(entry, x, r).double() / fq.scales[name]).long()
            y_int, gate_int = rec[name]
            diff = (y - y_int).abs()
            assert int(diff.max()) <= 1, name
            off += int((diff > 0).sum())
            total += diff.numel()
            if is_gated(conv):
                gated += 1
                agree = float((conv.last_gate.long() == gate_int).float().mean())
                assert agree > 0.999, (name, agree)
    assert gated == 16 and off / total < 0.01


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_trained_network_follows_the_integer_logits():
    """On the embedded default (a random network's logits are too close to call): the
    fake-quantised logits track the integer network's clearly more closely than the float
    network's do, and pick the same class. Measured mean |error| ratios (fake-quant / float):
    0.60-0.65 for the previous default and 0.64-0.68 for the current one and its pre-QAT
    network, on test images 0-199, 200-399 and 400-599 (the bound was 0.6 on images 0-199,
    where the previous default measured 0.595: too close to the edge to survive a new
    checkpoint; it is now 0.75 on 400 images)."""
    model, _ = load_model("default")
    ds = load_dataset("fashion-mnist", "train")
    calib = calibration_batches(ds, 250)
    model = equalise(model, calib)
    fq = FakeQuantNet(model, calib, input_scale=ds.scale)
    qn = quantize(model, calib, input_scale=ds.scale)
    test = load_dataset("fashion-mnist", "test")
    u8 = test.images[:400]
    with torch.no_grad():
        l_fq = fq(test.normalise(u8)).double()
        l_float = model(test.normalise(u8)).double()
    l_int = qn.logits(qn.forward(qn.quantise_input(u8)))
    assert float((l_fq.argmax(1) == l_int.argmax(1)).double().mean()) >= 0.98
    assert float((l_fq - l_int).abs().mean()) < 0.75 * float((l_float - l_int).abs().mean())


def test_gradients_reach_weights_bn_and_thresholds(pair, syn_test):
    fq, _ = pair
    fq.zero_grad()
    fq.train()
    assert not fq.training and not fq.model.training  # BN stays frozen
    x, y = next(syn_test.batches(32))
    torch.nn.functional.cross_entropy(fq(x), y).backward()
    m = fq.model
    assert m.conv1.weight.grad.abs().sum() > 0 and m.bn1.weight.grad.abs().sum() > 0
    assert m.layer1[0].conv1.threshold.grad.abs().sum() > 0
    assert m.fc.weight.grad.abs().sum() > 0
    fq.zero_grad()


COMMON = ["--dataset", "synthetic", "--threads", "1", "--log-every", "1000"]


def test_train_qat_fine_tunes_with_frozen_bn(tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["train", *COMMON, "--width", "8", "--epochs", "1", "-o", str(base)]) == 0
    out = tmp_path / "qat"
    # the model flags are the checkpoint's: --width 4 here is ignored
    assert main(["train", *COMMON, "--width", "4", "--qat", "--init-from",
                 str(base / "model.pt"), "--calib", "128", "--lr", "0.002", "--epochs", "1",
                 "-o", str(out)]) == 0
    assert "(fake-quant int8)" in capsys.readouterr().out
    before, after = load_checkpoint(base / "model.pt"), load_checkpoint(out / "model.pt")
    assert after["config"] == before["config"] and after["train_args"]["qat"]
    sb, sa = before["state_dict"], after["state_dict"]
    stats = [k for k in sb if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(sb[k], sa[k]) for k in stats)
    assert not torch.equal(sb["conv1.weight"], sa["conv1.weight"])
    assert main(["eval", str(out / "model.pt"), "-o", str(tmp_path / "ev"), "--int8",
                 "--calib", "128", "--threads", "1"]) == 0


def test_qat_needs_a_trained_network(tmp_path, capsys):
    assert main(["train", *COMMON, "--qat", "-o", str(tmp_path)]) == 2
    assert "--qat fine-tunes a trained network: give --init-from CKPT" in \
        capsys.readouterr().err
