"""Quantisation: the integer model equals the reference bit for bit; gates match the float."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sluice.model.gated import base_mask, is_gated
from sluice.model.layerfile import Layer
from sluice.model.quantize import (channel_spaces, equalise, graph, mult_shift, quantize,
                                   trace_float)
from sluice.model.reference import run_reference


@pytest.fixture(scope="module")
def calib(syn_train):
    return [x for x, _ in syn_train.batches(128)][:2]


@pytest.fixture(scope="module")
def qnet(gated_model, syn_train, calib):
    model, _ = gated_model
    return quantize(model, calib, input_scale=syn_train.scale, image_size=16)


def to_layer(L, x, residual=None):
    return Layer(x=x, w=L.w, bias=L.bias, mult=L.mult, shift=L.shift, kernel=L.kernel,
                 stride=L.stride, padding=L.padding, partitions=L.partitions if L.gated else 1,
                 base=L.base, relu=L.relu, name=L.name, thresh=L.thresh, residual=residual,
                 res_mult=L.res_mult, res_shift=L.res_shift)


def test_mult_shift_is_accurate():
    r = np.array([3e-4, 0.7, 1.0, 300.0, 1e-12, 0.0])
    m, s = mult_shift(r, "test")
    assert m.dtype == np.int32 and s.dtype == np.int32
    assert np.all(m >= 0) and np.all(s <= 62) and np.all(s >= 0)
    approx = m.astype(np.float64) / 2.0 ** s
    big = r > 1e-9
    assert np.all(np.abs(approx[big] - r[big]) / r[big] < 2.0 ** -29)
    assert m[-1] == 0


def test_every_layer_matches_reference_on_random_inputs(qnet):
    g = np.random.default_rng(1)
    shapes = {"input": (1, 16, 16)}
    for L in qnet.layers:
        c_in = L.w.shape[1]
        h = shapes[L.input][1]
        lo = -128 if L.input == "input" else 0
        x = g.integers(lo, 128, size=(3, c_in, h, h)).astype(np.int8)
        res = None
        h_out = (h + 2 * L.padding - L.kernel) // L.stride + 1
        shapes[L.name] = (L.w.shape[0], h_out, h_out)
        if L.residual is not None:
            res = g.integers(-128, 128, size=(3, L.w.shape[0], h_out, h_out)).astype(np.int8)
        y, gate = qnet.run_layer(L, torch.from_numpy(x).long(),
                                 None if res is None else torch.from_numpy(res).long())
        for n in range(3):
            y_ref, gate_ref = run_reference(to_layer(L, x[n], None if res is None else res[n]))
            assert np.array_equal(y[n].numpy().astype(np.int8), y_ref), L.name
            assert np.array_equal(gate[n].numpy().astype(np.uint8), gate_ref), L.name
        if L.gated:
            assert 0 < gate.float().mean() < 1, L.name


def test_integer_gate_agrees_with_float_gate_beyond_rounding(gated_model, qnet, syn_test,
                                                            calib):
    """``acc_b > thresh`` equals ``BN_noaffine(Yp) > Δ`` wherever the float margin exceeds the
    weight-rounding error bound, for the same (quantised) input (of the equalised network that
    was quantised)."""
    model = equalise(gated_model[0], calib)
    convs = {name: (conv, bn) for name, conv, bn, *_ in graph(model)[0]}
    rec = {}
    x_in = qnet.quantise_input(syn_test.images[:16])
    qnet.forward(x_in, record=rec)
    tensors = {"input": x_in}
    tensors.update({k: v[0] for k, v in rec.items()})
    checked = 0
    for L in qnet.layers:
        if not L.gated:
            continue
        conv, bn = convs[L.name]
        assert is_gated(conv)
        s_x = qnet.input_scale if L.input == "input" else \
            next(q.out_scale for q in qnet.layers if q.name == L.input)
        x = tensors[L.input].double()
        mask = base_mask(conv.out_channels, conv.in_channels, L.partitions, L.base)[:, :, None,
                                                                                    None]
        with torch.no_grad():
            y_base = F.conv2d(x * s_x, conv.weight.double() * mask, None, L.stride, L.padding)
            t = conv.threshold_float().double().view(1, -1, 1, 1)
            d_float = y_base > t
            s_bn = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double().view(1, -1, 1, 1)
            s_w = torch.from_numpy(L.w_scale).view(1, -1, 1, 1)
            # |error of acc_b * s_acc / s_bn| <= 0.5 s_w / s_bn * sum |x| s_x over the window
            bound = 0.5 * s_w / s_bn * F.conv2d(x.abs() * s_x, mask.double().expand_as(
                conv.weight).double(), None, L.stride, L.padding) + 2 * s_x * s_w / s_bn
        d_int = rec[L.name][1].bool()
        clear = (y_base - t).abs() > bound
        assert clear.float().mean() > 0.5
        assert torch.equal(d_int[clear], d_float[clear]), L.name
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("cin,k,groups", [(256, 3, 1), (40, 1, 1), (128, 3, 4), (8, 7, 2)])
def test_exact_conv_matches_int64(cin, k, groups):
    """Float32 chunks give the exact integer convolution, including the worst-case magnitude
    (every product 127 * 127, odd sums above 2^24) where one float32 sum would round."""
    from sluice.model.quantize import exact_conv
    g = torch.Generator().manual_seed(cin + k)
    x = torch.randint(-128, 128, (3, cin, 6, 5), generator=g)
    w = torch.randint(-127, 128, (8, cin // groups, k, k), generator=g)
    x[0] = 127
    x[0, 0, 2, 2] = 126  # makes the worst-case sums odd: not representable in float32 above 2^24
    w[:4] = 127
    want = torch.nn.functional.conv2d(x.double(), w.double(), None, 1, k // 2, 1, groups)
    got = exact_conv(x.double(), w.double(), 1, k // 2, groups)
    assert got.dtype == torch.int64
    assert torch.equal(got, want.round().to(torch.int64))
    if groups == 1 and cin * k * k > 1032:
        # Some exact result is odd and above 2^24, so no float32 result can hold it: the chunking
        # is needed (this no longer depends on the order in which the CPU backend sums).
        odd_big = (want.abs() > 2 ** 24) & (want.remainder(2) == 1)
        assert odd_big.any()
        one = torch.nn.functional.conv2d(x.float(), w.float(), None, 1, k // 2)
        assert not torch.equal(one.double(), want)


def _with_outlier_channel(model, factor=200.0):
    """An equivalent float network whose channel 0 of the stem's channel space is ``factor``
    times larger (its consumers' weights divided by ``factor``): the kind of outlier that
    training leaves behind (a near-constant channel used as a bias)."""
    import copy
    m = copy.deepcopy(model)
    g, feature = graph(m)
    space = next(s for s in channel_spaces(m) if "conv1" in s)
    with torch.no_grad():
        for name, conv, bn, inp, res, relu in g:
            if name in space:
                bn.weight[0] *= factor
                bn.bias[0] *= factor
            if inp in space:
                conv.weight[:, 0] /= factor
        if feature in space:
            m.fc.weight[:, 0] /= factor
    return m, space


def test_equalise_keeps_the_float_function_and_rescues_int8(gated_model, syn_train, syn_test,
                                                           calib):
    model = gated_model[0]
    x = syn_test.normalise(syn_test.images[:64])
    with torch.no_grad():
        want = model(x)
        out, space = _with_outlier_channel(model)
        t = trace_float(out, x)
        assert torch.allclose(out(x), want, atol=1e-3)  # same function ...
        assert float(t["conv1"][:, 0].abs().max()) > 20 * float(t["conv1"][:, 1:].abs().max())
        eq = equalise(out, calib)
        assert torch.allclose(eq(x), want, atol=1e-3)
        te = trace_float(eq, x)
        for name in space:  # ... and the outlier is gone from every tensor of its space
            assert float(te[name][:, 0].abs().max()) < 4 * float(te[name][:, 1:].abs().max())

    def int8_error(spread):
        q = quantize(out, calib, input_scale=syn_train.scale, image_size=16, spread=spread)
        logits = q.logits(q.forward(q.quantise_input(syn_test.images[:64])))
        return float((logits - want.double()).abs().mean())

    assert int8_error(2.0) < 0.5 * int8_error(None)


def _qnet_arrays(q):
    out = {"fc_w": q.fc_w, "fc_b": q.fc_b, "logit_scale": q.logit_scale}
    for L in q.layers:
        for k in ("w", "bias", "mult", "shift", "thresh", "res_mult", "res_shift"):
            if getattr(L, k) is not None:
                out[f"{L.name}.{k}"] = getattr(L, k)
    return out


def test_recorded_calibration_rebuilds_the_same_integer_network(gated_model, syn_train, calib,
                                                                tmp_path):
    """A calibration record (equalisation divisors and ranges, through its JSON file) makes
    `quantize` build the measured network bit for bit without any calibration image, also
    where the equalisation moved channels (the outlier model)."""
    from sluice.model.quantize import (calibration_json, calibration_record, read_calibration,
                                       weights_digest)

    settings = {"dataset": "synthetic", "calib": 256, "percentile": 99.99, "spread": 2.0}
    with torch.no_grad():
        out, _ = _with_outlier_channel(gated_model[0])
    for model in (gated_model[0], out):
        q = quantize(model, calib, input_scale=syn_train.scale, image_size=16)
        path = tmp_path / "m.calib.json"
        path.write_text(calibration_json(calibration_record(q, settings,
                                                           weights_digest(model))))
        rec = read_calibration(path, model)
        assert rec["settings"] == settings
        again = quantize(model, [], input_scale=syn_train.scale, image_size=16,
                         calibration=rec)
        a, b = _qnet_arrays(q), _qnet_arrays(again)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), k
        if model is out:
            assert rec["equalise"]  # the outlier's space was equalised, and recorded
        # ranges moved by a float32 rounding (as another machine's convolution kernels move
        # them) change the network: the record is what makes it reproducible
        moved = dict(rec, ranges={k: v * (1 + 2 ** -24) for k, v in rec["ranges"].items()})
        other = quantize(model, [], input_scale=syn_train.scale, image_size=16,
                         calibration=moved)
        assert any(not np.array_equal(a[k], v) for k, v in _qnet_arrays(other).items())


def test_read_calibration_rejects_bad_records(gated_model, syn_train, calib, tmp_path):
    """A broken calibration record is refused with one line naming the file and the field."""
    import json

    from sluice.errors import SluiceError
    from sluice.model.quantize import calibration_record, read_calibration, weights_digest

    model = gated_model[0]
    q = quantize(model, calib, input_scale=syn_train.scale, image_size=16)
    good = calibration_record(q, {"dataset": "synthetic"}, weights_digest(model))
    space = channel_spaces(model)[0][0]
    n = len(good["ranges"])
    cases = [
        ({"format": "x"}, "field 'format' is 'x'"),
        ({"ranges": None}, "field 'ranges' missing or not an object"),
        ({"weights": "0" * 64}, "field 'weights' does not match the checkpoint's weights"),
        ({"ranges": {**good["ranges"], "conv1": -1.0}}, "field 'ranges.conv1' is -1.0"),
        ({"ranges": {k: v for k, v in good["ranges"].items() if k != "input"}},
         "field 'ranges.input' is None"),
        ({"ranges": {**good["ranges"], "nope": 1.0}}, "field 'ranges.nope': no such tensor"),
        ({"equalise": {"nope": [1.0]}}, "field 'equalise.nope': not the first tensor"),
        ({"equalise": {space: [1.0]}}, f"field 'equalise.{space}': expected "),
        ({"equalise": {space: [0.5] * 8}}, "numbers of at least 1"),
    ]
    assert n > 10
    path = tmp_path / "bad.calib.json"
    for change, want in cases:
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(SluiceError) as e:
            read_calibration(path, model)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and want in msg and "\n" not in msg, msg
    path.write_text("{")
    with pytest.raises(SluiceError, match="not a readable calibration record"):
        read_calibration(path, model)
