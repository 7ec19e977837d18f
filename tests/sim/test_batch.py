"""Throughput mode (`sluice run-model --images N`): images stacked along the height of every
layer, on the RTL, bit for bit per image, with the cycle model exact on the stacked layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sluice.errors import SluiceError
from sluice.hw.params import HwParams
from sluice.model.intnet import IntNet
from sluice.model.reference import run_reference
from sluice.sim.batch import bind_batch, split
from sluice.sim.runner import simulator_missing


def test_stacked_rows_are_each_images_own(tiny_export):
    """Every layer, three images chained through the stacked layers: each image's rows of the
    stacked reference output are that image's own outputs and gates."""
    from sluice.hw.levers import sample_images

    net = IntNet(tiny_export)
    xs = sample_images(net, 3)
    assert np.array_equal(xs[0], net.layers[0][1].x)
    tensors = [{"input": x} for x in xs]
    own_t = [{"input": x} for x in xs]
    for e, layer in net.layers:
        big, rows = bind_batch(net, e, layer, tensors)
        assert big.h_out > 3 * layer.h_out  # separator rows between the images
        y, gate = run_reference(big)
        for i, (yi, gi) in enumerate(zip(split(y, rows), split(gate, rows))):
            y_own, g_own = run_reference(net.bind(e, layer, own_t[i]))
            np.testing.assert_array_equal(yi, y_own, err_msg=f"{e['name']} image {i}")
            np.testing.assert_array_equal(gi, g_own, err_msg=f"{e['name']} image {i}")
            tensors[i][e["name"]] = yi
            own_t[i][e["name"]] = y_own
    for t, x in zip(tensors, xs):
        assert np.array_equal(net.head(t), net.forward(x))


@pytest.mark.skipif(simulator_missing("icarus") is not None,
                    reason=str(simulator_missing("icarus")))
def test_run_model_images_on_rtl(tiny_export, tmp_path):
    """The whole tiny network, two images stacked, on a 4 x 4 array: bit-exact per image
    (outputs, gates, logits), the cycle model exact on every stacked layer, gated and dense."""
    from sluice.sim.model_run import run_model

    params = HwParams(rows=4, cols=4, skip_cols=2, act_depth=4096, wgt_depth=512,
                      pix_depth=256)
    s = run_model(tiny_export, tmp_path / "run", sim="icarus", params=params, images=2,
                  progress=lambda t: None)
    assert s["images"] == 2 and s["layers"] == len(IntNet(tiny_export).layers)
    assert s["bit_exact"], s["mismatches"]
    assert s["logits_exact"] and len(s["predicted"]) == 2
    from sluice.model.data import synthetic
    assert s["label"] == [int(v) for v in synthetic("test").labels[5:7]]
    assert s["correct"] == sum(p == lb for p, lb in zip(s["predicted"], s["label"]))
    rows = (tmp_path / "run" / "layers.csv").read_text().splitlines()[1:]
    assert len(rows) == s["layers"]
    for line in rows:
        f = line.split(",")
        assert f[3] == f[9] and f[4] == f[10], line  # RTL cycles == model (gated, dense)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["images"] == 2
    # the smaller maps ran in jobs of both images that skip the rows between them (IMG_ROWS,
    # IMG_GAP); the 16 x 16 ones, two of which the pixel buffers do not hold, an image a job
    from sluice.hw.levers import sample_runs
    from sluice.sim.host import layer_jobs
    net = IntNet(tiny_export)
    tensors = [t for t, _ in sample_runs(net, 2)]
    for e, layer in net.layers:
        big, _ = bind_batch(net, e, layer, tensors)
        imgs = [j.descriptor["IMG_ROWS"] for j in layer_jobs(big, params)]
        assert imgs == ([0, 0] if layer.h_out == 16 else [layer.h_out]), e["name"]


def test_run_model_images_errors(tiny_export, tmp_path):
    from sluice.sim.model_run import run_model

    with pytest.raises(SluiceError, match="--images: 0 must be at least 1"):
        run_model(tiny_export, tmp_path / "a", images=0, progress=lambda t: None)
    with pytest.raises(SluiceError, match="--images: 200 images from index 5 run past"):
        run_model(tiny_export, tmp_path / "b", images=200, progress=lambda t: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written
