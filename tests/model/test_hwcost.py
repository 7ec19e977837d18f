"""The hardware latency term of gate training (model/hwcost.py) against the cycle model's own
pass counting, its gradient, and `sluice train --hw-lambda`."""

import dataclasses

import numpy as np
import pytest
import torch

from sluice.cli import main
from sluice.hw.levers import group_passes
from sluice.hw.params import DEFAULT
from sluice.model.checkpoint import load_checkpoint
from sluice.model.hwcost import layer_cost

COMMON = ["--dataset", "synthetic", "--width", "8", "--threads", "1", "--log-every", "1000"]


@pytest.mark.parametrize("c_out,cols,skip_cols", [(16, 8, 2), (12, 8, 2), (16, 4, 1),
                                                  (32, 8, 4)])
def test_layer_cost_is_the_lockstep_conditional_passes(c_out, cols, skip_cols):
    rng = np.random.default_rng(c_out + cols)
    gate = (rng.random((c_out, 5, 7)) < 0.1).astype(np.uint8)
    c_in, k, p = 16, 3, 4
    d = torch.tensor(gate[None], dtype=torch.float32)
    cond, dense = layer_cost(d, c_in, k, p, rows=2, cols=cols, skip_cols=skip_cols)
    # the cost leaves out the rounding to whole passes: with every pixel twice on a two-row
    # array the cycle model's lockstep passes (no rounding there) are the cost exactly
    params = dataclasses.replace(DEFAULT, rows=2, cols=cols, skip_cols=skip_cols)
    lock, _ = group_passes(np.repeat(gate, 2, axis=2), params)
    assert lock > 0 and float(cond) == lock * (c_in - c_in // p) * k * k / 2
    assert dense == c_out * 5 * 7 * c_in * k * k / (2 * cols)
    # rows divide the cost; the batch is averaged
    cond4, _ = layer_cost(torch.cat([d, d]), c_in, k, p, rows=4, cols=cols,
                          skip_cols=skip_cols)
    assert float(cond4) == pytest.approx(float(cond) / 2)


@pytest.mark.parametrize("rows,cols,skip_cols", [(2, 8, 2), (4, 8, 2), (3, 4, 1), (8, 8, 4)])
def test_whole_passes_is_the_cycle_models_pass_count(rows, cols, skip_cols):
    rng = np.random.default_rng(rows * cols + skip_cols)
    gate = (rng.random((3, 12, 6, 5)) < 0.15).astype(np.uint8)  # 3 images, 12 channels
    c_in, k, p = 8, 3, 2
    cond, _ = layer_cost(torch.tensor(gate, dtype=torch.float32), c_in, k, p, rows=rows,
                         cols=cols, skip_cols=skip_cols, whole_passes=True)
    params = dataclasses.replace(DEFAULT, rows=rows, cols=cols, skip_cols=skip_cols)
    passes = [group_passes(g, params)[0] for g in gate]
    assert max(passes) > 0
    assert float(cond) == pytest.approx(np.mean(passes) * (c_in - c_in // p) * k * k)


@pytest.mark.parametrize("slices", [2, 3])
@pytest.mark.parametrize("rows,kernel", [(4, 3), (8, 3), (3, 5), (4, 1)])
def test_whole_passes_count_sliced_last_passes_at_their_share(rows, kernel, slices):
    """With row slices a short last pass counts ceil(K/2) / K of a pass (and with three
    slices a 3 x 3 layer's shorter one 1/3), as the cycle model's pass_time has it (1 x 1
    layers are never sliced)."""
    rng = np.random.default_rng(rows + kernel)
    gate = (rng.random((4, 8, 5, 6)) < 0.08).astype(np.uint8)
    c_in, p = 8, 2
    d = torch.tensor(gate, dtype=torch.float32)
    cond, _ = layer_cost(d, c_in, kernel, p, rows=rows, cols=8, skip_cols=2,
                         whole_passes=True, row_slices=slices)
    params = dataclasses.replace(DEFAULT, rows=rows, cols=8, skip_cols=2, row_slices=slices)
    passes = [group_passes(g, params, kernel)[0] for g in gate]
    assert float(cond) == pytest.approx(np.mean(passes) * (c_in - c_in // p) * kernel ** 2)
    plain, _ = layer_cost(d, c_in, kernel, p, rows=rows, cols=8, skip_cols=2,
                          whole_passes=True)
    assert (float(cond) < float(plain)) == (kernel > 1)
    if slices == 3 and kernel == 3 and rows >= 4:  # some last pass has three slices here
        two, _ = layer_cost(d, c_in, kernel, p, rows=rows, cols=8, skip_cols=2,
                            whole_passes=True, row_slices=2)
        assert float(cond) < float(two)


def test_whole_passes_gradient_on_the_last_pass_only():
    d = torch.zeros(1, 4, 3, 3)  # one tile of two 2-column groups on a 4-row array
    d[0, 0].view(-1)[:5] = 1  # group 0: 5 active pixels, one past the first pass
    d[0, 2].view(-1)[:3] = 1  # group 1: 3, all within the first pass
    d.requires_grad_(True)
    cond, _ = layer_cost(d, 8, 1, 2, rows=4, cols=4, skip_cols=2, whole_passes=True)
    assert cond.item() == 2 * 4  # two passes of 4 conditional steps
    cond.backward()
    g = d.grad[0].reshape(4, 9)
    assert torch.all(g[2:] == 0)  # group 1 waits for the busiest group anyway
    # group 0 has one item past the first pass: switching off any of its five saves the
    # whole second pass (4 steps), switching on another costs it; the partner channel's gates
    # beside channel 0's on gates are free
    assert torch.all(g[0] == 4)
    assert torch.all(g[1, :5] == 0) and torch.all(g[1, 5:] == 4)
    # a full last pass (both groups' 4 items on 4 rows): each of its 8 items carries 1/8 of it
    full = torch.zeros(1, 4, 2, 2)
    full[0, [0, 2]] = 1
    full.requires_grad_(True)
    cond, _ = layer_cost(full, 8, 1, 2, rows=4, cols=4, skip_cols=2, whole_passes=True)
    cond.backward()
    assert cond.item() == 4 and torch.all(full.grad[0, [0, 2]] == 0.5)


def test_gradient_only_on_gates_that_cost_cycles():
    d = torch.zeros(1, 8, 2, 2)
    d[0, 0, 0, 0] = d[0, 1, 0, 0] = 1  # skip group 0: one active pixel (both gates)
    d[0, 2, 0, 0] = d[0, 2, 1, 1] = 1  # skip group 1: two active pixels, the busiest
    d.requires_grad_(True)
    cond, _ = layer_cost(d, 16, 3, 4, rows=2, cols=8, skip_cols=2)
    cond.backward()
    g = d.grad[0].reshape(8, 4)
    assert torch.all(g[[0, 1, 4, 5, 6, 7]] == 0)  # groups waiting for the busiest are free
    assert torch.all(g[2] > 0)  # the busiest group's gates cost cycles
    # channel 3's gates beside channel 2's on gates are free; beside its off ones they cost
    assert g[3].tolist() == [0, g[2, 0].item(), g[2, 0].item(), 0]


def test_train_hw_lambda_turns_costly_gates_off(tmp_path, capsys):
    rates = {}
    for lam in ("0", "20"):
        out = tmp_path / lam
        assert main(["train", *COMMON, "--epochs", "1", "--threshold-init", "-0.5",
                     "--hw-lambda", lam, "--hw-rows", "4", "--hw-cols", "4", "-o",
                     str(out)]) == 0
        h = load_checkpoint(out / "model.pt")["history"][0]
        rates[lam] = h["train_gate_rate"]
        assert (h["train_hw_cost"] is None) == (lam == "0")
    assert 0 < rates["20"] < rates["0"]
    assert main(["train", *COMMON, "--hw-lambda", "1", "--hw-cols", "4", "--hw-skip-cols",
                 "3", "-o", str(tmp_path / "x")]) == 2
    assert "--hw-skip-cols" in capsys.readouterr().err
    assert main(["train", *COMMON, "--hw-lambda", "-1", "-o", str(tmp_path / "x")]) == 2
    assert main(["train", *COMMON, "--hw-passes", "-o", str(tmp_path / "x")]) == 2
    assert "--hw-passes" in capsys.readouterr().err
    assert main(["train", *COMMON, "--hw-lambda", "1", "--hw-row-slices", "4", "-o",
                 str(tmp_path / "x")]) == 2
    assert "--hw-row-slices: 4 must be 1, 2 or 3" in capsys.readouterr().err
    # counting sliced passes takes the generator's rule, so its sizes must be the generator's
    assert main(["train", *COMMON, "--hw-lambda", "1", "--hw-passes", "--hw-rows", "1", "-o",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--hw-rows: 1 is outside 2..32" in err
    assert not (tmp_path / "x").exists()
