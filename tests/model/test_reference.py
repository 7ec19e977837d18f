"""The vectorised integer reference against a plain loop implementation of SPEC section 2."""

import itertools

import numpy as np
import pytest

from sluice.model.layerfile import Layer, overflow_bound
from sluice.model.randlayer import make_layer
from sluice.model.reference import base_mask, rescale, run_reference, work_figures


def loop_rescale(v, m, s):
    return (v * m + (1 << (s - 1))) >> s if s > 0 else v * m


def loop_reference(layer: Layer, dense=False):
    """SPEC section 2 written out with Python ints and loops, nothing shared with the reference."""
    c_out, c_in, k, _ = layer.w.shape
    _, h, w = layer.x.shape
    s, pad, p = layer.stride, layer.padding, layer.partitions
    h_out, w_out = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    x = layer.x.astype(int).tolist()
    wt = layer.w.astype(int).tolist()

    def xp(i, yy, xx):
        yy, xx = yy - pad, xx - pad
        return x[i][yy][xx] if 0 <= yy < h and 0 <= xx < w else 0

    def in_base(o, i):
        if layer.base == "first":
            return i < c_in // p
        return i // (c_in // p) == o // (c_out // p)

    y = np.zeros((c_out, h_out, w_out), np.int64)
    d = np.zeros((c_out, h_out, w_out), np.int64)
    for o in range(c_out):
        for oy in range(h_out):
            for ox in range(w_out):
                acc_b = acc_c = 0
                for i in range(c_in):
                    win = 0
                    for ky in range(k):
                        for kx in range(k):
                            win += wt[o][i][ky][kx] * xp(i, oy * s + ky, ox * s + kx)
                    if in_base(o, i):
                        acc_b += win
                    else:
                        acc_c += win
                gate = 1 if (dense or layer.thresh is None or acc_b > int(layer.thresh[o])) else 0
                acc = acc_b + gate * acc_c + int(layer.bias[o])
                if layer.residual is not None:
                    acc += loop_rescale(int(layer.residual[o, oy, ox]), int(layer.res_mult[o]),
                                        int(layer.res_shift[o]))
                for bound in (acc_b, acc_c, acc):
                    assert -(2**31) <= bound < 2**31
                v = loop_rescale(acc, int(layer.mult[o]), int(layer.shift[o]))
                y[o, oy, ox] = min(max(v, 0 if layer.relu else -128), 127)
                d[o, oy, ox] = gate
    return y.astype(np.int8), d.astype(np.uint8)


def random_params_layer(rng, *, c_in, c_out, size, kernel, stride, padding, partitions, base,
                        residual, relu):
    """A layer with independently random integer parameters (edge shifts included)."""
    x = rng.integers(-128, 128, (c_in, *size), dtype=np.int8)
    w = rng.integers(-127, 128, (c_out, c_in, kernel, kernel), dtype=np.int8)
    scale = int(np.sqrt(c_in * kernel * kernel)) * 128 * 64
    mult = rng.integers(2**20, 2**31, c_out, dtype=np.int64)
    # shift so that one accumulator standard deviation lands near 40 (+-4x), mid-range int8
    spread = np.sqrt(c_in * kernel * kernel) * 74.0 * 74.0 + 1.0
    shift = np.round(np.log2(mult * spread / 40.0)) + rng.integers(-2, 3, c_out)
    shift = np.clip(shift, 0, 62).astype(np.int32)
    shift[rng.random(c_out) < 0.1] = 0
    shift[rng.random(c_out) < 0.1] = 62
    kw = {}
    if residual:
        kw = dict(residual=rng.integers(-128, 128, (c_out,) + size_out(size, kernel, stride,
                                                                          padding), dtype=np.int8),
                  res_mult=rng.integers(0, 2**31, c_out, dtype=np.int64).astype(np.int32),
                  res_shift=rng.integers(16, 40, c_out).astype(np.int32))
        kw["res_shift"][0] = 0
        kw["res_mult"][0] = rng.integers(0, 300)
    return Layer(
        x=x, w=w, bias=rng.integers(-scale, scale, c_out).astype(np.int32),
        thresh=rng.integers(-scale // 4, scale // 4, c_out).astype(np.int32) if partitions > 1
        else None,
        mult=mult.astype(np.int32), shift=shift,
        kernel=kernel, stride=stride, padding=padding, partitions=partitions, base=base,
        relu=relu, name="rand", **kw)


def size_out(size, k, s, p):
    return ((size[0] + 2 * p - k) // s + 1, (size[1] + 2 * p - k) // s + 1)


def _cases():
    """Every value of every option appears; combined pseudo-randomly, kept small for loops."""
    rng = np.random.default_rng(1234)
    cases = []
    for i, (k, stride, pad, p, base, residual, relu) in enumerate(itertools.product(
            (1, 3, 5, 7), (1, 2), (0, 1, 2, 3), (1, 2, 4, 8), ("group", "first"),
            (False, True), (False, True))):
        if rng.random() > 0.12:  # about 120 of the 1024 combinations
            continue
        c_in = p * int(rng.integers(1, 3))
        c_out = p * int(rng.integers(1, 3))
        h = max(1, k - 2 * pad) + int(rng.integers(0, 4))
        w = max(1, k - 2 * pad) + int(rng.integers(0, 5))
        cases.append(dict(c_in=c_in, c_out=c_out, size=(h, w), kernel=k, stride=stride,
                          padding=pad, partitions=p, base=base, residual=residual, relu=relu,
                          seed=i))
    return cases


CASES = _cases()


def test_case_coverage():
    """The case list really covers every option value, a 1x1 output map and non-square maps."""
    for key, values in (("kernel", {1, 3, 5, 7}), ("stride", {1, 2}), ("padding", {0, 1, 2, 3}),
                        ("partitions", {1, 2, 4, 8}), ("base", {"group", "first"}),
                        ("residual", {False, True}), ("relu", {False, True})):
        assert {c[key] for c in CASES} == values, key
    outs = [size_out(c["size"], c["kernel"], c["stride"], c["padding"]) for c in CASES]
    assert (1, 1) in outs
    assert any(h != w for h, w in outs)
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=lambda c: "k{kernel}s{stride}p{padding}P{partitions}"
                         "{base}{residual:d}{relu:d}_{size[0]}x{size[1]}".format(**c))
def test_reference_matches_loops(case):
    rng = np.random.default_rng(case.pop("seed"))
    layer = random_params_layer(rng, **case)
    assert overflow_bound(layer) < 2**31
    y, gate = run_reference(layer)
    y_loop, gate_loop = loop_reference(layer)
    np.testing.assert_array_equal(gate, gate_loop)
    np.testing.assert_array_equal(y, y_loop)
    assert y.dtype == np.int8 and gate.dtype == np.uint8
    y_dense, gate_dense = run_reference(layer, dense=True)
    np.testing.assert_array_equal(y_dense, loop_reference(layer, dense=True)[0])
    assert gate_dense.all()


@pytest.mark.parametrize("gate_rate", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("base", ["group", "first"])
def test_make_layer_gate_rate_and_refs(gate_rate, base):
    layer = make_layer(c_in=8, c_out=8, size=(7, 5), gate_rate=gate_rate, base=base, seed=3)
    y, gate = loop_reference(layer)
    np.testing.assert_array_equal(layer.y_ref, y)
    np.testing.assert_array_equal(layer.gate_ref, gate)
    assert abs(gate.mean() - gate_rate) < 0.1
    # the outputs are spread over the int8 range, not all clamped
    assert 0.05 < (y > 0).mean() < 0.95 and (y == 127).mean() < 0.05


def test_dense_is_reference_without_thresh():
    layer = make_layer(seed=5, residual=True)
    y_dense, _ = run_reference(layer, dense=True)
    y_nothresh, gate = run_reference(layer.replace(thresh=None))
    np.testing.assert_array_equal(y_dense, y_nothresh)
    assert gate.all()


def test_rescale_rounds_half_up_and_floors():
    v = np.array([-3, -2, -1, 0, 1, 2, 3])
    # v / 2 rounded half towards +infinity
    np.testing.assert_array_equal(rescale(v, 1, 1), [-1, -1, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(rescale(v, 3, 0), 3 * v)
    big = np.int64(2**31 - 1)
    assert rescale(big, 2**31 - 1, 62) == loop_rescale(2**31 - 1, 2**31 - 1, 62)


def test_base_mask_group_and_first():
    m = base_mask(4, 8, 2, "group")
    assert m[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and m[3].tolist() == [0] * 4 + [1] * 4
    f = base_mask(4, 8, 4, "first")
    assert all(row.tolist() == [1, 1, 0, 0, 0, 0, 0, 0] for row in f)
    assert base_mask(3, 5, 1, "group").all()


def test_work_figures_hand_computed():
    # 2 output channels, 1x1 kernel on a 2x2 map, 4 input channels, p = 2: base has 2 channels
    layer = make_layer(c_in=4, c_out=2, size=(2, 2), kernel=1, padding=0, partitions=2, seed=1)
    gate = np.zeros((2, 2, 2), np.uint8)
    gate[0, 0, 0] = gate[1, 1, 1] = 1
    fig = work_figures(layer, gate, rows=2, cols=2)
    assert fig["macs_dense"] == 8 * 4
    assert fig["macs_base"] == 8 * 2
    assert fig["macs_theory"] == 16 + 2 * 2
    assert fig["reduction"] == pytest.approx(32 / 20)
    assert fig["bound_cycles"] == 5
