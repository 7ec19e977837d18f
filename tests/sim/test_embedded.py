"""The embedded-default network's exported layers on the RTL, bit for bit.

`make test` runs a representative subset on Icarus (the stem, a 1x1 shortcut, and gated layers
of the 16x16 and 4x4 stages); `make test-full` runs the whole network layer by layer, chained
on the RTL's own outputs, with the final logits (Verilator when installed: Icarus takes many
minutes for the ~900k cycles).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from sluice.hw.cycle_model import predict
from sluice.hw.params import HwParams
from sluice.model.layerfile import read_result
from sluice.model.reference import run_reference
from sluice.sim.runner import RtlSim, simulator_missing

pytestmark = pytest.mark.skipif(simulator_missing("icarus") is not None,
                                reason=str(simulator_missing("icarus")))

SUBSET = ("conv1", "layer2.0.conv1", "layer3.0.downsample.0", "layer4.1.conv2")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from sluice.model import export
    from sluice.model.checkpoint import DEFAULT_CHECKPOINT

    out = tmp_path_factory.mktemp("embedded") / "export"
    export.run(argparse.Namespace(checkpoint=str(DEFAULT_CHECKPOINT), out=str(out), sample=0,
                                  calib=1000, percentile=99.99, data_dir=None, threads=1))
    return out


def test_embedded_layers_subset_bit_exact(export_dir, tmp_path):
    from sluice.model.intnet import IntNet

    net = IntNet(export_dir)
    chosen = [(e, layer) for e, layer in net.layers if layer.name in SUBSET]
    assert [layer.name for _, layer in chosen] == list(SUBSET)
    params = HwParams()
    runs = []
    for e, layer in chosen:
        runs.append(dict(layer=str(export_dir / e["file"]),
                         result=str(tmp_path / f"{layer.name}.result.npz")))
    RtlSim(params, "icarus").run(runs, workdir=tmp_path / "sim")
    for (e, layer), run in zip(chosen, runs):
        r = read_result(run["result"])
        np.testing.assert_array_equal(r.y, layer.y_ref, err_msg=layer.name)
        np.testing.assert_array_equal(r.gate, layer.gate_ref, err_msg=layer.name)
        assert r.cycles == predict(layer, r.gate, params)["cycles"], layer.name


@pytest.mark.slow
def test_embedded_network_full(export_dir, tmp_path):
    from sluice.sim.model_run import run_model

    sim = "verilator" if simulator_missing("verilator") is None else "icarus"
    s = run_model(export_dir, tmp_path / "run", sim=sim, progress=lambda t: None)
    assert s["layers"] == 20
    assert s["bit_exact"], s["mismatches"]
    assert s["logits_exact"]
    assert s["predicted"] == s["label"] == 9  # test image 0, an ankle boot


def test_export_layers_reproduce_refs(export_dir):
    """The exported files themselves agree with the reference (the oracle the RTL is held to)."""
    from sluice.model.intnet import IntNet

    for e, layer in IntNet(export_dir).layers:
        y, gate = run_reference(layer)
        assert np.array_equal(y, layer.y_ref) and np.array_equal(gate, layer.gate_ref), e["file"]


def test_predict_network_is_the_per_layer_model(export_dir, capsys):
    """`sluice cycles EXPORT`: every layer predicted on the integer network's own inputs (the
    exported layers' inputs, so the exported gates), totals as SPEC section 3; a 2x2 array
    with 1-column skip groups realises more of the reduction than the default 8x8 (the bench's
    array-shape table)."""
    from sluice.cli import main
    from sluice.model.intnet import IntNet
    from sluice.model.reference import work_figures
    from sluice.sim.model_run import bind_export, predict_network

    params = HwParams()
    bound = bind_export(export_dir)
    net = predict_network(bound, params)
    layers = IntNet(export_dir).layers
    assert len(net["layers"]) == len(layers) == 20
    dense_sum = theory_sum = 0
    for row, (_, layer) in zip(net["layers"], layers):
        assert row["layer"] == layer.name
        dense = predict(layer, None, params, dense=True)["cycles"]
        gated = predict(layer, layer.gate_ref, params)["cycles"] if layer.gated else dense
        assert (row["cycles_dense"], row["cycles_gated"]) == (dense, gated), layer.name
        fig = work_figures(layer, layer.gate_ref)
        dense_sum += fig["macs_dense"]
        theory_sum += fig["macs_theory"]
    assert net["cycles_gated"] == sum(r["cycles_gated"] for r in net["layers"])
    assert net["reduction"] == pytest.approx(dense_sum / theory_sum)
    assert net["efficiency"] == pytest.approx(
        net["cycles_dense"] / net["cycles_gated"] / net["reduction"])
    small = predict_network(bound, HwParams(rows=2, cols=2, skip_cols=1))
    assert small["reduction"] == net["reduction"]
    assert small["efficiency"] > net["efficiency"] + 0.1

    # the loss terms account for every gated cycle, packing for its two parts
    from sluice.hw.cycle_model import LOSS_TERMS
    assert sum(net["loss_" + t] for t in LOSS_TERMS) == pytest.approx(net["cycles_gated"])
    assert net["loss_partial_pass"] + net["loss_lockstep"] == pytest.approx(net["loss_packing"])
    # the overhead term is the loads and stalls; the bound takes them out of both runs
    from sluice.hw.commands import overhead_bound
    assert net["load_gated"] + net["stall_gated"] == net["loss_overhead"]
    dense_runs = [predict(layer, None, params, dense=True) for _, layer in layers]
    assert net["load_dense"] == sum(r["load_cycles"] for r in dense_runs)
    assert net["stall_dense"] == sum(r["stall_cycles"] for r in dense_runs)
    bound_all = ((net["cycles_dense"] - net["load_dense"] - net["stall_dense"])
                 / (net["cycles_gated"] - net["loss_overhead"]) / net["reduction"])
    assert overhead_bound(net, ("load", "stall")) == pytest.approx(bound_all)
    assert net["efficiency"] < overhead_bound(net, ("load",)) < bound_all

    assert main(["cycles", str(export_dir)]) == 0
    out = capsys.readouterr().out
    assert f"gated {net['cycles_gated']}, speedup {net['speedup']:.3f}" in out
    pack = 100 * net["loss_packing"] / net["cycles_gated"]
    assert f"packing {pack:.1f}% (partial passes" in out
    assert f"efficiency without them in either run {bound_all:.3f}" in out
    # the row slices: the gated runs' sliced passes, summed from the model's per-layer count
    gated_runs = [predict(layer, layer.gate_ref, params) for _, layer in layers if layer.gated]
    sliced = sum(r["sliced_passes"] for r in gated_runs)
    assert 0 < sliced < net["passes_gated"] and net["sliced_gated"] == sliced
    assert f"row slices: {sliced} of the gated run's {net['passes_gated']} passes" in out
    assert main(["cycles", str(export_dir), "--dense"]) == 2
    assert "--dense: applies to a layer file" in capsys.readouterr().err

    # --images N: N test images each alone, the sample first, summed
    from sluice.hw.commands import network_cycles
    from sluice.hw.levers import sample_images
    x1 = sample_images(IntNet(export_dir), 2)[1]
    assert not np.array_equal(x1, layers[0][1].x)
    second = predict_network(bind_export(export_dir, x1), params)
    both = network_cycles(export_dir, params, images=2)
    for k in ("cycles_gated", "cycles_dense", "macs_dense", "macs_theory"):
        assert both[k] == net[k] + second[k], k
    assert both["efficiency"] == pytest.approx(
        both["cycles_dense"] / both["cycles_gated"] * both["macs_theory"] / both["macs_dense"])
    assert main(["cycles", str(export_dir), "--images", "2"]) == 0
    assert f"gated {both['cycles_gated']}," in capsys.readouterr().out
    assert main(["cycles", str(export_dir), "--images", "0"]) == 2
    assert "--images: 0 must be at least 1" in capsys.readouterr().err
    # --stacked: the same images stacked, one run per layer (the throughput mode), as
    # levers.study counts it; the same work, fewer cycles
    from sluice.hw.levers import sample_runs, study
    st = network_cycles(export_dir, params, images=2, stacked=True)
    ref = study(IntNet(export_dir), sample_runs(IntNet(export_dir), 2), params)
    assert (st["cycles_gated"], st["cycles_dense"]) == (ref["lockstep"], ref["dense"])
    assert (st["macs_dense"], st["macs_theory"]) == (both["macs_dense"], both["macs_theory"])
    assert st["cycles_gated"] < both["cycles_gated"]
    assert main(["cycles", str(export_dir), "--images", "2", "--stacked"]) == 0
    out = capsys.readouterr().out
    assert "2 images stacked" in out and f"gated {st['cycles_gated']}," in out
