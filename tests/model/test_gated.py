"""CGConv2d: forward against a direct computation, gate gradients, gating loss, errors."""

import pytest
import torch
import torch.nn.functional as F

from sluice.errors import SluiceError
from sluice.model.gated import CGConv2d, conv_factory, gate_rate, total_gate_loss
from sluice.model.resnet import build_model, default_config
from sluice.model.train import make_optimizer


def hand_mask(c_out, c_in, p, base):
    """Base sets written out from SPEC section 1, one channel at a time."""
    m = torch.zeros(c_out, c_in)
    for o in range(c_out):
        if base == "group":
            g = o // (c_out // p)
            lo = g * (c_in // p)
        else:
            lo = 0
        for i in range(lo, lo + c_in // p):
            m[o, i] = 1
    return m[:, :, None, None]


def make_conv(c_in=8, c_out=12, p=4, base="group", stride=1, sparse_bp=False, seed=0):
    torch.manual_seed(seed)
    conv = CGConv2d(c_in, c_out, 3, stride=stride, padding=1, partitions=p, base=base,
                    sparse_bp=sparse_bp)
    with torch.no_grad():
        conv.gate_bn.running_mean.uniform_(-0.5, 0.5)
        conv.gate_bn.running_var.uniform_(0.5, 2.0)
        conv.threshold.uniform_(-0.5, 0.5)
    return conv.eval()


@pytest.mark.parametrize("base", ["group", "first"])
@pytest.mark.parametrize("stride", [1, 2])
def test_forward_matches_direct_computation(base, stride):
    conv = make_conv(base=base, stride=stride)
    x = torch.randn(2, 8, 9, 9)
    w = conv.weight.detach()
    mask = hand_mask(12, 8, 4, base)
    y_full = F.conv2d(x, w, stride=stride, padding=1)
    y_base = F.conv2d(x, w * mask, stride=stride, padding=1)
    bn = conv.gate_bn
    z = (y_base - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, -1, 1, 1) + bn.eps)
    d = (z > conv.threshold.detach().view(1, -1, 1, 1)).float()
    expect = y_full * d + y_base * (1 - d)
    with torch.no_grad():
        out = conv(x)
    assert torch.allclose(out, expect, atol=1e-5)
    assert torch.allclose(conv.base_conv(x), y_base, atol=1e-5)
    assert 0 < d.mean() < 1  # the test exercises both branches
    assert conv.gate_total == d.numel() and float(conv.gate_on) == float(d.sum())
    # the float threshold on Yp itself says the same
    t = conv.threshold_float().view(1, -1, 1, 1)
    assert torch.equal((y_base > t).float(), d)


@pytest.mark.parametrize("sparse", [False, True])
def test_threshold_gradient_straight_through_and_sparse(sparse):
    conv = make_conv(sparse_bp=sparse)
    x = torch.randn(2, 8, 6, 6)
    out = conv(x)
    out.sum().backward()
    with torch.no_grad():
        w = conv.weight
        y_full = F.conv2d(x, w, padding=1)
        y_base = F.conv2d(x, w * hand_mask(12, 8, 4, "group"), padding=1)
        bn = conv.gate_bn
        z = (y_base - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + bn.eps)
        s = torch.sigmoid(conv.alpha * (z - conv.threshold.view(1, -1, 1, 1)))
        d = (s > 0.5).float()
        # dL/dd = Y - Yp; step passes it through (times d if sparse); sigmoid'; dΔ = -α
        g = (y_full - y_base) * (d if sparse else 1.0) * s * (1 - s) * (-conv.alpha)
        expect = g.sum(dim=(0, 2, 3))
    assert torch.allclose(conv.threshold.grad, expect, rtol=1e-4, atol=1e-4)
    assert conv.threshold.grad.abs().sum() > 0


def test_sparse_backprop_blocks_gradient_where_gate_off():
    conv = make_conv(sparse_bp=True)
    with torch.no_grad():
        conv.threshold.fill_(100.0)  # every gate off
    conv(torch.randn(1, 8, 5, 5)).sum().backward()
    assert torch.count_nonzero(conv.threshold.grad) == 0
    conv2 = make_conv(sparse_bp=False)
    with torch.no_grad():
        conv2.threshold.fill_(0.5)
    conv2(torch.randn(1, 8, 5, 5)).sum().backward()
    assert torch.count_nonzero(conv2.threshold.grad) > 0


def test_gating_loss_and_no_weight_decay_on_thresholds():
    model = build_model(default_config(width=8, in_channels=1, num_classes=4))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CGConv2d):
                m.threshold.uniform_(-1, 1)
    target = 1.5
    expect = sum(((m.threshold - target) ** 2).sum() for m in model.modules()
                 if isinstance(m, CGConv2d))
    assert torch.allclose(total_gate_loss(model, target), expect)
    # thresholds are in a group without weight decay, everything else decays
    opt = make_optimizer(model, 0.1, 0.9, 5e-4)
    th = {id(m.threshold) for m in model.modules() if isinstance(m, CGConv2d)}
    assert {id(p) for p in opt.param_groups[1]["params"]} == th
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert opt.param_groups[0]["weight_decay"] == 5e-4
    assert not th & {id(p) for p in opt.param_groups[0]["params"]}
    # the gating loss alone pulls thresholds towards the target
    before = total_gate_loss(model, target).item()
    opt.zero_grad()
    total_gate_loss(model, target).backward()
    opt.step()
    assert total_gate_loss(model, target).item() < before


def test_postact_gates_both_convs_standard_only_conv1():
    post = build_model(default_config(width=8, block="postact"))
    std = build_model(default_config(width=8, block="standard"))
    b_post, b_std = post.layer2[0], std.layer2[0]
    assert isinstance(b_post.conv1, CGConv2d) and isinstance(b_post.conv2, CGConv2d)
    assert isinstance(b_std.conv1, CGConv2d) and not isinstance(b_std.conv2, CGConv2d)
    assert not isinstance(post.conv1, CGConv2d)  # stem dense
    dense = build_model(default_config(width=8, gating="none"))
    assert not any(isinstance(m, CGConv2d) for m in dense.modules())
    x = torch.randn(2, 1, 20, 20)  # any image size
    assert post.eval()(x).shape == (2, 10)
    assert gate_rate(post) == gate_rate(post)  # counted (not nan)


def test_incompatible_options_are_clear_errors():
    with pytest.raises(SluiceError, match="partitions=3 must divide"):
        CGConv2d(8, 8, 3, partitions=3)
    with pytest.raises(SluiceError, match="base must be one of"):
        CGConv2d(8, 8, 3, base="middle")
    with pytest.raises(SluiceError, match="--width 12"):
        build_model(default_config(width=12, partitions=8))
    with pytest.raises(SluiceError, match="gating must be one of"):
        conv_factory("fbs")
