"""`sluice board run-layer --simulate`: a layer file through the host, a simulated UART, the
bridge and the real accelerator (Amaranth simulator), bit-exact against the integer reference."""

import numpy as np

from sluice.cli import main
from sluice.model.layerfile import read_result, write_layer
from sluice.model.randlayer import make_layer
from sluice.model.reference import run_reference


def test_gated_layer_end_to_end(tmp_path, capsys):
    # fits the iCEBreaker defaults (2x2 array, 256-byte activation buffer) in one job
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), kernel=3, padding=1, partitions=2,
                       gate_rate=0.4, seed=3, name="tiny")
    src, out = tmp_path / "tiny.layer.npz", tmp_path / "tiny.result.npz"
    write_layer(src, layer)
    # the gated bitstream (`sluice build --board icebreaker --gated`; the board's default
    # build is the dense-only one), built with instance options other than the board's: the
    # board commands take `sluice build`'s, and the simulated board is that instance
    opts = {"row_slices": 3, "post_cols": 1}
    assert main(["board", "run-layer", str(src), "-o", str(out), "--board", "icebreaker",
                 "--simulate", "--gated", "--row-slices", "3", "--post-cols", "1"]) == 0
    text = capsys.readouterr().out
    assert "matches y_ref and gate_ref" in text
    res = read_result(out)
    y, gate = run_reference(layer)
    assert np.array_equal(res.y, y) and np.array_equal(res.gate, gate)
    # the array's steps are the cycle model's, whatever the link's waits added to the cycles
    from sluice.boards.platforms import get_board
    from sluice.hw.cycle_model import predict
    board = get_board("icebreaker")
    steps = predict(layer, gate, board.params(**opts))["steps"]
    assert f"array steps {steps} (CYCLES - LOAD_CYCLES - STALL_CYCLES)" in text
    assert steps != predict(layer, gate, board.params())["steps"]  # (the sliced passes)
    assert res.cycles > steps
    assert 0 < gate.mean() < 1  # both gate outcomes exercised
    assert res.runner == "board-sim:icebreaker" and (res.rows, res.cols) == (2, 2)
    assert res.cycles > 0 and res.counters["macs_skipped"] > 0


def test_dense_only_bitstream_simulated_from_the_cli(tmp_path, capsys):
    """`--simulate --dense-only` runs the bitstream that fits the iCEBreaker (`sluice build
    --dense-only`, its default build, which `--simulate` alone runs too): a gated layer is
    refused with a message naming --dense, and with --dense it runs bit-exact in dense mode;
    without --simulate the flag is refused."""
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), kernel=3, padding=1, partitions=2,
                       gate_rate=0.4, seed=3, name="tiny")
    src, out = tmp_path / "tiny.layer.npz", tmp_path / "tiny.result.npz"
    write_layer(src, layer)
    base = ["board", "run-layer", str(src), "-o", str(out), "--board", "icebreaker"]
    assert main(base + ["--simulate", "--dense-only"]) == 2
    assert "--dense" in capsys.readouterr().err and not out.exists()
    # the iCEBreaker's default bitstream is that one: --simulate alone simulates it
    assert main(base + ["--simulate"]) == 2
    assert "--dense" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--simulate", "--dense-only", "--gated"]) == 2
    assert "--dense-only and --gated: pick one" in capsys.readouterr().err
    assert main(base + ["--simulate", "--dense-only", "--dense"]) == 0
    res = read_result(out)
    y, _ = run_reference(layer, dense=True)
    assert np.array_equal(res.y, y) and res.gate.all()
    assert res.counters["macs_skipped"] == 0
    assert main(base + ["--dense-only", "--port", "/dev/null"]) == 2
    assert "--dense-only: only with --simulate" in capsys.readouterr().err
    assert main(base + ["--gated", "--port", "/dev/null"]) == 2
    assert "--gated: only with --simulate" in capsys.readouterr().err


def test_run_layer_needs_a_port(tmp_path, capsys):
    layer = make_layer(c_in=2, c_out=2, size=(3, 3), partitions=1, dense=True, seed=1)
    src = tmp_path / "d.layer.npz"
    write_layer(src, layer)
    assert main(["board", "run-layer", str(src), "-o", str(tmp_path / "d.result.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sluice board run-layer: error: --port")  # the command as typed


def test_unknown_board_lists_known_ones(capsys):
    assert main(["build", "--board", "no-such-board"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'no-such-board'" in err and "icebreaker" in err and "ulx3s-85f" in err


def test_dense_only_board_is_detected_from_its_id(tmp_path):
    """A dense-only bitstream (ID bit 16 clear): the host adopts it, runs a gated layer in
    dense mode bit-exact, and refuses a gated run with a message naming --dense."""
    import dataclasses

    import pytest

    from sluice.boards.commands import SIM_DIVISOR
    from sluice.boards.host import BoardRunner, Link
    from sluice.boards.platforms import get_board
    from sluice.boards.simlink import SimTransport
    from sluice.boards.top import BoardTop
    from sluice.errors import SluiceError

    board = get_board("icebreaker")
    params = board.params()
    top = BoardTop(dataclasses.replace(params, gating=False), divisor=SIM_DIVISOR,
                   in_buf_bytes=board.in_buf_bytes, out_depth=board.out_depth)
    runner = BoardRunner(Link(SimTransport(top, divisor=SIM_DIVISOR)), params)
    assert not runner.params.gating
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), kernel=3, padding=1, partitions=2,
                       gate_rate=0.4, seed=3, name="tiny")
    with pytest.raises(SluiceError, match="--dense"):
        runner.run_layer(layer)
    res = runner.run_layer(layer, dense=True)
    y, _ = run_reference(layer, dense=True)
    assert np.array_equal(res.y, y) and res.gate.all()


def test_shared_narrow_copies_behind_the_uart(tmp_path):
    """A bitstream with shared 1-byte activation copies (`--act-share 2 --act-width 1`,
    one-column skip groups so a 2x2 array has two groups to share a copy): the host is the
    same (the stream format does not change), the stream held while a beat's words are written
    (four words of a 4-byte beat, two a cycle through the copies' two ports) is taken by the
    bridge, and a gated layer is bit-exact."""
    import dataclasses

    from sluice.boards.commands import SIM_DIVISOR
    from sluice.boards.host import BoardRunner, Link
    from sluice.boards.platforms import get_board
    from sluice.boards.simlink import SimTransport
    from sluice.boards.top import BoardTop

    board = get_board("icebreaker")
    params = dataclasses.replace(board.params(), skip_cols=1, act_share=2, act_width=1)
    assert params.act_shared and params.act_copies == 2 and params.act_pieces == 2
    assert params.act_write_ports == 2
    top = BoardTop(params, divisor=SIM_DIVISOR, in_buf_bytes=board.in_buf_bytes,
                   out_depth=board.out_depth)
    runner = BoardRunner(Link(SimTransport(top, divisor=SIM_DIVISOR)), params)
    layer = make_layer(c_in=4, c_out=4, size=(3, 3), kernel=3, padding=1, partitions=2,
                       gate_rate=0.4, seed=5, name="tiny")
    res = runner.run_layer(layer)
    y, gate = run_reference(layer)
    assert np.array_equal(res.y, y) and np.array_equal(res.gate, gate)
    assert 0 < gate.mean() < 1
