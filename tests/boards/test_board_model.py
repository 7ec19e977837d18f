"""`sluice board run-model`: a whole exported network on a board, layer by layer, each layer fed
with the board's own outputs, checked like `sluice run-model` on the RTL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sluice.boards.model_run import board_run_model
from sluice.errors import SluiceError
from sluice.hw.cycle_model import predict
from sluice.hw.params import HwParams
from sluice.model.intnet import IntNet
from sluice.model.layerfile import Result
from sluice.model.reference import run_reference

PARAMS = HwParams(rows=4, cols=4, skip_cols=2, act_depth=4096, wgt_depth=512, pix_depth=256)


class ReferenceBoard:
    """A stand-in for ``BoardRunner``: outputs from the integer reference, counters from the
    cycle model (which the RTL's equal); ``corrupt``: a layer whose first output it gets
    wrong, in its gated run."""

    runner_name = "reference-board"

    def __init__(self, params, corrupt=None):
        self.params, self.corrupt, self.calls = params, corrupt, []

    def run_layer(self, layer, *, dense=False):
        from sluice.sim.host import computed_rows

        self.calls.append((layer.name, dense))
        y, gate = run_reference(layer, dense=dense)
        skipped = ~computed_rows(layer, self.params, dense)  # (stacked images: no results)
        y[:, skipped], gate[:, skipped] = 0, 0
        if layer.name == self.corrupt and not dense:
            y = y.copy()
            y.flat[0] = y.flat[0] + 1 if y.flat[0] < 127 else 0
        pred = predict(layer, None if dense else gate, self.params, dense=dense)
        cycles = pred.pop("cycles")
        return Result(y=y, gate=gate, runner=self.runner_name, cycles=cycles,
                      rows=self.params.rows, cols=self.params.cols, counters=pred)


def test_the_network_chains_the_boards_outputs(tiny_export, tmp_path):
    """Every layer once gated and, when gated, once dense; the totals are the cycle model's
    over the integer network's own chain (the stand-in's outputs are the reference's), the
    logits the exporter's, the reports written."""
    from sluice.sim.model_run import bind_export, predict_network

    net = IntNet(tiny_export)
    board = ReferenceBoard(PARAMS)
    s = board_run_model(board, tiny_export, tmp_path / "run", progress=lambda t: None)
    assert s["bit_exact"] and s["logits_exact"], s["mismatches"]
    assert s["layers"] == len(net.layers) and s["sim"] == "reference-board"
    gated = [layer.name for _, layer in net.layers if layer.gated]
    assert gated and len(board.calls) == len(net.layers) + len(gated)
    assert [n for n, dense in board.calls if dense] == gated
    model = predict_network(bind_export(tiny_export), PARAMS)
    assert (s["cycles_gated"], s["cycles_dense"]) == (model["cycles_gated"],
                                                      model["cycles_dense"])
    assert s["efficiency"] == pytest.approx(model["efficiency"])
    assert (s["steps_gated"], s["steps_dense"]) == (s["model_steps_gated"],
                                                    s["model_steps_dense"])
    assert 0 < s["steps_gated"] < s["steps_dense"] < s["cycles_dense"]
    logits = net.forward(net.layers[0][1].x)
    assert s["predicted"] == int(np.argmax(net.logits(logits)))
    rows = (tmp_path / "run" / "layers.csv").read_text().splitlines()[1:]
    assert len(rows) == len(net.layers)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["layers"] == s["layers"]
    assert (tmp_path / "run" / "speedup.png").stat().st_size > 0


@pytest.mark.parametrize("stacking", [False, True])
def test_several_images(tiny_export, tmp_path, stacking, capsys):
    """``images=3``: the sample image and the two after it stacked, each checked on its own,
    the correct classes counted. A bitstream without the walker's jump (the boards' default)
    runs each image in jobs of its own: the cycles are the three images' each alone; one with
    it (``--stacking 1``), the throughput mode's (fewer)."""
    from dataclasses import replace

    from sluice.hw.commands import network_cycles
    from sluice.model.data import synthetic
    from sluice.sim.model_run import print_summary

    params = replace(PARAMS, stacking=stacking)
    s = board_run_model(ReferenceBoard(params), tiny_export, tmp_path / "run", images=3,
                        progress=lambda t: None)
    assert s["bit_exact"] and s["logits_exact"], s["mismatches"]
    assert s["images"] == 3 and len(s["predicted"]) == 3 and s["shared_jobs"] is stacking
    print_summary(s, tmp_path / "run")
    assert ("(3 images stacked)" if stacking else "(3 images, each in jobs of its own)") in \
        capsys.readouterr().out
    assert s["label"] == [int(v) for v in synthetic("test").labels[5:8]]
    assert s["correct"] == sum(p == lb for p, lb in zip(s["predicted"], s["label"]))
    model = network_cycles(tiny_export, params, images=3, stacked=stacking)
    assert (s["cycles_gated"], s["cycles_dense"]) == (model["cycles_gated"],
                                                      model["cycles_dense"])
    alone = network_cycles(tiny_export, params, images=3)
    assert (s["cycles_gated"] < alone["cycles_gated"]) if stacking else (
        s["cycles_gated"] == alone["cycles_gated"])
    with pytest.raises(SluiceError, match="--images: 0 must be at least 1"):
        board_run_model(ReferenceBoard(params), tiny_export, tmp_path / "x", images=0)


def test_a_wrong_output_is_found_and_carried_on(tiny_export, tmp_path):
    """A board output that differs from the reference: that layer is named, the run goes on
    with the board's outputs (so the logits differ too), the summary says not bit-exact."""
    net = IntNet(tiny_export)
    name = next(layer.name for _, layer in net.layers if layer.gated)
    s = board_run_model(ReferenceBoard(PARAMS, corrupt=name), tiny_export, tmp_path / "run",
                        progress=lambda t: None)
    assert not s["bit_exact"] and s["mismatches"][0] == name
    assert "MISMATCH" not in (tmp_path / "run" / "layers.md").read_text()
    assert "| NO |" in (tmp_path / "run" / "layers.md").read_text()


def test_a_dense_only_bitstream_runs_in_dense_mode(tiny_export, tmp_path):
    """A dense-only bitstream (runner params without gating): refused without --dense, naming
    it; with it every layer runs once, in dense mode, checked against the reference in dense
    mode, and the logits are reported, not checked."""
    board = ReferenceBoard(HwParams(**{**PARAMS.as_dict(), "gating": False}))
    with pytest.raises(SluiceError, match="--dense"):
        board_run_model(board, tiny_export, tmp_path / "x", progress=lambda t: None)
    s = board_run_model(board, tiny_export, tmp_path / "run", dense=True,
                        progress=lambda t: None)
    assert s["bit_exact"] and s["dense"] and "logits_exact" not in s
    assert all(dense for _, dense in board.calls)
    assert len(board.calls) == len(IntNet(tiny_export).layers)
    assert s["cycles_gated"] == s["cycles_dense"] and s["reduction"] == 1.0
    with pytest.raises(SluiceError, match="--layers"):
        board_run_model(board, tiny_export, tmp_path / "y", dense=True, limit=-1)


def _too_small_for(export):
    """PARAMS with a weight buffer one power of two short of the export's largest C_in*K*K,
    and the first layer that does not fit it."""
    layers = [layer for _, layer in IntNet(export).layers]
    need = max(layer.c_in * layer.kernel ** 2 for layer in layers)
    small = HwParams(**{**PARAMS.as_dict(), "wgt_depth": 1 << (need - 1).bit_length() - 1})
    assert small.wgt_depth < need <= PARAMS.wgt_depth
    first = next(n for n, layer in enumerate(layers)
                 if layer.c_in * layer.kernel ** 2 > small.wgt_depth)
    assert first > 0  # earlier layers would run: the check must come before them
    return small, layers[first].name


def test_a_layer_the_board_cannot_hold_is_refused_before_the_first_runs(tiny_export, tmp_path):
    """An export with a layer whose weights the bitstream's buffer cannot hold: refused
    naming that layer before any layer reaches the board (not after the ones before it)."""
    small, name = _too_small_for(tiny_export)
    board = ReferenceBoard(small)
    with pytest.raises(SluiceError, match=rf"{name}: C_in\*K\*K = \d+ exceeds the weight "
                                          rf"buffer \({small.wgt_depth} words\)"):
        board_run_model(board, tiny_export, tmp_path / "run", progress=lambda t: None)
    assert board.calls == []


def test_run_model_refuses_such_a_network_before_building(tiny_export, tmp_path, monkeypatch,
                                                          capsys):
    """`sluice run-model` on the RTL: the same check before the simulator is built (exit 2,
    the layer named)."""
    from sluice.cli import main
    from sluice.sim import runner

    small, name = _too_small_for(tiny_export)
    monkeypatch.setattr(runner, "RtlSim", lambda *a, **k: pytest.fail("built the simulator"))
    assert main(["run-model", str(tiny_export), "-o", str(tmp_path / "run"), "--rows", "4",
                 "--cols", "4", "--act-depth", str(small.act_depth), "--wgt-depth",
                 str(small.wgt_depth), "--pix-depth", str(small.pix_depth)]) == 2
    assert f"{name}: C_in*K*K" in capsys.readouterr().err


def test_the_command_line(tiny_export, tmp_path, monkeypatch, capsys):
    """`sluice board run-model` wired to the board (a stand-in behind the link here): the
    layer table and the totals printed, the link's frame count, exit 0; exit 1 and the layer
    named on a mismatch; exit 2 for a folder that is not an export."""
    from types import SimpleNamespace

    from sluice.boards import commands, host
    from sluice.cli import main

    board = {}
    link = SimpleNamespace(frames=7, retried=0, t=SimpleNamespace())
    monkeypatch.setattr(commands, "_open_link", lambda args, b, params: (link, "stand-in"))
    monkeypatch.setattr(host, "BoardRunner",
                        lambda link, params, runner_name: ReferenceBoard(PARAMS, **board))
    out = tmp_path / "run"
    assert main(["board", "run-model", str(tiny_export), "-o", str(out), "--port", "X"]) == 0
    text = capsys.readouterr().out
    assert "| **total** |" in text and "7 frames (0 retried)" in text
    assert "bit-exact against the integer model" in text and "serial link" in text
    assert "array steps (CYCLES - LOAD_CYCLES - STALL_CYCLES" in text
    assert "the cycle model's, exactly" in text
    assert main(["board", "run-model", str(tiny_export), "-o", str(out), "--port", "X",
                 "--images", "2"]) == 0
    text = capsys.readouterr().out  # (the stand-in's PARAMS carry the jump)
    assert "(2 images stacked)" in text and " of 2 correct" in text
    assert main(["board", "run-model", str(tiny_export), "--port", "X", "--images", "0"]) == 2
    assert "--images: 0 must be at least 1" in capsys.readouterr().err
    board["corrupt"] = IntNet(tiny_export).layers[1][1].name
    assert main(["board", "run-model", str(tiny_export), "-o", str(out), "--port", "X"]) == 1
    assert f"MISMATCH: {board['corrupt']}" in capsys.readouterr().out
    assert main(["board", "run-model", str(tmp_path / "none"), "--port", "X"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_run_model_on_the_simulated_board(tiny_export, tmp_path, capsys):
    """`sluice board run-model --simulate`: the tiny network's first layer through the host, a
    simulated UART, the bridge and the accelerator (ULX3S 12F defaults, 2 x 4), bit-exact; the
    board's CYCLES include the waits for the link, so more than the model's, but its steps
    (CYCLES - LOAD - STALL) are the model's (about 100 s)."""
    from sluice.cli import main

    out = tmp_path / "run"
    assert main(["board", "run-model", str(tiny_export), "-o", str(out), "--board", "ulx3s-12f",
                 "--simulate", "--layers", "1"]) == 0
    text = capsys.readouterr().out
    assert "bit-exact against the integer model" in text
    for line in (out / "layers.csv").read_text().splitlines()[1:]:
        f = line.split(",")
        assert int(f[3]) > int(f[9]) and int(f[4]) > int(f[10]), line
    # the link's waits land in LOAD_CYCLES and STALL_CYCLES: the steps are the array's own
    assert "the cycle model's, exactly" in text
