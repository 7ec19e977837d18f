"""The ECP5 PLL for a design clock above the oscillator (`sluice build --clock-mhz`)."""

import dataclasses
from pathlib import Path

import pytest

from sluice.boards import build as b
from sluice.boards.platforms import get_board
from sluice.boards.pll import PFD_HZ, VCO_HZ, ecp5_pll
from sluice.errors import SluiceError

# Project Trellis's `ecppll -i 25 -o F` (v1.4): CLKI_DIV, CLKFB_DIV, CLKOP_DIV
ECPPLL_25MHZ = {50: (1, 2, 12), 60: (5, 12, 10), 65: (5, 13, 9), 75: (1, 3, 8),
                90: (5, 18, 7), 100: (1, 4, 6), 120: (5, 24, 5)}


@pytest.mark.parametrize("mhz", sorted(ECPPLL_25MHZ))
def test_dividers_match_ecppll(mhz):
    c = ecp5_pll(25e6, mhz * 1e6)
    assert (c.clki_div, c.clkfb_div, c.clkop_div) == ECPPLL_25MHZ[mhz]
    assert c.fout_hz == mhz * 1_000_000


def test_every_reachable_clock_is_exact_and_in_range():
    made = set()
    for mhz in range(10, 201):
        try:
            c = ecp5_pll(25e6, mhz * 1e6)
        except SluiceError as e:
            assert f"{mhz} MHz is not reachable exactly" in str(e) and "nearest" in str(e)
            continue
        made.add(mhz)
        assert c.fout_hz == mhz * 1_000_000
        assert PFD_HZ[0] <= 25_000_000 / c.clki_div <= PFD_HZ[1]
        assert VCO_HZ[0] <= c.vco_hz <= VCO_HZ[1]
    # 25 MHz * CLKFB_DIV / CLKI_DIV with the PFD at 3.125 MHz or more: every multiple of 5 MHz
    assert set(range(10, 201, 5)) <= made


def test_unreachable_clock_names_the_nearest():
    with pytest.raises(SluiceError, match=r"--clock-mhz: 48 MHz is not reachable exactly from "
                                          r"the 25 MHz oscillator.*nearest is 46.875 MHz"):
        ecp5_pll(25e6, 48e6)


def test_uart_rate_from_the_design_clock():
    ulx3s = get_board("ulx3s-85f")
    assert ulx3s.pll_baud(60e6) == 3_000_000  # 20 clocks per bit
    assert ulx3s.pll_baud(50e6) == 2_000_000
    assert ulx3s.pll_baud(25e6) == ulx3s.baud == 1_000_000  # the oscillator's rate
    assert get_board("icebreaker").pll_baud(12e6) == 3_000_000


def _plan(pll):
    from sluice.boards.loopback import LoopbackAccelerator
    from sluice.boards.top import BoardTop

    board = get_board("ulx3s-85f")
    params = board.params(2, 2)
    top = BoardTop(params, divisor=20, pll=pll, accelerator=LoopbackAccelerator(params))
    return board.make_platform().prepare(top, name="t").files


def test_board_top_runs_from_the_pll():
    files = _plan(ecp5_pll(25e6, 60e6))
    il, lpf = files["t.il"], files["t.lpf"]
    assert "cell \\EHXPLLL" in il
    for name, value in (("CLKI_DIV", 5), ("CLKFB_DIV", 12), ("CLKOP_DIV", 10)):
        assert f"parameter \\{name} {value}" in il
    assert '"CLKOP"' in il  # feedback from CLKOP
    # nextpnr derives the PLL output's constraint from the oscillator's and the dividers
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ' in lpf
    plain = _plan(None)
    assert "EHXPLLL" not in plain["t.il"] and "60000000.0 HZ" not in plain["t.lpf"]


@pytest.mark.parametrize("board_name, pins", [
    ("ulx3s-85f", ('"uart_0__rx__io" SITE "M1"', '"uart_0__tx__io" SITE "L4"',
                   '"uart_tx_enable_0__io" SITE "L3"', '"led_0__io" SITE "B2"')),
    ("icebreaker", ("uart_0__rx__io 6", "uart_0__tx__io 9", "led_0__io 11")),
])
def test_board_top_pins_through_io_buffers(board_name, pins):
    """The UART, its enable and the LEDs are requested with ``dir="-"`` and explicit I/O
    buffers (a request with a direction is deprecated in Amaranth 0.5): no warning, same pins."""
    import warnings

    from sluice.boards.loopback import LoopbackAccelerator
    from sluice.boards.top import BoardTop

    board = get_board(board_name)
    params = board.params(2, 2)
    top = BoardTop(params, divisor=4, accelerator=LoopbackAccelerator(params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = board.make_platform().prepare(top, name="t").files
    constraints = files["t.lpf" if board.family == "ecp5" else "t.pcf"]
    for pin in pins:
        assert pin in constraints


def test_clock_option_is_checked_before_the_toolchain(monkeypatch):
    monkeypatch.setattr(b, "toolchain_env", lambda family: pytest.fail("got past the check"))
    with pytest.raises(SluiceError, match="--clock-mhz: the PLL is built for ECP5 boards only; "
                                          "icebreaker is ice40"):
        b.build("icebreaker", clock_mhz=24)
    with pytest.raises(SluiceError, match="--outreg: the pass moves registers into ECP5 block "
                                          "RAMs; icebreaker is ice40"):
        b.build("icebreaker", outreg=True)
    with pytest.raises(SluiceError, match="--clock-mhz: 48 MHz is not reachable"):
        b.build("ulx3s-85f", clock_mhz=48)
    with pytest.raises(SluiceError, match="--clock-mhz: -5 is outside"):
        b.build("ulx3s-85f", clock_mhz=-5)


def test_build_name_carries_the_clock():
    board = get_board("ulx3s-85f")
    p = board.params(4, 4)
    assert b.build_name(board, p) == "sluice_ulx3s_85f_4x4"
    assert b.build_name(board, p, clock_mhz=60) == "sluice_ulx3s_85f_4x4_60mhz"
    assert b.build_name(board, p, dense_only=True, clock_mhz=62.5) == \
        "sluice_ulx3s_85f_4x4_dense_62.5mhz"
    # the element multipliers in logic: a build of its own (and its own gating-cost pair)
    assert b.build_name(board, board.params(4, 8, pe_mult="logic")) == \
        "sluice_ulx3s_85f_4x8_logicpe"
    # skip groups other than the board's choice for the array, and shared post-processing
    assert b.build_name(board, board.params(8, 8, skip_cols=4, post_cols=2)) == \
        "sluice_ulx3s_85f_8x8_post2_skip4"
    assert b.build_name(board, board.params(3, 3)) == "sluice_ulx3s_85f_3x3"  # skip 1 by choice
    # a dense-only build has no skip groups: one name for every --skip-cols, so it pairs with
    # the gated build of the same array and post-processing (its params have skip_cols = cols)
    dense = dataclasses.replace(board.params(4, 8, post_cols=4), gating=False)
    assert dense.skip_cols == 8
    assert b.build_name(board, dense, dense_only=True) == "sluice_ulx3s_85f_4x8_dense_post4"
    assert b.build_name(board, board.params(4, 8, skip_cols=4), dense_only=True) == \
        "sluice_ulx3s_85f_4x8_dense"
    # shared activation copies (gated builds only) and narrow words (both builds of the pair)
    shared = board.params(4, 8, post_cols=4, act_share=2, act_width=2)
    assert b.build_name(board, shared) == "sluice_ulx3s_85f_4x8_post4_share2_aw2"
    assert b.build_name(board, shared, dense_only=True) == "sluice_ulx3s_85f_4x8_dense_post4_aw2"
    assert b.build_name(board, board.params(4, 8, skip_cols=8, act_share=2)) == \
        "sluice_ulx3s_85f_4x8_skip8"  # one skip group per row: nothing to share
    # row slices other than the board's choice (gated builds only)
    assert b.build_name(board, board.params(4, 4, row_slices=1)) == "sluice_ulx3s_85f_4x4_slices1"
    assert b.build_name(board, board.params(4, 4, row_slices=1), dense_only=True) == \
        "sluice_ulx3s_85f_4x4_dense"
    # two feed registers: both builds of the pair
    f2 = board.params(8, 8, post_cols=4, act_share=2, act_width=8, feed_regs=2)
    assert b.build_name(board, f2, clock_mhz=100) == \
        "sluice_ulx3s_85f_8x8_post4_share2_aw8_feed2_100mhz"
    assert b.build_name(board, dataclasses.replace(f2, gating=False), dense_only=True) == \
        "sluice_ulx3s_85f_8x8_dense_post4_aw8_feed2"
    # buffer depths other than the board's: both builds of the pair, in the order act, wgt, pix
    deep = board.params(8, 8, post_cols=2, act_width=8, act_depth=16384, wgt_depth=4096)
    assert b.build_name(board, deep) == "sluice_ulx3s_85f_8x8_post2_aw8_act16384_wgt4096"
    assert b.build_name(board, dataclasses.replace(deep, gating=False), dense_only=True) == \
        "sluice_ulx3s_85f_8x8_dense_post2_aw8_act16384_wgt4096"
    assert b.build_name(board, board.params(4, 4, act_depth=board.act_depth)) == \
        "sluice_ulx3s_85f_4x4"  # the board's own depth, given: the same build
    ice = get_board("icebreaker")
    assert ice.params().row_slices == 1
    assert b.build_name(ice, ice.params(row_slices=2)) == "sluice_icebreaker_2x2_post2_slices2"


def _fake_tools(monkeypatch, fmax_line, timing_json=None):
    """The build without yosys/nextpnr: the 'script' writes a nextpnr log with ``fmax_line``
    (and, given ``timing_json``, that text as nextpnr's JSON timing report)."""
    import subprocess

    monkeypatch.setattr(b, "toolchain_env", lambda family: {})

    def run(cmd, cwd, **kw):
        from pathlib import Path

        name = Path(cwd).name
        (Path(cwd) / f"{name}.tim").write_text(
            "Info: Device utilisation:\nInfo: \t TRELLIS_COMB:  1000/ 83640     1%\n"
            "Info: \t EHXPLLL:  1/  4    25%\nInfo: \n" + fmax_line + "\n")
        if timing_json is not None:
            (Path(cwd) / f"{name}.timing.json").write_text(timing_json)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(b.subprocess, "run", run)


def test_build_with_the_pll_reports_clock_and_baud(monkeypatch, tmp_path):
    import json

    _fake_tools(monkeypatch, "Info: Max frequency for clock '$glbnet$pll.clk': 61.20 MHz "
                             "(PASS at 60.00 MHz)")
    rep = b.build("ulx3s-85f", loopback=True, clock_mhz=60, out_root=tmp_path, nice=0,
                  log=lambda t: None)
    assert rep["name"] == "sluice_ulx3s_85f_4x4_loopback_60mhz"
    assert (rep["baud"], rep["divisor"], rep["clk_mhz"], rep["osc_mhz"]) == (3_000_000, 20, 60,
                                                                           25)
    assert (rep["pll"]["clki_div"], rep["pll"]["clkfb_div"], rep["pll"]["clkop_div"]) == \
        (5, 12, 10)
    assert rep["timing_met"] and rep["command"].endswith("--clock-mhz 60")
    # the array options given are in the command that rebuilds it, the depths too
    rep = b.build("ulx3s-85f", rows=8, cols=8, post_cols=2, act_depth=4096, pix_depth=1024,
                  clock_mhz=60, out_root=tmp_path, nice=0, log=lambda t: None)
    assert rep["name"] == "sluice_ulx3s_85f_8x8_post2_act4096_pix1024_60mhz"
    assert rep["command"] == ("sluice build --board ulx3s-85f --rows 8 --cols 8 --post-cols 2 "
                              "--act-depth 4096 --pix-depth 1024 --clock-mhz 60")
    assert (rep["params"]["act_depth"], rep["params"]["wgt_depth"], rep["params"]["pix_depth"]) \
        == (4096, 2048, 1024)
    on_disk = json.loads((tmp_path / rep["name"] / f"{rep['name']}.report.json").read_text())
    assert on_disk["timing_met"] and on_disk["pll"]["vco_mhz"] == 600
    md = (tmp_path / rep["name"] / f"{rep['name']}.report.md").read_text()
    assert "- design clock: 60 MHz from the 25 MHz oscillator by the PLL (CLKI_DIV 5" in md
    assert "- timing: met" in md and "3000000 baud (20 clocks per bit at 60 MHz)" in md


def test_build_that_misses_its_clock_fails_after_the_reports(monkeypatch, tmp_path):
    import json

    from sluice.errors import RunFailed

    # (with nextpnr's timing report: an excerpt of a real 8 x 8 build's, its own 100 MHz clock)
    timing = (Path(__file__).parent / "data" / "ulx3s_85f_8x8.timing-excerpt.json").read_text()
    _fake_tools(monkeypatch, "Info: Max frequency for clock '$glbnet$pll.clk': 55.00 MHz "
                             "(FAIL at 60.00 MHz)", timing)
    monkeypatch.setattr(b, "program_board", lambda *a, **k: pytest.fail("programmed anyway"))
    monkeypatch.setattr(b, "programmer_path", lambda: "openFPGALoader")
    with pytest.raises(RunFailed, match=r"timing not met \(clock \$glbnet\$pll.clk: 55.0 MHz, "
                                        r"needs 60; 10 register inputs over the period, the "
                                        r"worst into acc.post_0.residual_N \(11.60 ns\)\).*"
                                        r"do not flash.*lower --clock-mhz"):
        b.build("ulx3s-85f", loopback=True, clock_mhz=60, out_root=tmp_path, nice=0,
                program=True, log=lambda t: None)
    (report,) = tmp_path.glob("*/*.report.json")
    assert json.loads(report.read_text())["timing_met"] is False


def test_extra_nextpnr_args_reach_the_script_and_the_report(monkeypatch, tmp_path):
    _fake_tools(monkeypatch, "Info: Max frequency for clock '$glbnet$clk': 90.00 MHz "
                             "(PASS at 25.00 MHz)")
    rep = b.build("ulx3s-85f", loopback=True, out_root=tmp_path, nice=0, log=lambda t: None,
                  nextpnr_args="--placer-heap-beta 0.6")
    script = (tmp_path / rep["name"] / f"build_{rep['name']}.sh").read_text()
    assert (f"--router router1 --report {rep['name']}.timing.json --detailed-timing-report "
            "--placer-heap-beta 0.6") in script
    assert rep["command"].endswith("--nextpnr-args '--placer-heap-beta 0.6'")
    with pytest.raises(SluiceError, match="--nextpnr-args: No closing quotation"):
        b.build("ulx3s-85f", nextpnr_args="--foo 'bar")


def test_pll_builds_weigh_timing_in_placement(monkeypatch, tmp_path):
    _fake_tools(monkeypatch, "Info: Max frequency for clock '$glbnet$pll.clk': 61.20 MHz "
                             "(PASS at 60.00 MHz)")
    rep = b.build("ulx3s-85f", loopback=True, clock_mhz=60, out_root=tmp_path, nice=0,
                  log=lambda t: None)
    script = (tmp_path / rep["name"] / f"build_{rep['name']}.sh").read_text()
    assert f"--placer-heap-timingweight {b.PLL_TIMING_WEIGHT}" in script
    # an explicit weight replaces it; the oscillator's clock keeps nextpnr's default
    rep = b.build("ulx3s-85f", loopback=True, clock_mhz=60, out_root=tmp_path / "own", nice=0,
                  log=lambda t: None, nextpnr_args="--placer-heap-timingweight 20")
    script = (tmp_path / "own" / rep["name"] / f"build_{rep['name']}.sh").read_text()
    assert script.count("--placer-heap-timingweight") == 1 and "timingweight 20" in script
    rep = b.build("ulx3s-85f", loopback=True, out_root=tmp_path / "osc", nice=0,
                  log=lambda t: None)
    script = (tmp_path / "osc" / rep["name"] / f"build_{rep['name']}.sh").read_text()
    assert "--placer-heap-timingweight" not in script
