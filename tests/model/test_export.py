"""Export: files pass the SPEC readers, reproduce y_ref/gate_ref, and the chained integer
network (reference only) gives exactly the quantised PyTorch model's logits."""

import json

import numpy as np
import pytest
import torch

from sluice.errors import SluiceError
from sluice.model.data import FASHION_MNIST_DIR
from sluice.model.export import export_qnet
from sluice.model.intnet import IntNet, check_export
from sluice.model.layerfile import read_layer
from sluice.model.quantize import quantize
from sluice.model.reference import run_reference


@pytest.fixture(scope="module")
def exported(gated_model, syn_train, syn_test, tmp_path_factory):
    model, _ = gated_model
    batches = [x for x, _ in syn_train.batches(128)][:2]
    qnet = quantize(model, batches, input_scale=syn_train.scale, image_size=16)
    out = tmp_path_factory.mktemp("export")
    manifest = export_qnet(qnet, out, sample_u8=syn_test.images[3],
                           sample_info={"dataset": "synthetic", "index": 3})
    return qnet, out, manifest


def test_files_pass_readers_and_reproduce_refs(exported):
    qnet, out, manifest = exported
    files = sorted(p.name for p in out.glob("*.layer.npz"))
    assert files == [e["file"] for e in manifest["layers"]]  # order obvious from names
    assert files[0].startswith("00_conv1") and "downsample" in " ".join(files)
    for e in manifest["layers"]:
        layer = read_layer(out / e["file"])
        assert layer.name == e["name"]
        assert layer.gated == e["gated"]
        y, gate = run_reference(layer)
        assert np.array_equal(y, layer.y_ref) and np.array_equal(gate, layer.gate_ref)
        assert (layer.residual is not None) == (e["residual"] is not None)
    assert sum(e["gated"] for e in manifest["layers"]) == 16
    check_export(out)


def test_intnet_equals_quantised_torch_model_on_random_inputs(exported):
    qnet, out, _ = exported
    net = IntNet(out)
    g = torch.Generator().manual_seed(5)
    u8 = torch.randint(0, 256, (4, 1, 16, 16), generator=g, dtype=torch.uint8)
    x = qnet.quantise_input(u8)
    rec_t = {}
    logits_t = qnet.forward(x, record=rec_t)
    for n in range(4):
        rec_r = {}
        logits_r = net.forward(net.quantise_input(u8[n].numpy()), record=rec_r)
        assert logits_r.tolist() == logits_t[n].tolist()
        for name, (y, gate) in rec_r.items():
            assert np.array_equal(y, rec_t[name][0][n].numpy().astype(np.int8)), name
            assert np.array_equal(gate, rec_t[name][1][n].numpy().astype(np.uint8)), name
        assert np.allclose(net.logits(logits_r), qnet.logits(logits_t[n:n + 1])[0].numpy())


def test_manifest_describes_wiring_input_and_classifier(exported):
    _, out, manifest = exported
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "sluice.model/1"
    names = [e["name"] for e in m["layers"]]
    for e in m["layers"]:
        assert e["input"] == "input" or names.index(e["input"]) < e["index"]
    ds = [e for e in m["layers"] if e["name"] == "layer2.0.conv2"][0]
    assert ds["residual"] == "layer2.0.downsample.0"
    assert m["input"]["pixel_offset"] == 128 and m["classifier"]["arithmetic"].startswith("int")
    assert m["sample"]["index"] == 3 and len(m["sample"]["logits_acc"]) == 4


def test_broken_export_is_a_clear_error(exported, tmp_path):
    _, out, _ = exported
    with pytest.raises(SluiceError, match="manifest.json: missing"):
        IntNet(tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    m["format"] = "other/9"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SluiceError, match="field 'format'"):
        IntNet(tmp_path)


def test_export_failing_half_way_leaves_no_manifest(exported, tmp_path, monkeypatch):
    # an earlier export in the folder, then a new one that fails at its third layer file:
    # no manifest is left to pair the old wiring with the new layer files
    import shutil

    import sluice.model.layerfile as layerfile
    qnet, out, _ = exported
    shutil.copytree(out, tmp_path / "exp")
    written = []
    real = layerfile.write_layer

    def failing(path, layer):
        if len(written) == 2:
            raise OSError(28, "No space left on device", str(path))
        written.append(path)
        real(path, layer)

    monkeypatch.setattr(layerfile, "write_layer", failing)
    with pytest.raises(OSError):
        export_qnet(qnet, tmp_path / "exp", sample_u8=np.zeros((1, 16, 16), np.uint8),
                    sample_info={})
    assert len(written) == 2 and not (tmp_path / "exp" / "manifest.json").exists()
    with pytest.raises(SluiceError, match="manifest.json: missing"):
        IntNet(tmp_path / "exp")


def test_near_dead_channel_still_fits_int32(syn_train, syn_test, tmp_path):
    """A BN scale near zero (here 1e-6) must not blow bias/residual up past
    the SPEC int32 bound: the exporter floors that channel's weight scale."""
    from conftest import make_gated
    model, _ = make_gated(syn_train, seed=3)
    with torch.no_grad():
        model.layer1[0].bn2.weight[0] = 1e-6
        model.layer1[0].bn2.bias[0] = 0.5
    batches = [x for x, _ in syn_train.batches(128)][:2]
    qnet = quantize(model, batches, input_scale=syn_train.scale, image_size=16)
    export_qnet(qnet, tmp_path, sample_u8=syn_test.images[0], sample_info={})
    check_export(tmp_path)


def test_levers_study_stacks_images_exactly(exported):
    """``python -m sluice.hw.levers``: one image gives exactly the cycle model on the exported
    layers (what ``sluice cycles EXPORT_DIR`` reports); stacked images reproduce every image's
    own outputs in their rows (checked inside ``study``), and the independent-groups estimate
    never exceeds the lockstep count."""
    from sluice.hw.cycle_model import predict
    from sluice.hw.levers import sample_runs, study
    from sluice.hw.params import HwParams
    from sluice.model.reference import work_figures

    _, out, _ = exported
    net = IntNet(out)
    params = HwParams(rows=4, cols=4, skip_cols=2)
    runs = sample_runs(net, 3)
    one = study(net, runs[:1], params)
    dense = gated = md = mt = 0
    for _, layer in net.layers:
        dense += predict(layer, None, params, dense=True)["cycles"]
        gated += predict(layer, layer.gate_ref, params, dense=not layer.gated)["cycles"]
        fig = work_figures(layer, layer.gate_ref if layer.gated
                           else np.ones(layer.out_shape, np.uint8))
        md, mt = md + fig["macs_dense"], mt + fig["macs_theory"]
    assert (one["dense"], one["lockstep"]) == (dense, gated)
    assert one["reduction"] == pytest.approx(md / mt, rel=1e-12)
    assert (one["alone"], one["dense_alone"]) == (gated, dense)
    three = study(net, runs, params)
    assert three["images"] == 3 and three["dense"] > 2 * dense
    # each image alone: the dense cycles do not depend on the data; stacked, the jobs skip
    # the rows between the images, so the stacked dense run is never longer
    assert three["dense_alone"] == 3 * dense and three["dense"] <= three["dense_alone"]
    for r in (one, three):
        assert r["independent"] <= r["lockstep"] and r["paired"] <= r["lockstep"]
        assert r["sliced"] <= r["lockstep"] and r["shared"] <= r["lockstep"]
    # one post-processing unit for all columns: the drain takes `cols` cycles per row
    shared = study(net, runs[:1], HwParams(rows=4, cols=4, skip_cols=2, post_cols=4))
    assert shared["dense"] > one["dense"] and shared["lockstep"] > one["lockstep"]


def test_paired_passes_by_hand():
    """Two channel tiles sharing their conditional passes on half the rows each."""
    from sluice.hw.levers import paired_passes
    from sluice.hw.params import HwParams

    p = HwParams(rows=4, cols=4, skip_cols=2, row_slices=2)
    gate = np.zeros((12, 3, 3), np.uint8)  # three tiles of four channels, 9 pixels
    gate[0, 0, :2] = 1  # tile 0: busiest group 2 pixels -> 1 pass alone
    gate[6, 1, :] = 1  # tile 1: busiest group 3 pixels -> 1 pass; shared: ceil(3 / 2) = 2
    gate[8].flat[:5] = 1  # tile 2: 5 pixels -> 2 passes
    assert paired_passes(gate, p) == (4, 4)  # pairing tiles 0 and 1 saves nothing
    gate[6, 1, 2] = 0  # tile 1: 2 pixels: tiles 0 and 1 share one pass
    assert paired_passes(gate, p) == (4, 3)
    gate[9].flat[:4] = 1  # tile 2's other group: still 5 at most; the last tile runs alone
    assert paired_passes(gate, p) == (4, 3)
    # 3 x 3 kernels: the hardware slices a last pass with at most 2 pixels per group (two
    # channel slices, half the steps): tiles 0 and 1 take 1/2 each alone, as much as one
    # pass together, so pairing gains nothing; tile 2 takes 1 + 1/2
    assert paired_passes(gate, p, kernel=3) == pytest.approx((2.5, 2.5))
    # three slices (rows // 4 = 1 pixel per group): tile 2's last pass takes 1/3
    p3 = HwParams(rows=4, cols=4, skip_cols=2, row_slices=3)
    assert paired_passes(gate, p3, kernel=3) == pytest.approx((1 + 4 / 3, 1 + 4 / 3))


def test_search_costs_passes_in_exact_sixths():
    """The column-order search compares pass counts as integers: whole passes, a two-slice
    last pass as half of one, a three-slice one as a third (the cycle model's pass_time)."""
    from sluice.hw.cycle_model import pass_time
    from sluice.hw.levers import pass_cost_table
    from sluice.hw.params import HwParams

    p = HwParams(rows=8, row_slices=3)  # two slices up to 4 pixels, three up to 2 (3 x 3)
    table = pass_cost_table(3, p, 20)
    assert list(table[:10]) == [0, 2, 2, 3, 3, 6, 6, 6, 6, 8]
    assert list(table[17:]) == [14, 14, 15, 15]  # 17, 18 pixels: 2 + 1/3 passes; 19, 20: 2 + 1/2
    assert all(table[n] == 6 * pass_time(n, 3, p) for n in range(21))
    assert list(pass_cost_table(5, p, 5)) == [0, 3, 3, 3, 3, 6]  # 5 x 5: two slices at most
    assert list(pass_cost_table(1, p, 9)) == [0] + [6] * 8 + [12]  # 1 x 1: never sliced


def test_shared_passes_by_hand():
    """A tile's skip groups taking whole passes of each other's lists."""
    from sluice.hw.levers import shared_passes
    from sluice.hw.params import HwParams

    p = HwParams(rows=2, cols=4, skip_cols=1, row_slices=1)  # four one-column groups
    gate = np.zeros((8, 3, 3), np.uint8)  # two tiles of four channels, 9 pixels
    gate[0].flat[:7] = 1  # tile 0: group 0 has 7 pixels: 4 passes alone
    gate[1].flat[:1] = 1  # group 1: 1 pixel, 1 pass; together 5 passes on 4 groups: 2
    gate[5].flat[:3] = 1  # tile 1: group 1 has 3 pixels: 2 passes; with group 2's 2 pixels
    gate[6].flat[:2] = 1  # (1 pass) 3 passes on 4 groups: 1
    assert shared_passes(gate, p) == (6, 3)
    gate[4:8] = 1  # tile 1: every group 9 pixels, 5 passes each: sharing gains nothing
    assert shared_passes(gate, p) == (9, 7)
    # a last pass the hardware slices counts its share where sharing is not shorter
    p2 = HwParams(rows=2, cols=4, skip_cols=1, row_slices=2)
    gate[:] = 0
    gate[0].flat[:1] = 1  # one pixel: a sliced pass, half the steps, shorter than 1
    assert shared_passes(gate, p2, kernel=3) == pytest.approx((1 / 2, 1 / 2))


def test_lever_estimates_count_the_host_column_order(exported):
    """The lever estimates count the skip groups as the host lays the columns out: a layer's
    column order permutes the gate bits they see (as the cycle model's job bands do), odd
    base groups get padding columns whose gates are off."""
    from sluice.hw.levers import _tile_items, layer_tiles
    from sluice.hw.params import HwParams

    _, out, _ = exported
    p = HwParams(rows=4, cols=4, skip_cols=2)
    layer = next(l for _, l in IntNet(out).layers if l.gated and l.c_out >= 16)
    gate = np.zeros((layer.c_out, 2, 3), np.uint8)
    gate[0, 0, :2] = gate[1, 1, :] = gate[2, :, 0] = 1
    gc = layer.c_out // layer.partitions
    order = np.concatenate([np.arange(g * gc, (g + 1) * gc)[::-1]
                            for g in range(layer.partitions)])
    assert layer_tiles(layer, gate, p) == _tile_items(gate, p)  # as exported
    ordered = layer.replace(column_order=order)
    assert layer_tiles(ordered, gate, p) == _tile_items(gate[order], p)
    assert layer_tiles(ordered, gate, p) != layer_tiles(layer, gate, p)
    # base groups of three channels: each padded to four columns, the padding never active
    from sluice.model.randlayer import make_layer
    odd = make_layer(c_in=8, c_out=6, size=(2, 3), partitions=2)
    g6 = np.ones((6, 2, 3), np.uint8)
    host = np.zeros((8, 2, 3), np.uint8)
    host[[0, 1, 2, 4, 5, 6]] = 1
    assert layer_tiles(odd, g6, p) == _tile_items(host, p) == [[6, 6], [6, 6]]


def test_decoupled_passes_by_hand():
    """Skip groups each running their own tile sequence behind the loader's two banks."""
    from sluice.hw.levers import _group_passes, decoupled_passes
    from sluice.hw.params import HwParams

    p = HwParams(rows=2, cols=4, skip_cols=2, row_slices=1)  # two groups per tile
    tiles = [[4, 2], [2, 4]]  # passes (2, 1) then (1, 2)
    # a base pass per tile, banks always full: lockstep 3 + 3, decoupled each group 2 + 3
    assert decoupled_passes(tiles, p, 1, base=1, load=0) == (6, 5)
    # a slow loader (10 passes a bank) sets the pace: nothing to gain
    assert decoupled_passes(tiles, p, 1, base=1, load=10) == (23, 23)
    # three tiles, a bank refilled once every group has left the tile two before
    three = [[4, 2], [2, 2], [2, 4]]
    assert decoupled_passes(three, p, 1, base=0, load=1) == (6, 6)
    assert decoupled_passes(three, p, 1, base=0, load=1, banks=3) == (6, 5)
    # no loader and no base phase: lockstep and independent groups exactly
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(0, 9, size=(6, 2)).tolist()
        assert decoupled_passes(t, p, 1, 0, 0, banks=6) == _group_passes(t, p, 1)


def test_sliced_passes_by_hand():
    """A tile's last conditional pass on row slices where every group has few pixels left."""
    from sluice.hw.levers import sliced_passes
    from sluice.hw.params import HwParams

    p = HwParams(rows=8, cols=4, skip_cols=2)
    gate = np.zeros((12, 4, 4), np.uint8)  # three tiles of four channels, 16 pixels
    gate[0, 0, :2] = 1  # tile 0: busiest group 2 pixels: 4 slices of 2 rows
    gate[2].flat[:3] = 1  # tile 0's other group: 3 pixels, so 2 slices of 4 rows
    gate[5].flat[:9] = 1  # tile 1: 9 pixels: a full pass, then 1 pixel: 8 slices
    gate[8].flat[:5] = 1  # tile 2: 5 pixels: one pass, not sliced
    assert sliced_passes(gate, p, max_slices=8) == [2, 8, 1]
    assert sliced_passes(gate, p) == [2, 2, 1]  # by default two slices at most
    gate[4:8] = 0  # a tile without active pixels has no conditional pass
    assert sliced_passes(gate, p, max_slices=8) == [2, 1]


def test_channel_order_study(exported):
    """`python -m sluice.hw.levers --channel-order N`: the orders are permutations that keep a
    channel in its base group (within) or keep skip-group pairs of one base group together
    (across); "as exported" is the cycle model on each image's own gates."""
    from sluice.hw.cycle_model import predict
    from sluice.hw.levers import ORDERS, channel_order, order_study, sample_runs
    from sluice.hw.params import HwParams

    rate = np.array([0.1, 0.5, 0.0, 0.3, 0.9, 0.2, 0.4, 0.05])
    within = channel_order(rate, 2, 2, across=False)
    assert list(within) == [1, 3, 0, 2, 4, 6, 5, 7]
    across = channel_order(rate, 2, 2, across=True)
    assert sorted(across) == list(range(8))
    assert [tuple(p) for p in across.reshape(-1, 2)] == [(4, 6), (1, 3), (5, 7), (0, 2)]

    _, out, _ = exported
    net = IntNet(out)
    params = HwParams(rows=4, cols=4, skip_cols=2)
    runs = sample_runs(net, 2)
    o = order_study(net, runs, sample_runs(net, 3), params)
    plain = sum(predict(layer, g[e["name"]], params, dense=not layer.gated)["cycles"]
                for e, layer in net.layers for _, g in runs)
    assert o["as exported"] == plain
    assert set(o) == {"dense", *ORDERS} and all(o[k] > 0 for k in ORDERS)


def test_searched_channel_order():
    """`levers.searched_order`: a permutation that keeps every channel in its base group, and
    on gates where channels fire on either the top or the bottom half of the map, it pairs
    channels of the same half (each skip group then has half the pixels: two passes a tile
    instead of four)."""
    from sluice.hw.cycle_model import pass_time
    from sluice.hw.levers import searched_order
    from sluice.hw.params import HwParams
    from sluice.model.randlayer import make_layer

    params = HwParams(rows=4, cols=4, skip_cols=2, row_slices=1)
    layer = make_layer(c_in=8, c_out=8, size=(4, 4), kernel=3, partitions=2)
    gate = np.zeros((8, 4, 4), np.uint8)
    gate[[0, 2, 5, 6], :2] = 1  # the top half
    gate[[1, 3, 4, 7], 2:] = 1  # the bottom half
    order = searched_order([gate], layer, params=params, iters=200)
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:]) == [4, 5, 6, 7]
    assert {frozenset(order[i:i + 2]) for i in range(0, 8, 2)} == {
        frozenset(p) for p in ((0, 2), (1, 3), (5, 6), (4, 7))}

    def passes(o):
        a = gate.reshape(8, -1)[o]
        return sum(max(pass_time(int(a[t + j:t + j + 2].any(axis=0).sum()), 3, params)
                       for j in (0, 2)) for t in (0, 4))
    assert passes(order) < passes(np.arange(8))
    # no search: as exported
    assert list(searched_order([gate], layer, params, iters=0)) == list(range(8))
    # base groups of 3 channels are laid out padded to 4 columns (two skip groups each, the
    # second with a padding column): the two top-half channels share the first skip group
    odd = np.zeros((6, 4, 4), np.uint8)
    odd[[0, 2, 4], :2] = 1
    odd[[1, 3, 5], 2:] = 1
    order = searched_order([odd], make_layer(c_in=8, c_out=6, size=(4, 4), kernel=3,
                                             partitions=2), params=params, iters=200)
    assert set(order[:2]) == {0, 2} and order[2] == 1
    assert set(order[3:5]) == {3, 5} and order[5] == 4


def test_channel_order_option_errors(exported, capsys):
    from sluice.hw.levers import main

    _, out, _ = exported
    assert main([str(out), "--images", "1", "--channel-order", "-1"]) == 2
    assert "--channel-order: -1 must be at least 0" in capsys.readouterr().err
    assert main([str(out), "--images", "1", "--slices", "3"]) == 2
    assert "--slices: 3 must be a power of two" in capsys.readouterr().err
    assert main([str(out), "--images", "1", "--channel-order", "9999"]) == 2
    assert "--channel-order: 9999 images from index 0 run past" in capsys.readouterr().err
    # base groups of 2 channels (width 8, p = 4) are not whole 4-column skip groups
    assert main([str(out), "--images", "1", "--rows", "4", "--cols", "4", "--skip-cols", "4",
                 "--channel-order", "2"]) == 2
    assert "are not whole skip groups of 4" in capsys.readouterr().err


def test_column_order_command(exported, tmp_path, capsys):
    """`sluice column-order EXPORT`: every gated layer gets an order in the manifest that keeps
    its channels in their base groups; the network computes the same logits; the cycle model
    uses the orders; `--clear` removes them; a broken order in the manifest is one line naming
    the layer and the field, exit 2."""
    import json
    import shutil

    from sluice.cli import main
    from sluice.hw.params import HwParams
    from sluice.sim.model_run import bind_export, predict_network

    _, out, _ = exported
    ex = tmp_path / "ex"
    shutil.copytree(out, ex)
    params = HwParams(rows=4, cols=4, skip_cols=2)
    before = predict_network(bind_export(ex), params)["cycles_gated"]
    assert main(["column-order", str(ex), "--calib", "4", "--iters", "300", "--rows", "4",
                 "--cols", "4"]) == 0
    assert "column orders for 16 gated layers" in capsys.readouterr().out
    # a single layer file of the export runs as exported, and says so
    entry = next(e for e in json.loads((ex / "manifest.json").read_text())["layers"]
                 if e["gated"])
    for dense, said in (([], True), (["--dense"], False)):
        assert main(["run-layer", str(ex / entry["file"]), "-o", str(tmp_path / "r.result.npz"),
                     "--sim", "reference"] + dense) == 0
        note = f"gives {entry['name']} a host column order; run-layer runs the layer file"
        assert (note in capsys.readouterr().out) == said
    assert main(["cycles", str(ex), "--rows", "4", "--cols", "4"]) == 0
    assert ("gated layers in the host column order fitted to the first 4 training images for "
            f"{params.summary()}") in capsys.readouterr().out.splitlines()[0]
    manifest = json.loads((ex / "manifest.json").read_text())
    assert manifest["column_order_info"]["instance"] == params.summary()
    net = IntNet(ex)
    moved = 0
    for e, layer in net.layers:
        assert (e.get("column_order") is not None) == layer.gated
        if layer.gated:
            gc = layer.c_out // layer.partitions
            assert sorted(layer.column_order) == list(range(layer.c_out))
            assert all(c // gc == n // gc for n, c in enumerate(layer.column_order))
            moved += int((layer.column_order != np.arange(layer.c_out)).sum())
    assert moved > 0
    x = IntNet(out).layers[0][1].x
    assert np.array_equal(net.forward(x), IntNet(out).forward(x))
    after = predict_network(bind_export(ex), params)["cycles_gated"]
    assert after != before  # the model schedules the orders
    assert main(["column-order", str(ex), "--clear"]) == 0
    assert predict_network(bind_export(ex), params)["cycles_gated"] == before
    assert "column_order_info" not in json.loads((ex / "manifest.json").read_text())
    capsys.readouterr()
    # a channel moved across base groups: refused, naming the layer and the field
    entry = next(e for e in manifest["layers"] if e["gated"])
    order = entry["column_order"]
    order[0], order[-1] = order[-1], order[0]
    (ex / "manifest.json").write_text(json.dumps(manifest))
    assert main(["cycles", str(ex)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"layer {entry['name']}: field 'column_order'" in err
    assert "leaves its base group" in err
    for bad, what in (([0, 1], "integers (one per output channel)"), ("x", "integers"),
                      ([0] * len(order), "not a permutation")):
        entry["column_order"] = bad
        (ex / "manifest.json").write_text(json.dumps(manifest))
        assert main(["cycles", str(ex)]) == 2
        assert "field 'column_order': " in (err := capsys.readouterr().err) and what in err
    entry.pop("column_order")
    plain = next(e for e in manifest["layers"] if not e["gated"])
    plain["column_order"] = list(range(16))
    (ex / "manifest.json").write_text(json.dumps(manifest))
    assert main(["cycles", str(ex)]) == 2
    assert "only a gated layer has one" in capsys.readouterr().err
    assert main(["column-order", str(ex), "--clear"]) == 0  # mends it
    assert predict_network(bind_export(ex), params)["cycles_gated"] == before
    assert main(["column-order", str(ex), "--calib", "0"]) == 2
    assert "--calib: 0 must be at least 1" in capsys.readouterr().err
    for dense in (["--dense-only"], ["--board", "icebreaker"]):
        assert main(["column-order", str(ex)] + dense) == 2
        assert "a dense-only instance runs no gated layer" in capsys.readouterr().err


def test_demo_column_order_step(exported, tmp_path):
    """`sluice demo`'s column-order step (the default): the orders (the command's defaults) go
    into a copy of the export, export-ordered/, which the RTL run reads from then on; the
    export stays as exported, and its cycle-model figures are kept for the report."""
    import argparse
    import filecmp
    import json
    import shutil

    from sluice.demo import Demo
    from sluice.hw.commands import ORDER_CALIB, network_cycles

    _, out, _ = exported
    demo = Demo(argparse.Namespace(out=str(tmp_path / "demo"), rows=4, cols=4,
                                   column_order=True))
    demo.export_dir = demo.run_dir = tmp_path / "ex"
    shutil.copytree(out, demo.export_dir)
    demo.column_order()
    ordered = tmp_path / "demo" / "export-ordered"
    assert demo.run_dir == ordered
    info = json.loads((ordered / "manifest.json").read_text())["column_order_info"]
    assert demo.facts["column_order"] == info
    assert info["calibration"] == f"first {ORDER_CALIB} training images"
    assert info["instance"] == demo.params.summary()
    assert all((layer.column_order is not None) == layer.gated
               for _, layer in IntNet(ordered).layers)
    assert filecmp.cmp(out / "manifest.json", demo.export_dir / "manifest.json", shallow=False)
    plain, fitted = (network_cycles(d, demo.params) for d in (demo.export_dir, ordered))
    assert demo.facts["as_exported"]["cycles_gated"] == plain["cycles_gated"]
    assert demo.facts["as_exported"]["efficiency"] == plain["efficiency"]
    assert fitted["cycles_gated"] != plain["cycles_gated"]
    assert "as exported, without the column order: " in demo._as_exported()


def test_demo_throughput_figures(exported, tmp_path):
    """`sluice demo`'s throughput line (cycle model): the sample image and the next seven
    stacked against the same eight images each alone, the latter what `sluice cycles EXPORT
    --images 8` reports."""
    import argparse

    from sluice.demo import THROUGHPUT_IMAGES, Demo
    from sluice.hw.commands import network_cycles

    _, out, _ = exported
    demo = Demo(argparse.Namespace(out=str(tmp_path / "demo"), rows=4, cols=4,
                                   column_order=True))
    demo.run_dir = out
    demo.say = lambda text: None
    demo.throughput()
    t = demo.facts["throughput"]
    alone = network_cycles(out, demo.params, THROUGHPUT_IMAGES)
    assert t["images"] == THROUGHPUT_IMAGES == 8
    assert t["alone_per_image"] * 8 == alone["cycles_gated"]
    assert t["efficiency_alone"] == pytest.approx(alone["efficiency"], rel=1e-12)
    assert t["gated_per_image"] < t["alone_per_image"]  # stacking fills the passes
    assert "8 test images stacked" in demo._throughput_text()


def test_column_order_into_a_copy(exported, tmp_path, capsys):
    """`sluice column-order EXPORT -o OUT`: the orders go into a complete copy at OUT (an
    earlier export there replaced), the export untouched; OUT that is the export, lies inside
    it or is some other folder is refused with one line and exit 2, nothing written."""
    import filecmp
    import json
    import shutil

    from sluice.cli import main

    _, out, _ = exported
    ex, dest = tmp_path / "ex", tmp_path / "ordered"
    shutil.copytree(out, ex)
    args = ["--rows", "4", "--cols", "4", "--calib", "8", "--iters", "200"]
    assert main(["column-order", str(ex), "-o", str(dest)] + args) == 0
    said = capsys.readouterr().out
    assert f"{dest / 'manifest.json'}: column orders for " in said and ".tmp" not in said
    assert filecmp.cmp(out / "manifest.json", ex / "manifest.json", shallow=False)
    assert "column_order_info" in json.loads((dest / "manifest.json").read_text())
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in ex.iterdir())
    net, plain = IntNet(dest), IntNet(ex)
    x = plain.layers[0][1].x
    assert np.array_equal(net.forward(x), plain.forward(x))
    assert main(["column-order", str(ex), "-o", str(dest), "--clear"] + args) == 0  # replaced
    assert "column_order_info" not in json.loads((dest / "manifest.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "ordered"]  # no leftovers
    before = (dest / "manifest.json").read_text()
    assert main(["column-order", str(ex), "-o", str(dest), "--calib", "0"]) == 2  # fit fails
    assert "--calib: 0 must be at least 1" in capsys.readouterr().err
    assert (dest / "manifest.json").read_text() == before  # the earlier copy stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "ordered"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for bad, why in ((ex, "the export itself"), (ex / "sub", "inside the export"),
                     (other, "exists and is not an export folder; not replaced")):
        assert main(["column-order", str(ex), "-o", str(bad)] + args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"-o {bad.resolve()}: {why}" in err
    assert (other / "keep.txt").read_text() == "mine" and not (ex / "sub").exists()
    assert main(["column-order", str(tmp_path / "none"), "-o", str(tmp_path / "o2")]) == 2
    assert "not an export folder (no manifest.json)" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_run_summary_names_the_column_order(exported, tmp_path, capsys):
    """A network run's totals line (`run-model`, `board run-model`) says which column order
    ran when the summary carries the manifest's `column_order_info`."""
    import shutil

    from sluice.cli import main
    from sluice.sim.model_run import print_summary

    _, out, _ = exported
    ex = tmp_path / "ex"
    shutil.copytree(out, ex)
    assert main(["column-order", str(ex), "--calib", "2", "--iters", "10"]) == 0
    s = dict(images=1, layers=20, sim="stand-in", run_s=1.0, speedup=2.0, reduction=3.0,
             efficiency=2 / 3, utilisation=0.9, bit_exact=True)
    (tmp_path / "layers.md").write_text("")
    for info in (None, IntNet(ex).manifest["column_order_info"]):
        capsys.readouterr()
        assert print_summary(dict(s, column_order=info), tmp_path) == 0
        said = "gated layers in the host column order fitted to the first 2 training images"
        assert (said in capsys.readouterr().out) == (info is not None)


def _export_arrays(d):
    from pathlib import Path
    return {(p.name, k): v for p in sorted(Path(d).glob("*.npz")) for k, v in np.load(p).items()}


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_embedded_export_is_the_same_on_any_machine(tmp_path, capsys):
    """The embedded default carries its calibration record (CKPT.calib.json): `sluice export`
    uses it, writes it back unchanged, and builds the same integer network with PyTorch's
    oneDNN convolutions switched off (other float kernels, as on another machine's CPU);
    other settings (--calib 500) are measured afresh and say so; a broken record beside a
    checkpoint stops the export with one line naming it."""
    import shutil

    from sluice.cli import main
    from sluice.model.checkpoint import DEFAULT_CHECKPOINT
    from sluice.model.quantize import calibration_path

    record = calibration_path(DEFAULT_CHECKPOINT)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["export", "default", "-o", str(a)]) == 0
    assert f"calibration from {record}" in capsys.readouterr().out
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["quantisation"]["ranges"] == f"recorded in {record}"
    assert (a / "calibration.json").read_text() == record.read_text()
    with torch.backends.mkldnn.flags(enabled=False):
        assert main(["export", "default", "-o", str(b)]) == 0
    want, got = _export_arrays(a), _export_arrays(b)
    assert want.keys() == got.keys() and len(want) > 100
    assert all(np.array_equal(want[k], got[k]) for k in want)
    assert main(["export", "default", "-o", str(b), "--calib", "500"]) == 0
    assert "calibration measured here" in capsys.readouterr().out
    assert json.loads((b / "calibration.json").read_text())["settings"]["calib"] == 500
    ck = tmp_path / "ck.pt"
    shutil.copy(DEFAULT_CHECKPOINT, ck)
    broken = json.loads(record.read_text())
    broken["ranges"]["layer3.0.conv1"] = "x"
    calibration_path(ck).write_text(json.dumps(broken))
    assert main(["export", str(ck), "-o", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"sluice export: error: {calibration_path(ck)}: field "
                   "'ranges.layer3.0.conv1' is 'x', expected a non-negative number (a range "
                   "per tensor of the network)")
    assert not (tmp_path / "c").exists()


def test_a_file_that_is_not_a_json_object_is_named(exported, tmp_path, capsys):
    """A manifest, eval report or calibration record holding a JSON list instead of an object:
    one line naming the file and its 'format' field, exit 2."""
    import shutil

    from sluice.cli import main

    _, out, _ = exported
    ex = tmp_path / "ex"
    shutil.copytree(out, ex)
    (ex / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SluiceError, match=r"manifest.json: field 'format' is 'list', expected "):
        IntNet(ex)
    report = tmp_path / "r.eval.json"
    report.write_text("[]")
    assert main(["eval", "--compare", str(report), "-o", str(tmp_path / "plot")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{report}: field 'format' is 'list', expected 'sluice.eval/1'"), err
